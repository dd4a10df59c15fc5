//! How an instance reaches the others at `https://` internal URLs, to pass a visit's signalling
//! on to the instance hosting its call (`super::signal_relay`).

use std::sync::Arc;

/// How this instance reaches the others over TLS (`https://` internal URLs): the roots it
/// trusts and the name their certificate must carry.
pub struct RelayTls {
    pub connector: tokio_rustls::TlsConnector,
    pub name: rustls_pki_types::ServerName<'static>,
}

/// The TLS settings for reaching other instances at `https://` internal URLs: the system's
/// roots and the certificates of this instance's own chain (`http.tls.cert`: every instance
/// serves the same certificate, which may come from the clinic's own authority), and the name
/// they are checked against (`http.public_url`'s host, the name that certificate carries, or
/// else the internal URL's).
pub fn relay_tls(cert_chain: &std::path::Path, name: &str) -> Result<Arc<RelayTls>, String> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    let own = rustls_pki_types::CertificateDer::pem_file_iter(cert_chain)
        .map_err(|e| format!("{}: {e}", cert_chain.display()))?;
    for c in own.flatten() {
        let _ = roots.add(c);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(name.to_owned())
        .map_err(|e| format!("{name:?}: {e}"))?;
    Ok(Arc::new(RelayTls {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        name,
    }))
}
