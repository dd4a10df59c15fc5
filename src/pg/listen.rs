//! Notifications from PostgreSQL (`LISTEN`/`NOTIFY`): how instances sharing the database hear
//! of each other's changes at once, for the live feed.
//!
//! A change worth telling writes `pg_notify(channel, payload)` in its own transaction, so the
//! notification is sent when — and only if — the change commits, in commit order. Every
//! instance keeps one connection of its own listening (not from the pool: a pooled connection's
//! notifications are not delivered to its borrower), and passes what it hears to its
//! subscribers ([`Listener::subscribe`]).
//!
//! Notifications are not stored: what is sent while an instance is not listening (its
//! connection broke, the database restarted) is lost to it. So every (re)connection is
//! announced as [`Heard::Listening`], and a subscriber treats it as "you may have missed
//! something": the live feed tells its clients to reload, the readings' feed reads on from its
//! last horizon (it never depended on a notification, which only wakes it early).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, Client, Connection};
use tokio_util::sync::CancellationToken;

use super::PgError;
use super::connect::{configure, tls_config};

/// Alert events and device status changes, for the live feed: `alert <alert id> <event type>`
/// or `device <device status JSON>`.
pub const LIVE_CHANNEL: &str = "vigil_live";

/// Readings committed (no payload): wakes every instance's readings' feed.
pub const READINGS_CHANNEL: &str = "vigil_readings";

/// How often the listening connection is checked (a connection cut without a word — a
/// network partition — is noticed within this and the check's own timeout).
const CHECK_EVERY: Duration = Duration::from_secs(15);
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between attempts to listen again.
const RETRY_MAX: Duration = Duration::from_secs(10);
/// Notifications a slow subscriber may fall behind by before it is told it lagged.
const CAPACITY: usize = 4096;

/// What the listener heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// Listening (again): whatever was sent before may have been missed.
    Listening,
    /// A notification on `channel`.
    Notification { channel: String, payload: String },
}

/// The listening connection's handle; cheap to clone.
#[derive(Clone)]
pub struct Listener {
    tx: broadcast::Sender<Heard>,
}

impl Listener {
    /// Starts listening to [`LIVE_CHANNEL`] and [`READINGS_CHANNEL`] on the database at `url`
    /// (TLS as [`super::connect`]), reconnecting whenever the connection breaks, until `stop`.
    pub fn start(url: String, ca_file: Option<PathBuf>, stop: CancellationToken) -> Listener {
        let (tx, _) = broadcast::channel(CAPACITY);
        tokio::spawn(run(url, ca_file, tx.clone(), stop));
        Listener { tx }
    }

    /// What is heard from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Heard> {
        self.tx.subscribe()
    }
}

/// The next from `r`; never, when there is none (a receiver that exists only in some
/// configurations, such as this listener's with PostgreSQL, waited on in a `select!`).
pub async fn recv_some<T: Clone>(
    r: &mut Option<broadcast::Receiver<T>>,
) -> Result<T, broadcast::error::RecvError> {
    match r {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

async fn run(
    url: String,
    ca_file: Option<PathBuf>,
    tx: broadcast::Sender<Heard>,
    stop: CancellationToken,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        match listen(&url, ca_file.as_deref(), &tx, &stop).await {
            Ok(()) => return,
            Err((e, listened)) => {
                if listened {
                    delay = Duration::from_millis(200);
                }
                tracing::warn!(
                    error = %e,
                    retry_ms = delay.as_millis() as u64,
                    "not listening to the database's notifications; the live feed waits"
                );
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// One listening connection, until `stop` (`Ok`) or it breaks (the error, and whether it had
/// been listening).
async fn listen(
    url: &str,
    ca_file: Option<&Path>,
    tx: &broadcast::Sender<Heard>,
    stop: &CancellationToken,
) -> Result<(), (PgError, bool)> {
    let (cfg, mode) = configure(url, "vigil-listen").map_err(|e| (e, false))?;
    if mode == SslMode::Disable {
        let (client, conn) = cfg
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| (e.into(), false))?;
        drive(client, conn, tx, stop).await
    } else {
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
            tls_config(ca_file).map_err(|e| (e, false))?,
        );
        let (client, conn) = cfg.connect(tls).await.map_err(|e| (e.into(), false))?;
        drive(client, conn, tx, stop).await
    }
}

async fn drive<S, T>(
    client: Client,
    mut conn: Connection<S, T>,
    tx: &broadcast::Sender<Heard>,
    stop: &CancellationToken,
) -> Result<(), (PgError, bool)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The connection is driven here; what it receives unasked comes through `heard`.
    let (heard_tx, mut heard) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            let end = m.is_err();
            if heard_tx.send(m).is_err() || end {
                break;
            }
        }
    });
    let _stop_driver = AbortOnDrop(driver);
    client
        .batch_execute(&format!("LISTEN {LIVE_CHANNEL}; LISTEN {READINGS_CHANNEL}"))
        .await
        .map_err(|e| (e.into(), false))?;
    tracing::debug!("listening to the database's notifications");
    let _ = tx.send(Heard::Listening);
    let mut checks = tokio::time::interval(CHECK_EVERY);
    checks.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            m = heard.recv() => match m {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    // No subscriber is fine: nobody is watching.
                    let _ = tx.send(Heard::Notification {
                        channel: n.channel().to_owned(),
                        payload: n.payload().to_owned(),
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err((e.into(), true)),
                None => {
                    return Err((
                        PgError::Db { message: "the listening connection closed".into(), code: None },
                        true,
                    ));
                }
            },
            _ = checks.tick() => {
                match tokio::time::timeout(CHECK_TIMEOUT, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err((e.into(), true)),
                    Err(_) => {
                        return Err((
                            PgError::Db { message: "the listening connection does not answer".into(), code: None },
                            true,
                        ));
                    }
                }
            }
        }
    }
}

/// Stops the connection's driver when the listening ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
