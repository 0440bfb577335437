//! TLS termination and RFC 8705 client certificates. The server asks every
//! client for a certificate but requires none, so secret-based clients still
//! connect; whether a certificate authenticates a client is decided per
//! client at authentication time ([`crate::client_auth`]). Behind a
//! TLS-terminating balancer the certificate comes from a header, believed
//! only from the configured trusted proxies.
use std::net::IpAddr;
use std::sync::Arc;

use actix_web::dev::Extensions;
use actix_web::HttpRequest;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

use crate::configuration::{ConfigError, MtlsSettings, TlsSettings};

/// The certificate the client presented in the TLS handshake (DER).
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Vec<u8>);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls configuration for `[server.tls]`: TLS 1.2 and 1.3 only.
pub fn server_config(settings: &TlsSettings) -> Result<ServerConfig, ConfigError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&settings.certificate)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| ConfigError::new("server.tls.certificate", e.to_string()))?;
    if chain.is_empty() {
        return Err(ConfigError::new(
            "server.tls.certificate",
            "holds no certificate",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&settings.private_key)
        .map_err(|e| ConfigError::new("server.tls.private_key", e.to_string()))?;
    let provider = provider();
    ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConfigError::new("server.tls", e.to_string()))?
        .with_client_cert_verifier(Arc::new(RequestAnyCertificate { provider }))
        .with_single_cert(chain, key)
        .map_err(|e| ConfigError::new("server.tls.private_key", e.to_string()))
}

/// Keeps the handshake's client certificate with the connection.
pub fn remember_peer_certificate(connection: &dyn std::any::Any, data: &mut Extensions) {
    use actix_tls::accept::rustls_0_23::TlsStream;
    if let Some(tls) = connection.downcast_ref::<TlsStream<actix_web::rt::net::TcpStream>>() {
        let (_, session) = tls.get_ref();
        if let Some(leaf) = session.peer_certificates().and_then(|certs| certs.first()) {
            data.insert(PeerCertificate(leaf.to_vec()));
        }
    }
}

/// Asks for a client certificate, requires none, and checks only that the
/// client holds its key; chains and subjects are checked per client.
#[derive(Debug)]
struct RequestAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for RequestAnyCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Where client certificates come from and which CA issues them.
pub struct Mtls {
    /// Whether we terminate TLS ourselves.
    tls: bool,
    ca: Option<Arc<dyn ClientCertVerifier>>,
    trusted_proxies: Vec<IpAddr>,
    header: String,
}

impl Mtls {
    /// `tls`: whether `[server.tls]` is configured.
    pub fn from_settings(settings: &MtlsSettings, tls: bool) -> Result<Self, ConfigError> {
        let ca = match &settings.ca {
            None => None,
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(path)
                    .map_err(|e| ConfigError::new("mtls.ca", e.to_string()))?
                {
                    let cert = cert.map_err(|e| ConfigError::new("mtls.ca", e.to_string()))?;
                    roots
                        .add(cert)
                        .map_err(|e| ConfigError::new("mtls.ca", e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(ConfigError::new("mtls.ca", "holds no certificate"));
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| ConfigError::new("mtls.ca", e.to_string()))?;
                Some(verifier)
            }
        };
        Ok(Self {
            tls,
            ca,
            trusted_proxies: settings.trusted_proxies.clone(),
            header: settings.certificate_header.clone(),
        })
    }

    pub fn has_ca(&self) -> bool {
        self.ca.is_some()
    }

    /// Whether a client certificate can reach us at all: our own TLS, or a
    /// trusted proxy's header.
    pub fn sees_certificates(&self) -> bool {
        self.tls || !self.trusted_proxies.is_empty()
    }

    /// The client certificate of this request: from our own TLS handshake,
    /// or from the header when the peer is a trusted proxy.
    pub fn certificate(&self, req: &HttpRequest) -> Option<Vec<u8>> {
        if let Some(PeerCertificate(der)) = req.conn_data::<PeerCertificate>() {
            return Some(der.clone());
        }
        let peer = req.peer_addr()?.ip();
        if !self.trusted_proxies.contains(&peer) {
            return None;
        }
        // Percent-encoded PEM (nginx `$ssl_client_escaped_cert`); a `+` is base64.
        let value = req.headers().get(self.header.as_str())?.to_str().ok()?;
        let pem: Vec<u8> = percent_encoding::percent_decode_str(value).collect();
        CertificateDer::from_pem_slice(&pem)
            .ok()
            .map(|c| c.to_vec())
    }

    /// RFC 8705 §2.1.1: the certificate chains to the configured CA.
    pub fn issued_by_ca(&self, der: &[u8]) -> bool {
        let Some(ca) = &self.ca else {
            return false;
        };
        ca.verify_client_cert(&CertificateDer::from(der), &[], UnixTime::now())
            .is_ok()
    }
}

/// The certificate's subject as a set of `TYPE=value` parts, so DNs match
/// whatever their order (RFC 4514 strings list the RDNs in reverse).
pub fn subject_parts(der: &[u8]) -> Option<Vec<String>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(normalize_dn(&cert.subject().to_string()))
}

/// `"CN=client, O=Bank"` → `["CN=client", "O=Bank"]`, sorted, types upper-cased.
pub fn normalize_dn(dn: &str) -> Vec<String> {
    let mut parts: Vec<String> = dn
        .split([',', '+'])
        .filter_map(|part| {
            let (kind, value) = part.split_once('=')?;
            Some(format!(
                "{}={}",
                kind.trim().to_ascii_uppercase(),
                value.trim()
            ))
        })
        .collect();
    parts.sort();
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinguished_names_match_in_any_order_and_spacing() {
        assert_eq!(normalize_dn("CN=client"), normalize_dn(" cn = client "));
        assert_eq!(
            normalize_dn("CN=client,O=Bank,C=DE"),
            normalize_dn("C=DE, O=Bank, CN=client")
        );
        assert_ne!(normalize_dn("CN=client"), normalize_dn("CN=client2"));
    }
}
