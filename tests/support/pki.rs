//! Test certificates, made fresh for each test run with rcgen: a CA, the
//! proxy's server certificate for 127.0.0.1, a client certificate with
//! subject `CN=client` from that CA, one with the same subject from a rogue
//! CA, and two self-signed client certificates.
use std::path::PathBuf;
use std::sync::OnceLock;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// A certificate with its key, as PEM files on disk.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Issued {
    /// Certificate and key in one PEM, as reqwest's `Identity::from_pem` wants.
    pub fn identity(&self) -> reqwest::Identity {
        reqwest::Identity::from_pem(format!("{}{}", self.cert_pem, self.key_pem).as_bytes())
            .expect("identity")
    }
}

#[derive(Debug)]
pub struct TestPki {
    pub dir: PathBuf,
    pub ca_path: PathBuf,
    pub ca_pem: String,
    pub server: Issued,
    /// `CN=client`, issued by the CA.
    pub client: Issued,
    /// `CN=client` too, but issued by a CA nobody trusts.
    pub rogue: Issued,
    pub self_signed: Issued,
    pub other_self_signed: Issued,
}

fn save(dir: &std::path::Path, name: &str, cert: &Certificate, key: &KeyPair) -> Issued {
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
        cert_path,
        key_path,
    }
}

fn ca(name: &str) -> (Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    (params.self_signed(&key).unwrap(), key)
}

fn client_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

impl TestPki {
    /// One set of certificates per test process.
    pub fn shared() -> &'static TestPki {
        static PKI: OnceLock<TestPki> = OnceLock::new();
        PKI.get_or_init(TestPki::generate)
    }

    fn generate() -> Self {
        let dir = std::env::temp_dir().join(format!("ciba-pki-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_cert, ca_key) = ca("ciba-proxy test CA");
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();

        let server_key = KeyPair::generate().unwrap();
        let server_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let server = server_params
            .signed_by(&server_key, &ca_cert, &ca_key)
            .unwrap();

        let client_key = KeyPair::generate().unwrap();
        let client = client_params("client")
            .signed_by(&client_key, &ca_cert, &ca_key)
            .unwrap();

        let (rogue_ca, rogue_ca_key) = ca("rogue CA");
        let rogue_key = KeyPair::generate().unwrap();
        let rogue = client_params("client")
            .signed_by(&rogue_key, &rogue_ca, &rogue_ca_key)
            .unwrap();

        let self_key = KeyPair::generate().unwrap();
        let self_signed = client_params("kiosk").self_signed(&self_key).unwrap();
        let other_key = KeyPair::generate().unwrap();
        let other_self_signed = client_params("kiosk").self_signed(&other_key).unwrap();

        Self {
            ca_pem: ca_cert.pem(),
            server: save(&dir, "server", &server, &server_key),
            client: save(&dir, "client", &client, &client_key),
            rogue: save(&dir, "rogue", &rogue, &rogue_key),
            self_signed: save(&dir, "self-signed", &self_signed, &self_key),
            other_self_signed: save(&dir, "other-self-signed", &other_self_signed, &other_key),
            ca_path,
            dir,
        }
    }

    /// A JWKS whose one key carries `cert` as its `x5c` (RFC 8705 §2.2).
    pub fn x5c_jwks(cert: &Issued) -> String {
        use base64::Engine;
        let x5c = base64::engine::general_purpose::STANDARD.encode(&cert.der);
        // The key parameters only need to be well-formed here; the
        // certificate is what self-signed client authentication compares.
        format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","use":"sig","x5c":["{x5c}"]}}]}}"#
        )
    }

    pub fn ca_certificate(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA")
    }
}
