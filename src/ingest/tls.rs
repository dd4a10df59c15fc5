//! TLS for the device endpoint (MQTTS), through rustls with the aws-lc-rs provider only.
//!
//! With `client_ca` configured, devices may authenticate with a client certificate issued by
//! that CA instead of a password: the certificate's subject common name (CN) is the device id.
//! Devices without a certificate still connect and give their id and secret.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_rustls::TlsAcceptor;
use x509_cert::der::Decode;

use crate::tls_reload::ReloadingCert;
/// Re-exported: the error lives with the certificate loader, which the acceptor builds on.
pub use crate::tls_reload::TlsError;

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Read {
        key,
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// Builds the acceptor from PEM files: the server's certificate chain and key (reloaded when
/// the files change: [`crate::tls_reload`]), and optionally the CA whose certificates identify
/// devices. TLS 1.2 and 1.3 only. The reloader is returned for its watcher.
pub fn acceptor(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<(TlsAcceptor, Arc<ReloadingCert>), TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = ReloadingCert::load("mqtt.tls", cert, key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            key: "mqtt.tls",
            reason: e.to_string(),
        })?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs("mqtt.tls.client_ca", ca)? {
                roots.add(c).map_err(|e| TlsError::Invalid {
                    key: "mqtt.tls.client_ca",
                    reason: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                // Devices without a certificate may still use their id and secret.
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Invalid {
                    key: "mqtt.tls.client_ca",
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_cert_resolver(certs.clone());
    Ok((TlsAcceptor::from(Arc::new(config)), certs))
}

/// The acceptor of the HTTPS listener (`[http.tls]`): TLS 1.2 and 1.3, HTTP/1.1, the
/// certificate reloaded when its files change.
pub fn https_acceptor(
    cert: &Path,
    key: &Path,
) -> Result<(TlsAcceptor, Arc<ReloadingCert>), TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = ReloadingCert::load("http.tls", cert, key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            key: "http.tls",
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(certs.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), certs))
}

/// The subject common name of a verified client certificate (the device id it claims).
pub fn peer_common_name(conn: &rustls::ServerConnection) -> Option<String> {
    let leaf = conn.peer_certificates()?.first()?;
    let cert = x509_cert::Certificate::from_der(leaf.as_ref()).ok()?;
    let cn = cert.tbs_certificate().subject().common_name().ok()??;
    Some(String::from(cn))
}
