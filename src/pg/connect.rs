//! Connecting to PostgreSQL: a libpq-style URL, TLS through rustls, and a pool.
//!
//! `sslmode` in the URL: `disable` (plain), `prefer` (TLS when the server offers it), `require`,
//! `verify-ca` and `verify-full` (TLS or no connection). Whenever TLS is used the server's
//! certificate chain *and* its name are verified against the system's roots (or `ca_file`):
//! rustls has no unverified mode, so `require` and `verify-ca` are as strict as `verify-full`.
//! Without `sslmode`, a server on a loopback address or a Unix socket is reached as `prefer`
//! and any other as `require`: a password never crosses a network in the clear by default.
//!
//! It must never log the URL: it holds the database password.

use std::path::Path;
use std::str::FromStr as _;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::{Host, SslMode};

use super::PgError;

/// The most connections one Vigil holds to the database.
const POOL_MAX: usize = 16;

/// How the URL asks for TLS, after Vigil's default for a missing `sslmode`.
pub fn tls_mode(url: &str) -> Result<SslMode, PgError> {
    let (cfg, explicit) = parse(url)?;
    Ok(match explicit {
        Some(mode) => mode,
        None if all_local(&cfg) => SslMode::Prefer,
        None => SslMode::Require,
    })
}

/// The URL as tokio-postgres reads it, and the `sslmode` it names (verify-* read as require,
/// which rustls makes as strict).
fn parse(url: &str) -> Result<(tokio_postgres::Config, Option<SslMode>), PgError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(PgError::Url(
            "must start with postgres:// (e.g. postgres://vigil:secret@db.clinic.example:5432/vigil)"
                .into(),
        ));
    }
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut explicit = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => {
                explicit = Some(match v {
                    "disable" => SslMode::Disable,
                    "prefer" | "allow" => SslMode::Prefer,
                    "require" | "verify-ca" | "verify-full" => SslMode::Require,
                    other => {
                        return Err(PgError::Url(format!(
                            "sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                        )));
                    }
                });
            }
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    // tokio-postgres' own message can quote the URL, password and all: say what, not where.
    let cfg = tokio_postgres::Config::from_str(&rest)
        .map_err(|_| PgError::Url("cannot be read as a PostgreSQL URL".into()))?;
    if cfg.get_dbname().is_none_or(str::is_empty) {
        return Err(PgError::Url(
            "names no database (…/vigil at its end)".into(),
        ));
    }
    Ok((cfg, explicit))
}

fn all_local(cfg: &tokio_postgres::Config) -> bool {
    let hosts = cfg.get_hosts();
    !hosts.is_empty()
        && hosts.iter().all(|h| match h {
            Host::Tcp(name) => {
                name == "localhost"
                    || name
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            Host::Unix(_) => true,
        })
}

/// The rustls client configuration: the system's roots, or only the CA in `ca_file` (PEM).
pub(super) fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, PgError> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| PgError::Tls(format!("{}: {e}", path.display())))?;
            for c in certs {
                let c = c.map_err(|e| PgError::Tls(format!("{}: {e}", path.display())))?;
                roots
                    .add(c)
                    .map_err(|e| PgError::Tls(format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
        }
    }
    if roots.is_empty() {
        return Err(PgError::Tls(
            "no trusted roots (install the system's CA certificates, or name the database's CA file)"
                .into(),
        ));
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The connection settings for `url` (TLS as the URL or Vigil's default says), naming the
/// connection `application` on the server, and the TLS mode.
pub(super) fn configure(
    url: &str,
    application: &str,
) -> Result<(tokio_postgres::Config, SslMode), PgError> {
    let mode = tls_mode(url)?;
    let (mut cfg, _) = parse(url)?;
    cfg.ssl_mode(mode);
    cfg.application_name(application);
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(std::time::Duration::from_secs(10));
    }
    Ok((cfg, mode))
}

/// A pool of connections to the database at `url`, checked by opening one.
pub async fn connect(url: &str, ca_file: Option<&Path>) -> Result<Pool, PgError> {
    let (cfg, mode) = configure(url, "vigil")?;
    let manager_cfg = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = if mode == SslMode::Disable {
        Manager::from_config(cfg, tokio_postgres::NoTls, manager_cfg)
    } else {
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(ca_file)?);
        Manager::from_config(cfg, tls, manager_cfg)
    };
    let pool = Pool::builder(manager)
        .max_size(POOL_MAX)
        .build()
        .map_err(|e| PgError::Pool(e.to_string()))?;
    // One connection now, so that a wrong URL or password stops start-up with its reason.
    drop(pool.get().await?);
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_server_gets_tls_unless_the_url_says_otherwise() {
        let mode = |u: &str| tls_mode(u).map_err(|e| e.to_string());
        assert_eq!(
            mode("postgres://v:s@127.0.0.1:5432/vigil"),
            Ok(SslMode::Prefer)
        );
        assert_eq!(mode("postgres://v:s@localhost/vigil"), Ok(SslMode::Prefer));
        assert_eq!(
            mode("postgres://v:s@db.example:5432/vigil"),
            Ok(SslMode::Require)
        );
        assert_eq!(
            mode("postgres://v:s@db.example/vigil?sslmode=disable"),
            Ok(SslMode::Disable)
        );
        assert_eq!(
            mode("postgresql://v:s@127.0.0.1/vigil?sslmode=verify-full&connect_timeout=3"),
            Ok(SslMode::Require)
        );
    }

    #[test]
    fn a_bad_url_is_refused_with_a_reason_and_never_echoed() {
        for (url, why) in [
            ("mysql://v:s@h/vigil", "must start with postgres://"),
            ("postgres://v:s@h/vigil?sslmode=maybe", "sslmode \"maybe\""),
            ("postgres://v:s3cret@h:notaport/vigil", "cannot be read"),
            ("postgres://v:s@h:5432", "names no database"),
        ] {
            let e = tls_mode(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
    }
}
