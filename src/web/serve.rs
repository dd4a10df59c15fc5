//! The HTTP listener, plain or TLS (`[http.tls]`): accepts connections within the listener's
//! [`Slots`], runs hyper's HTTP/1.1 on each under the deadlines of [`conn`](super::conn), and on
//! `stop` stops accepting and lets each connection finish the request it is answering.
//!
//! Not `axum::serve`: it has no deadline for a request head or an idle connection and no cap, so
//! clients that connected and sent nothing, or a byte now and then, held a file descriptor each
//! until none was left. Here each connection is one task: its TLS handshake (within
//! `http.tls_handshake_timeout_s`, in its own task, so a silent client never holds up the next),
//! then hyper, raced against the connection's deadline, its eviction and `stop`. A connection is
//! waiting (evictable) until its first request head is parsed and again while it idles between
//! requests; an upgraded one (a WebSocket) keeps its socket, and its slot, until it closes.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode};
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn::{Deadlines, Expiry, Timing};
use crate::slots::{Slot, SlotRef, Slots};
use crate::telemetry::Metrics;

/// What every connection of a listener shares.
struct Listener {
    app: Router,
    tls: Option<TlsAcceptor>,
    deadlines: Deadlines,
    metrics: Metrics,
    stop: CancellationToken,
}

/// Serves `app` on `tcp` (over TLS with `tls`) until `stop` is cancelled, then waits for the
/// requests in flight. At most `slots`' cap of connections at once; see the module docs.
pub async fn serve(
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    slots: Slots,
    deadlines: Deadlines,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let listener = Arc::new(Listener {
        app,
        tls,
        deadlines,
        metrics,
        stop: stop.clone(),
    });
    let connections = TaskTracker::new();
    loop {
        let (sock, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // No slot: the socket is closed here (counted and logged by `slots`).
        let Some(slot) = slots.admit(std::time::Instant::now(), CancellationToken::new()) else {
            continue;
        };
        let _ = sock.set_nodelay(true);
        connections.spawn(connection(listener.clone(), sock, peer, slot));
    }
    drop(tcp);
    connections.close();
    connections.wait().await;
}

/// One connection: the TLS handshake if any, then HTTP.
async fn connection(l: Arc<Listener>, sock: TcpStream, peer: SocketAddr, slot: Slot) {
    let Some(acceptor) = l.tls.clone() else {
        return http(l, sock, peer, slot).await;
    };
    let handshake = tokio::time::timeout(l.deadlines.tls_handshake, acceptor.accept(sock));
    let tls = tokio::select! {
        r = handshake => match r {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                l.metrics.http_timeout(Expiry::TlsHandshake.label());
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        () = slot.evicted() => return,
        () = l.stop.cancelled() => return,
    };
    http(l, tls, peer, slot).await;
}

/// HTTP/1.1 on `io` until the client or a deadline ends it, it is evicted, or it is upgraded.
async fn http<S>(l: Arc<Listener>, io: S, peer: SocketAddr, slot: Slot)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(Conn {
        timing: Mutex::new(Timing::new(Instant::now())),
        changed: Notify::new(),
        slot: slot.handle(),
    });
    let service = Service {
        router: TowerToHyperService::new(l.app.clone()),
        conn: conn.clone(),
        peer,
    };
    let io = Tracked {
        io,
        conn: conn.clone(),
        _slot: slot,
    };
    let serving = hyper::server::conn::http1::Builder::new()
        // The head deadline is `conn`'s: hyper's restarts with each request and covers the idle
        // wait too, so the two could not differ.
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut serving = std::pin::pin!(serving);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = serving.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "http connection ended with an error");
                }
                break;
            }
            () = l.stop.cancelled(), if !stopping => {
                // Idle connections close now; one answering a request closes after it.
                serving.as_mut().graceful_shutdown();
                stopping = true;
            }
            () = conn.slot.evicted() => break,
            expired = conn.expired(&l.deadlines) => {
                let deadline = expired.label();
                l.metrics.http_timeout(deadline);
                tracing::debug!(%peer, deadline, "http connection closed at its deadline");
                break;
            }
        }
    }
    // Served to its end or upgraded: a WebSocket keeps the socket, and the slot, working.
    conn.upgraded();
}

/// A connection's state, shared by its socket, its service and its task.
struct Conn {
    timing: Mutex<Timing>,
    /// Wakes the task when the deadline may have moved earlier.
    changed: Notify,
    slot: SlotRef,
}

impl Conn {
    fn timing(&self) -> MutexGuard<'_, Timing> {
        // Nothing panics while holding the lock.
        self.timing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves when the connection's deadline passes.
    async fn expired(&self, d: &Deadlines) -> Expiry {
        loop {
            // Created before the state is read, so a change in between is not missed.
            let changed = self.changed.notified();
            let next = self.timing().deadline(d);
            match next {
                Some((at, why)) if at <= Instant::now() => return why,
                Some((at, _)) => tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = changed => {}
                },
                None => changed.await,
            }
        }
    }

    fn read(&self) {
        if self.timing().read(Instant::now()) {
            self.changed.notify_one();
        }
    }

    fn wrote(&self) {
        self.timing().wrote(Instant::now());
    }

    fn request(&self) {
        self.timing().request(Instant::now());
        // Evicted just now: the task closes the connection anyway.
        let _ = self.slot.working();
        self.changed.notify_one();
    }

    fn responding(self: &Arc<Self>, resp: Response<Body>) -> Response<Sent> {
        let upgrade = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if upgrade {
            self.timing().upgraded();
        } else {
            self.timing().responding(Instant::now());
        }
        self.changed.notify_one();
        let conn = (!upgrade).then(|| self.clone());
        resp.map(|body| Sent { body, conn })
    }

    fn sent(&self) {
        let now = Instant::now();
        self.timing().sent(now);
        let _ = self.slot.waiting(now.into_std());
        self.changed.notify_one();
    }

    fn upgraded(&self) {
        self.timing().upgraded();
        let _ = self.slot.working();
    }
}

/// The router as hyper's service: each request carries the peer's address (`ConnectInfo`) and
/// moves the connection's phase.
#[derive(Clone)]
struct Service {
    router: TowerToHyperService<Router>,
    conn: Arc<Conn>,
    peer: SocketAddr,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response<Sent>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<Sent>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, mut req: Request<Incoming>) -> Answer {
        self.conn.request();
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let answer = hyper::service::Service::call(&self.router, req);
        let conn = self.conn.clone();
        Box::pin(async move {
            let resp = answer.await?;
            Ok(conn.responding(resp))
        })
    }
}

/// A response body that tells its connection when it is sent (hyper drops it then).
struct Sent {
    body: Body,
    conn: Option<Arc<Conn>>,
}

impl hyper::body::Body for Sent {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.sent();
        }
    }
}

/// The connection's socket (TLS or plain), reporting the bytes that move and holding the
/// connection's slot for as long as the socket lives (through an upgrade too).
struct Tracked<S> {
    io: S,
    conn: Arc<Conn>,
    _slot: Slot,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.read();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.wrote();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.wrote();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
