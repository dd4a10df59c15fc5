//! A visit's signalling passed on to the instance hosting its call. With several instances on
//! one database a visit's call (its relay room, and every participant's peer connection) lives
//! on one instance: the first to let a participant in (`Registry::host_visit`). A participant
//! whose signalling socket reaches another instance, through the load balancer, is passed on:
//! this instance opens the same socket at the host (`http.internal_url`), with the
//! participant's credentials (session cookie or token, `Origin` and `Host`) and their address
//! (`x-vigil-relayed-for`, signed with the key every instance shares), and copies messages both
//! ways until either side closes. The host checks the join, audits it and runs the call as for
//! a participant of its own; media flows between the participant and the host directly.
//!
//! If the host cannot be reached the socket is refused (502): its heartbeat lapses within
//! 15 s if it died, and the next join hosts the visit elsewhere.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};

use super::error::ApiError;
use super::extract::ApiResult;
use super::state::AppState;
use crate::domain::now_ms;
use crate::registry::visits::VisitHost;

/// The header that carries the participant's address, signed (`TokenKey::sign_relayed`).
pub(super) const RELAYED_FOR: &str = "x-vigil-relayed-for";
/// How long reaching the host (connection, TLS and the WebSocket handshake) may take.
const REACH_WITHIN: Duration = Duration::from_secs(5);
/// The request headers passed on: the credentials and what the host's same-origin check reads.
const PASSED_ON: [header::HeaderName; 5] = [
    header::COOKIE,
    header::AUTHORIZATION,
    header::ORIGIN,
    header::HOST,
    header::USER_AGENT,
];

trait Upstream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Upstream for T {}

/// Passes the socket for visit `id` on to `host`.
pub(super) async fn relay(
    s: AppState,
    id: String,
    host: VisitHost,
    headers: HeaderMap,
    addr: SocketAddr,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    if host.url.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "this visit's call is on instance {}, which gave no http.internal_url for the others to reach it",
            host.instance
        )));
    }
    let upstream = match tokio::time::timeout(REACH_WITHIN, open(&s, &id, &host, &headers, addr))
        .await
    {
        Ok(Ok(u)) => u,
        Ok(Err(Refused::Answer(r))) => return Ok(r),
        Ok(Err(Refused::Unreachable(why))) => {
            tracing::warn!(visit = %id, host = %host.instance, url = %host.url, reason = %why, "the instance hosting a visit's call could not be reached");
            return Ok(unreachable(&why));
        }
        Err(_) => {
            tracing::warn!(visit = %id, host = %host.instance, url = %host.url, "the instance hosting a visit's call did not answer in time");
            return Ok(unreachable("no answer within 5 s"));
        }
    };
    s.metrics.visit_signalling_relayed.inc();
    Ok(ws
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| pipe(socket, upstream)))
}

enum Refused {
    /// The host answered the handshake with something else than a WebSocket (403, 404 …):
    /// passed on to the participant as it is.
    Answer(Response),
    Unreachable(String),
}

fn unreachable(why: &str) -> Response {
    (
        StatusCode::BAD_GATEWAY,
        axum::Json(serde_json::json!({
            "error": format!("the instance holding this visit's call could not be reached ({why}); try again in a moment")
        })),
    )
        .into_response()
}

type UpstreamWs = tokio_tungstenite::WebSocketStream<Box<dyn Upstream>>;

/// Dials the host and opens the visit's signalling socket there.
async fn open(
    s: &AppState,
    id: &str,
    host: &VisitHost,
    headers: &HeaderMap,
    addr: SocketAddr,
) -> Result<UpstreamWs, Refused> {
    let (tls, authority) = match (
        host.url.strip_prefix("https://"),
        host.url.strip_prefix("http://"),
    ) {
        (Some(a), _) => (true, a),
        (None, Some(a)) => (false, a),
        _ => {
            return Err(Refused::Unreachable(format!(
                "{:?} is not an http(s) URL",
                host.url
            )));
        }
    };
    let scheme = if tls { "wss" } else { "ws" };
    let mut req = format!("{scheme}://{authority}/api/v1/visits/{id}/signal")
        .into_client_request()
        .map_err(|e| Refused::Unreachable(e.to_string()))?;
    for name in PASSED_ON {
        if let Some(v) = headers.get(&name) {
            req.headers_mut().insert(name, v.clone());
        }
    }
    let relayed = s
        .visit_key
        .sign_relayed(id, &addr.ip().to_string(), now_ms() / 1000);
    if let Ok(v) = HeaderValue::from_str(&relayed) {
        req.headers_mut().insert(RELAYED_FOR, v);
    }
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| Refused::Unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Upstream> = if tls {
        let Some(t) = &s.relay_tls else {
            return Err(Refused::Unreachable(
                "this instance has no TLS settings to reach an https:// instance with".into(),
            ));
        };
        Box::new(
            t.connector
                .connect(t.name.clone(), tcp)
                .await
                .map_err(|e| Refused::Unreachable(format!("TLS: {e}")))?,
        )
    } else {
        Box::new(tcp)
    };
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024));
    match tokio_tungstenite::client_async_with_config(req, stream, Some(config)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(answer)) => {
            let (parts, body) = answer.into_parts();
            let body = body.unwrap_or_default();
            let mut r = (parts.status, body).into_response();
            if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
                r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
            }
            Err(Refused::Answer(r))
        }
        Err(e) => Err(Refused::Unreachable(e.to_string())),
    }
}

/// Copies messages both ways until either side closes (its close frame passed on) or fails.
async fn pipe(mut socket: WebSocket, upstream: UpstreamWs) {
    let (mut up_tx, mut up_rx) = upstream.split();
    loop {
        tokio::select! {
            m = socket.recv() => match m {
                Some(Ok(m)) => {
                    let closing = matches!(m, Message::Close(_));
                    if let Some(m) = to_upstream(m)
                        && up_tx.send(m).await.is_err()
                    {
                        break;
                    }
                    if closing {
                        break;
                    }
                }
                _ => {
                    let _ = up_tx.send(tungstenite::Message::Close(None)).await;
                    break;
                }
            },
            m = up_rx.next() => match m {
                Some(Ok(m)) => {
                    let closing = matches!(m, tungstenite::Message::Close(_));
                    if let Some(m) = from_upstream(m)
                        && socket.send(m).await.is_err()
                    {
                        break;
                    }
                    if closing {
                        break;
                    }
                }
                _ => {
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: 1011,
                            reason: "the instance holding the call went away".into(),
                        })))
                        .await;
                    break;
                }
            },
        }
    }
    let _ = up_tx.close().await;
}

/// A participant's message as sent on to the host (pings and pongs stay on their own hop).
fn to_upstream(m: Message) -> Option<tungstenite::Message> {
    Some(match m {
        Message::Text(t) => tungstenite::Message::Text(t.as_str().into()),
        Message::Binary(b) => tungstenite::Message::Binary(b),
        Message::Close(f) => {
            tungstenite::Message::Close(f.map(|f| tungstenite::protocol::CloseFrame {
                code: f.code.into(),
                reason: f.reason.as_str().into(),
            }))
        }
        Message::Ping(_) | Message::Pong(_) => return None,
    })
}

/// The host's message as sent on to the participant.
fn from_upstream(m: tungstenite::Message) -> Option<Message> {
    Some(match m {
        tungstenite::Message::Text(t) => Message::Text(t.as_str().into()),
        tungstenite::Message::Binary(b) => Message::Binary(b),
        tungstenite::Message::Close(f) => Message::Close(f.map(|f| CloseFrame {
            code: f.code.into(),
            reason: f.reason.as_str().into(),
        })),
        _ => return None,
    })
}
