//! Server certificates that are reloaded without a restart: a renewed certificate and key
//! (Let's Encrypt, the clinic's own CA) written over the configured files are picked up by the
//! next handshake. The files are checked every [`CHECK_EVERY`] and on SIGHUP; a pair that does
//! not load (half-written, a key that does not match) is refused with a log line and the
//! previous certificate stays in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// Why the TLS settings could not be used; names the config key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read {path}: {reason}")]
    Read {
        key: &'static str,
        path: String,
        reason: String,
    },
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// How often the files are looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

/// A certificate and key read from PEM files, kept current.
#[derive(Debug)]
pub struct ReloadingCert {
    /// The config key, for messages (`mqtt.tls`, `http.tls`).
    key_name: &'static str,
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Stamp)>,
}

/// The files' modification times and sizes when last loaded.
type Stamp = Option<(SystemTime, u64, SystemTime, u64)>;

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let c = std::fs::metadata(cert).ok()?;
    let k = std::fs::metadata(key).ok()?;
    Some((c.modified().ok()?, c.len(), k.modified().ok()?, k.len()))
}

/// Reads and checks a certificate chain and its key.
pub fn load_pair(
    key_name: &'static str,
    cert: &Path,
    key: &Path,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let read_err = |path: &Path, reason: String| TlsError::Read {
        key: key_name,
        path: path.display().to_string(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read_err(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| read_err(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(read_err(cert, "no PEM certificate in the file".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| read_err(key, e.to_string()))?;
    let ck = CertifiedKey::from_der(chain, private, &provider).map_err(|e| TlsError::Invalid {
        key: key_name,
        reason: format!("the key does not match the certificate: {e}"),
    })?;
    Ok(Arc::new(ck))
}

impl ReloadingCert {
    /// Loads the pair; an error here stops the start.
    pub fn load(
        key_name: &'static str,
        cert: &Path,
        key: &Path,
    ) -> Result<Arc<ReloadingCert>, TlsError> {
        let st = stamp(cert, key);
        let ck = load_pair(key_name, cert, key)?;
        Ok(Arc::new(ReloadingCert {
            key_name,
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new((ck, st)),
        }))
    }

    /// Reloads the pair if its files changed. `Ok(true)`: a new certificate is in use.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let st = stamp(&self.cert, &self.key);
        if st.is_some() && st == self.read().1 {
            return Ok(false);
        }
        let ck = load_pair(self.key_name, &self.cert, &self.key)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (ck, st);
        Ok(true)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, (Arc<CertifiedKey>, Stamp)> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks the files every [`CHECK_EVERY`] and on SIGHUP, until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            tokio::select! {
                _ = tick.tick() => {}
                () = hangup => {}
                () = stop.cancelled() => return,
            }
            match self.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(key = self.key_name, cert = %self.cert.display(), "TLS certificate reloaded")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate not reloaded; the previous one stays in use")
                }
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.read().0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_mismatched_pair_is_refused_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("c.pem");
        let k = dir.path().join("k.pem");
        let e = ReloadingCert::load("http.tls", &c, &k).unwrap_err();
        assert!(e.to_string().starts_with("http.tls: cannot read"), "{e}");
        std::fs::write(&c, "not a certificate").unwrap();
        std::fs::write(&k, "not a key").unwrap();
        let e = ReloadingCert::load("http.tls", &c, &k).unwrap_err();
        assert!(e.to_string().contains("http.tls"), "{e}");
    }
}
