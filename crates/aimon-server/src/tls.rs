//! TLS for `aimon serve`: rustls with the ring provider, as the rest of aimon.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// A rustls server configuration from the PEM files of `tls`, offering HTTP/2 and HTTP/1.1.
/// Errors name the file, never its content.
pub fn server_config(tls: &TlsConfig) -> aimon::Result<Arc<rustls::ServerConfig>> {
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            aimon::Error::config(format!("TLS certificate {}: {e}", tls.cert.display()))
        })?;
    if certs.is_empty() {
        return Err(aimon::Error::config(format!(
            "TLS certificate {} holds no certificate",
            tls.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| aimon::Error::config(format!("TLS key {}: {e}", tls.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| aimon::Error::config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| aimon::Error::config(format!("TLS certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
