//! A self-signed certificate for 127.0.0.1, made with the `openssl` CLI,
//! for proxies that must speak HTTPS (pgBackRest's S3 driver refuses plain
//! HTTP; it is told not to verify the certificate).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

pub struct Certificate {
    config: Arc<ServerConfig>,
}

impl Certificate {
    /// Generates a key and a certificate for IP 127.0.0.1 in `dir`.
    pub fn self_signed(dir: &Path) -> Certificate {
        let (key, cert) = (dir.join("proxy-key.pem"), dir.join("proxy-cert.pem"));
        let status = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("running openssl");
        assert!(status.success(), "openssl could not make a certificate");
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
            .expect("reading the certificate")
            .collect::<Result<_, _>>()
            .expect("parsing the certificate");
        let key = PrivateKeyDer::from_pem_file(&key).expect("reading the key");
        let config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("a usable certificate");
        Certificate {
            config: Arc::new(config),
        }
    }

    pub(super) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.config))
    }
}
