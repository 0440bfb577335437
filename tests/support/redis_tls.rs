//! A real Redis that speaks only TLS (`--tls-port`, `--port 0`), with the
//! test PKI's server certificate for 127.0.0.1 (see [`crate::pki`]), and a
//! variant that requires a client certificate from the test CA.
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use crate::pki::TestPki;
use crate::redis_process::{free_port, temp_dir, wait_until, Process};

pub struct RedisTls {
    server: Process,
    dir: PathBuf,
}

impl RedisTls {
    /// A TLS Redis that accepts any client (`--tls-auth-clients no`).
    pub fn shared() -> &'static RedisTls {
        static SERVER: OnceLock<RedisTls> = OnceLock::new();
        SERVER.get_or_init(|| RedisTls::start(false).expect("start the TLS Redis"))
    }

    /// A TLS Redis that requires a client certificate from the test CA.
    pub fn shared_with_client_certs() -> &'static RedisTls {
        static SERVER: OnceLock<RedisTls> = OnceLock::new();
        SERVER.get_or_init(|| RedisTls::start(true).expect("start the mTLS Redis"))
    }

    fn start(client_certs: bool) -> anyhow::Result<RedisTls> {
        let pki = TestPki::shared();
        let dir = temp_dir("redis-tls");
        let port = free_port()?;
        let args: Vec<String> = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            &pki.server.cert_path.display().to_string(),
            "--tls-key-file",
            &pki.server.key_path.display().to_string(),
            "--tls-ca-cert-file",
            &pki.ca_path.display().to_string(),
            "--tls-auth-clients",
            if client_certs { "yes" } else { "no" },
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let server = Process::spawn(&dir, port, &args)?;
        // Ready once it accepts TCP; the handshake is the tests' business.
        wait_until("the TLS Redis listens", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        Ok(RedisTls { server, dir })
    }

    /// `rediss://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.server.port)
    }
}

impl Drop for RedisTls {
    fn drop(&mut self) {
        self.server.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
