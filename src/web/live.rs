//! The live feed: `GET /api/v1/live`, a WebSocket of JSON events for the patients the user may
//! see — `observation`, `alert` and `device_status` — so the dashboard updates without polling.
//!
//! One hub task ([`super::live_hub`]) turns committed readings, alert events and device status
//! changes into JSON once, and fans them out; each connection only filters and writes. It is a
//! display feed, not a log: within one store commit only the newest reading of each patient's
//! metric is sent (and, when a connection finds several batches waiting, only the newest of all
//! of them), and a connection that cannot keep up is closed (code 4008, "too slow") rather
//! than allowed to hold memory or slow the others; the dashboard reconnects and reloads its
//! panel.
//! Nothing on this path can slow ingest: the store's feed is a broadcast that never waits.
//!
//! Who sees an event is decided when it is written, never only when the socket opened: the hub
//! stamps each event with its patient's care team as it is now (its map of patients' teams is
//! read again whenever the registry announces a change of access), and each connection
//! re-authenticates its credential on every such announcement, at its expiry and every 15 s
//! ([`super::recheck`]), taking its user's current teams. A connection whose credential ended
//! (signed out, expired, revoked, role changed) is closed with code 4001 and the reason.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use futures_util::SinkExt as _;
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};

use super::auth::Principal;
use super::error::ApiError;
use super::extract::{ApiResult, audit_shown};
use super::live_hub::{LiveItem, coalesce};
use super::recheck::{Concerns, Rechecks, recheck};
use super::state::AppState;
use crate::registry::AccessChange;
use crate::telemetry::Metrics;

/// Close code for a client dropped for falling behind (4000–4999: private use).
pub(crate) const CLOSE_TOO_SLOW: u16 = 4008;
/// A write that takes longer than this marks the client as not reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const PING_EVERY: Duration = Duration::from_secs(30);
/// Whether the page that opened the socket is our own: a browser always sends `Origin` on a
/// WebSocket, and a page of another site must not ride on the user's cookie. Clients that
/// are not browsers send none and authenticate with a token.
pub(super) fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    origin_host.is_some() && origin_host == host
}

/// `GET /live`.
pub(super) async fn live(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let ws = ws.map_err(|e| ApiError::BadRequest(format!("not a WebSocket request: {e}")))?;
    if !same_origin(&headers) {
        return Err(ApiError::Forbidden(
            "the live feed opens only from Vigil's own pages".into(),
        ));
    }
    // The patients the feed will show as it opens: each is audited as shown (coalesced,
    // web/seen.rs); patients who become visible later are not (they are on the panel).
    let mut patients = s.registry.patients().await?;
    patients.retain(|x| p.sees_team(x.details.care_team.as_deref()));
    audit_shown(&s, &p, "live.open", "live", patients.iter().map(|x| &x.id)).await?;
    let rx = s.live.tx.subscribe();
    let access = s.registry.subscribe_access();
    Ok(ws
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| connection(socket, s, p, rx, access)))
}

struct Gauge(Metrics);

impl Gauge {
    fn new(m: &Metrics) -> Gauge {
        m.live_clients.inc();
        Gauge(m.clone())
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        self.0.live_clients.dec();
    }
}

async fn connection(
    mut socket: WebSocket,
    s: AppState,
    mut p: Principal,
    mut rx: broadcast::Receiver<Arc<[LiveItem]>>,
    access: broadcast::Receiver<AccessChange>,
) {
    let _gauge = Gauge::new(&s.metrics);
    let hello = json!({"type": "hello", "user": {"name": p.name, "role": p.role}}).to_string();
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    let concerns = Concerns {
        user: p.name.clone(),
        patient: None,
    };
    let mut rechecks = Rechecks::new(access, concerns, p.expires_ms);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let stop = s.live.stop.clone();
    let close = |code: u16, reason: &'static str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        }))
    };
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                let _ = socket.send(close(1001, "server shutting down")).await;
                return;
            }
            () = rechecks.due() => match recheck(&s, &p).await {
                Ok(now) => {
                    rechecks.expires_at(now.expires_ms);
                    p = now;
                }
                Err(ended) => {
                    tracing::info!(user = %p.name, remote = %p.remote, reason = ended.reason, "live client's credential ended; closed");
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        socket.send(close(ended.code, ended.reason)),
                    )
                    .await;
                    return;
                }
            },
            batch = rx.recv() => match batch {
                Ok(first) => {
                    // Whatever else is already waiting goes out with it, coalesced.
                    let mut batches = vec![first];
                    while batches.len() < 64 {
                        match rx.try_recv() {
                            Ok(b) => batches.push(b),
                            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                                drop_slow(&s, &p, &format!("{n} batches behind"));
                                let _ = tokio::time::timeout(
                                    Duration::from_secs(1),
                                    socket.send(close(CLOSE_TOO_SLOW, "too slow")),
                                )
                                .await;
                                return;
                            }
                            Err(_) => break,
                        }
                    }
                    let items: Arc<[LiveItem]> = if batches.len() == 1 {
                        batches.swap_remove(0)
                    } else {
                        coalesce(&batches).into()
                    };
                    let sent = tokio::time::timeout(WRITE_TIMEOUT, async {
                        let mut any = false;
                        for it in items.iter() {
                            if it.patient_id.is_empty() || p.sees_team(it.team.as_deref()) {
                                socket.feed(Message::Text(it.json.clone())).await?;
                                any = true;
                            }
                        }
                        if any {
                            socket.flush().await?;
                        }
                        Ok::<(), axum::Error>(())
                    })
                    .await;
                    match sent {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return,
                        Err(_) => {
                            drop_slow(&s, &p, "write timed out");
                            return;
                        }
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    drop_slow(&s, &p, &format!("{n} batches behind"));
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        socket.send(close(CLOSE_TOO_SLOW, "too slow")),
                    )
                    .await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                // The client says nothing the server needs; pings are answered by the library.
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(axum::body::Bytes::new())).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn drop_slow(s: &AppState, p: &Principal, why: &str) {
    s.metrics.live_dropped.inc();
    tracing::info!(user = %p.name, remote = %p.remote, why, "live client too slow; dropped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_must_match_host() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h), "no Origin: not a browser");
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(!same_origin(&h));
    }
}
