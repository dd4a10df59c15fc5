//! `GET /api/v1/visits/{id}/signal`: a visit's signalling WebSocket (the protocol is in
//! `docs/video.md`). The socket authenticates with its first message, `join`: a join link's
//! token, or the dashboard's session cookie or a write-scope API token (same origin, the
//! patient on one of the user's teams). Then its messages drive the visit's [`Room`] in the
//! relay.
//!
//! Joining as staff is taking part in the visit (admitting, ending), an action: a read-only API
//! token cannot. A participant who joined with a credential keeps it under watch
//! ([`super::recheck`]): when it ends (signed out, expired, revoked, role changed: 4001) or the
//! user may no longer see the visit's patient (4003), the socket is closed and the participant
//! leaves the call as on any close. A join link's holder is governed by the link alone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::rejection::ExtensionRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::json;
use tokio::sync::mpsc;

use super::auth::{Principal, check_patient};
use super::error::ApiError;
use super::extract::{ApiResult, patient_id};
use super::live::same_origin;
use super::recheck::{CLOSE_NOT_ALLOWED, CLOSE_UNCHECKED, Concerns, Ended, Rechecks, recheck};
use super::state::AppState;
use crate::domain::now_ms;
use crate::registry::AuditEntry;
use crate::registry::audit::NewAuditLine;
use crate::video::relay::{CLOSE_TOO_SLOW, Out, Pid, RelayError, Room, outbox};
use crate::video::signal::{In, parse};
use crate::video::token::JoinRole;
use crate::video::visits::is_visit_id;

/// How long a new socket has to send `join`.
const JOIN_WITHIN: Duration = Duration::from_secs(10);
/// The relay's messages that may wait for a participant's socket; a client that falls this far
/// behind is disconnected (4008) rather than skipped.
const OUT_QUEUE: usize = 64;
/// How long one message may take to be written to a participant's socket; a client that reads
/// nothing for that long is disconnected (4008).
const WRITE_WITHIN: Duration = Duration::from_secs(10);
/// How long the close frame of a socket that is being dropped may take.
const CLOSE_WITHIN: Duration = Duration::from_secs(1);
/// How long a started visit whose last participant left stays open for a rejoin before it is
/// ended (with the time the last one left).
pub(crate) const EMPTY_END_AFTER: Duration = Duration::from_secs(300);

/// `GET /visits/{id}/signal`.
pub(super) async fn signal(
    State(s): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    principal: Result<Extension<Principal>, ExtensionRejection>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let ws = ws.map_err(|e| ApiError::BadRequest(format!("not a WebSocket request: {e}")))?;
    if !is_visit_id(&id) {
        return Err(ApiError::BadRequest(format!(
            "{id:?} is not a visit id like vis_<32 hex digits>"
        )));
    }
    // A session rides on the cookie: only Vigil's own pages may use it.
    let principal = principal.ok().map(|Extension(p)| p);
    if principal.is_some() && !same_origin(&headers) {
        return Err(ApiError::Forbidden(
            "a visit's signalling opens only from Vigil's own pages".into(),
        ));
    }
    // The call lives on one instance: here, unless another live instance holds it already.
    let here = s.internal_url.as_deref().unwrap_or_default().to_owned();
    match s.registry.host_visit(id.clone(), here, now_ms()).await? {
        Some(host) if host.instance != s.registry.instance_id() => {
            return super::signal_relay::relay(s, id, host, headers, addr, ws).await;
        }
        // Here, or no such visit (the join is told so).
        _ => {}
    }
    // Passed on by another instance: the participant's own address, if genuinely signed.
    let addr = headers
        .get(super::signal_relay::RELAYED_FOR)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| s.visit_key.relayed_for(v, &id, now_ms() / 1000))
        .map_or(addr, |ip| SocketAddr::new(ip, 0));
    Ok(ws
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| connection(socket, s, id, principal, addr)))
}

/// Who joined.
struct Joined {
    role: JoinRole,
    /// For the audit trail: as [`Principal::actor`], or `visit-link:<role>`.
    actor: String,
    /// For the visit's record (who started or ended it): the user, or `visit-link:<role>`.
    by: String,
    name: String,
    /// The credential a member of staff joined with, re-checked while they are in the call;
    /// `None` for a join link's holder.
    staff: Option<Principal>,
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let msg = json!({"type": "error", "message": reason}).to_string();
    let _ = socket.send(Message::Text(msg.into())).await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: truncate(reason).into(),
        })))
        .await;
}

/// Sends a close frame, giving up after [`CLOSE_WITHIN`] (a client that reads nothing).
async fn close_frame(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: truncate(reason).into(),
    }));
    let _ = tokio::time::timeout(CLOSE_WITHIN, socket.send(frame)).await;
}

/// A close reason fits in 123 bytes.
fn truncate(s: &str) -> String {
    let mut end = s.len().min(120);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn clean_name(name: Option<String>, fallback: &str) -> String {
    let n: String = name
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(60)
        .collect();
    let n = n.trim();
    if n.is_empty() {
        fallback.to_owned()
    } else {
        n.to_owned()
    }
}

/// The first message: who is this?
async fn authenticate(
    socket: &mut WebSocket,
    s: &AppState,
    id: &str,
    principal: Option<&Principal>,
) -> Result<(Joined, crate::video::visits::Visit), (u16, String)> {
    let first = match tokio::time::timeout(JOIN_WITHIN, socket.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => t,
        Ok(_) => return Err((4001, "the first message must be a join".into())),
        Err(_) => return Err((4001, "no join message within 10 s".into())),
    };
    let (token, name) = match parse(&first) {
        Ok(In::Join { token, name }) => (token, name),
        Ok(_) => return Err((4001, "the first message must be a join".into())),
        Err(e) => return Err((4001, e)),
    };
    let visit = s
        .registry
        .visit(id.to_owned(), now_ms())
        .await
        .map_err(|e| (1011, format!("the visit could not be read: {e}")))?
        .ok_or((4004, format!("visit {id} not found")))?;
    let joined = if let Some(token) = token {
        let claims = s
            .visit_key
            .verify(token.trim(), id, now_ms() / 1000)
            .map_err(|e| (4001, e.to_string()))?;
        let role = claims.r;
        Joined {
            role,
            actor: format!("visit-link:{}", role.as_str()),
            by: format!("visit-link:{}", role.as_str()),
            name: clean_name(name, role.as_str()),
            staff: None,
        }
    } else if let Some(p) = principal {
        let refused = |e: ApiError| match e {
            ApiError::NotFound(m) => (4004, m),
            ApiError::Forbidden(m) => (CLOSE_NOT_ALLOWED, m),
            _ => (
                CLOSE_UNCHECKED,
                "the visit could not be checked".to_string(),
            ),
        };
        p.may_act("join a visit: taking part in one is an action")
            .map_err(refused)?;
        let patient = patient_id(&visit.patient_id)
            .map_err(|_| (4004, "the visit's patient is unknown".to_string()))?;
        check_patient(s, p, &patient).await.map_err(refused)?;
        // Patients see the clinician's display name (`PATCH /users/{name}`), else the
        // username; the bootstrap admin is no stored user.
        let shown = match s.registry.user(&p.name).await {
            Ok(u) => u.shown_name().to_owned(),
            Err(_) => p.name.clone(),
        };
        Joined {
            role: JoinRole::Clinician,
            actor: p.actor(),
            by: p.name.clone(),
            name: clean_name(name, &shown),
            staff: Some(p.clone()),
        }
    } else {
        return Err((
            4001,
            "a visit link or a dashboard session is needed to join".into(),
        ));
    };
    match visit.status {
        "ended" => Err((4009, "this visit has ended".into())),
        "expired" => Err((
            4009,
            "this visit expired before it started; start a new one".into(),
        )),
        _ => Ok((joined, visit)),
    }
}

/// Writes a line of the visit's audit trail; `false` (and a warning logged) when it could not be
/// written. Joining checks it: the call shows the patient, so it is not entered unrecorded.
async fn audit(
    s: &AppState,
    actor: &str,
    action: &str,
    patient: &str,
    id: &str,
    remote: &str,
) -> bool {
    let Ok(patient) = patient_id(patient) else {
        return false;
    };
    let entry = AuditEntry {
        actor,
        action,
        patient_id: Some(&patient),
        target: &format!("visit/{id}"),
        remote,
    };
    match s.registry.audit(entry, now_ms()).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, action, "audit line not written");
            false
        }
    }
}

async fn connection(
    mut socket: WebSocket,
    s: AppState,
    id: String,
    principal: Option<Principal>,
    addr: SocketAddr,
) {
    let remote = addr.ip().to_string();
    // Subscribed before the join is checked, so no change after the check is missed.
    let access = s.registry.subscribe_access();
    let (joined, visit) = match authenticate(&mut socket, &s, &id, principal.as_ref()).await {
        Ok(j) => j,
        Err((code, why)) => {
            tracing::info!(visit = %id, %remote, code, reason = %why, "visit signalling refused");
            close(&mut socket, code, &why).await;
            return;
        }
    };
    let patient = visit.patient_id.clone();
    if !audit(&s, &joined.actor, "visit.join", &patient, &id, &remote).await {
        close(
            &mut socket,
            1011,
            "the visit could not be recorded; try again",
        )
        .await;
        return;
    }
    let (out_tx, mut out_rx) = outbox(OUT_QUEUE);
    let (room, pid) = match s.rooms.enter(&id, joined.role, joined.name.clone(), out_tx) {
        Ok(x) => x,
        Err(e) => {
            let code = if e == RelayError::Ended { 4009 } else { 4029 };
            close(&mut socket, code, &e.to_string()).await;
            return;
        }
    };
    tracing::info!(visit = %id, participant = pid, role = joined.role.as_str(), "joined a visit");
    let hello = json!({
        "type": "hello",
        "participant": format!("p{pid}"),
        "role": joined.role.as_str(),
        "visit": visit,
        "ice_servers": crate::video::ice::ice_servers(&s.video, &format!("{id}-p{pid}"), now_ms() / 1000),
    });
    room.send_to(pid, hello);
    if room.is_waiting(pid) {
        room.send_to(pid, json!({"type": "waiting"}));
    } else {
        room.send_to(pid, json!({"type": "admitted"}));
    }
    room.broadcast_roster();

    // Offers and candidates go through the `webrtc` crate, which may take its time: they are
    // applied in order by a task of their own, so the loop keeps forwarding roster, admission
    // and other messages meanwhile.
    let (media, media_rx) = mpsc::channel(MEDIA_QUEUE);
    let worker = tokio::spawn(apply_media(room.clone(), pid, media_rx));
    let mut staff = joined.staff.clone().map(|p| {
        let concerns = Concerns {
            user: p.name.clone(),
            patient: Some(patient.clone()),
        };
        (Rechecks::new(access, concerns, p.expires_ms), p)
    });
    let ctx = Ctx {
        s: &s,
        room: &room,
        pid,
        joined: &joined,
        id: &id,
        patient: &patient,
        remote: &remote,
        media: &media,
    };
    loop {
        tokio::select! {
            () = recheck_due(&mut staff) => {
                let Some((rechecks, p)) = staff.as_mut() else { continue };
                match still_in(&s, p, &patient).await {
                    Ok(now) => {
                        rechecks.expires_at(now.expires_ms);
                        *p = now;
                    }
                    Err(ended) => {
                        tracing::info!(visit = %id, participant = pid, reason = ended.reason, "a participant's access ended; removed from the visit");
                        audit(&s, &joined.actor, "visit.removed", &patient, &id, &remote).await;
                        close(&mut socket, ended.code, ended.reason).await;
                        break;
                    }
                }
            }
            out = out_rx.recv() => match out {
                Some(Out::Text(t)) => {
                    match tokio::time::timeout(WRITE_WITHIN, socket.send(Message::Text(t.into()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break,
                        Err(_) => {
                            tracing::info!(visit = %id, participant = pid, "a participant's socket took no message for {WRITE_WITHIN:?}; disconnected");
                            close_frame(&mut socket, CLOSE_TOO_SLOW, "too slow: the visit's messages were not read in time; rejoin from your link").await;
                            break;
                        }
                    }
                }
                Some(Out::Close(code, reason)) => {
                    if code == CLOSE_TOO_SLOW {
                        tracing::info!(visit = %id, participant = pid, "a participant fell {OUT_QUEUE} messages behind; disconnected");
                    }
                    close_frame(&mut socket, code, &reason).await;
                    break;
                }
                None => break,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(t))) => match parse(&t) {
                    Ok(In::Leave) => break,
                    Ok(m) => {
                        if let Err(why) = ctx.handle(m).await {
                            room.send_to(pid, json!({"type": "error", "message": why}));
                        }
                    }
                    Err(why) => room.send_to(pid, json!({"type": "error", "message": why})),
                },
                Some(Ok(Message::Binary(_))) => {
                    room.send_to(pid, json!({"type": "error", "message": "messages are JSON text"}));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    drop(socket);
    // Nothing of this participant's is applied after it has left.
    drop(media);
    worker.abort();
    let _ = worker.await;
    tracing::info!(visit = %id, participant = pid, "left a visit");
    if s.rooms.leave(&room, pid).await {
        s.rooms.emptied(&id, now_ms());
    }
}

/// Resolves when a member of staff's access is due a re-check; never for a join link's holder.
async fn recheck_due(staff: &mut Option<(Rechecks, Principal)>) {
    match staff {
        Some((r, _)) => r.due().await,
        None => std::future::pending().await,
    }
}

/// A member of staff's credential, re-checked, and whether they may still see the visit's
/// patient: their principal as it is now, or why they must leave the call.
async fn still_in(s: &AppState, p: &Principal, patient: &str) -> Result<Principal, Ended> {
    let now = recheck(s, p).await?;
    let unchecked = Ended {
        code: CLOSE_UNCHECKED,
        reason: "your access could not be checked; join again",
    };
    let id = patient_id(patient).map_err(|_| unchecked.clone())?;
    let team = match s.registry.patient_team(id).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(user = %p.name, error = %e, "a visit participant's access could not be re-checked");
            return Err(unchecked);
        }
    };
    if now.sees_team(team.as_deref()) {
        Ok(now)
    } else {
        Err(Ended {
            code: CLOSE_NOT_ALLOWED,
            reason: "the visit's patient is no longer on one of your care teams",
        })
    }
}

/// Ends the started visits whose call emptied [`EMPTY_END_AFTER`] ago and that nobody rejoined,
/// with the time the last participant left. One task for all visits, every 10 s, until `stop`.
pub(crate) async fn end_emptied_visits(s: AppState, stop: tokio_util::sync::CancellationToken) {
    let after_ms = i64::try_from(EMPTY_END_AFTER.as_millis()).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        for (id, left_ms) in s.rooms.take_emptied(now_ms(), after_ms) {
            match s.registry.visit(id.clone(), now_ms()).await {
                Ok(Some(v)) if v.status == "in_progress" => {
                    if let Err(e) = s
                        .registry
                        .end_visit(
                            id.clone(),
                            "vigil (everyone left)".into(),
                            left_ms,
                            None,
                            &s.clinic_zone,
                        )
                        .await
                    {
                        tracing::warn!(visit = %id, error = %e, "an emptied visit could not be ended");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(visit = %id, error = %e, "an emptied visit could not be read")
                }
            }
        }
    }
}

struct Ctx<'a> {
    s: &'a AppState,
    room: &'a Arc<Room>,
    pid: Pid,
    joined: &'a Joined,
    id: &'a str,
    patient: &'a str,
    remote: &'a str,
    media: &'a mpsc::Sender<Media>,
}

/// An offer or candidate waiting to be applied to the participant's peer connection.
enum Media {
    Offer(String),
    Candidate(Option<webrtc::peer_connection::RTCIceCandidateInit>),
}

/// Offers and candidates a participant may have waiting; beyond it they are refused.
const MEDIA_QUEUE: usize = 256;

/// Applies a participant's offers and candidates in order; a refusal is told to the participant.
async fn apply_media(room: Arc<Room>, pid: Pid, mut rx: mpsc::Receiver<Media>) {
    while let Some(m) = rx.recv().await {
        let r = match m {
            Media::Offer(sdp) => room.offer(pid, sdp).await,
            Media::Candidate(c) => room.candidate(pid, c).await,
        };
        if let Err(e) = r {
            room.send_to(pid, json!({"type": "error", "message": e.to_string()}));
        }
    }
}

impl Ctx<'_> {
    fn queue(&self, m: Media) -> Result<(), String> {
        self.media
            .try_send(m)
            .map_err(|_| "too many offers and candidates waiting; slow down".to_owned())
    }

    async fn handle(&self, m: In) -> Result<(), String> {
        let err = |e: RelayError| e.to_string();
        match m {
            In::Join { .. } => Err("already joined".into()),
            In::Offer { sdp } => self.queue(Media::Offer(sdp)),
            In::Answer { sdp } => self.room.answer(self.pid, sdp).map_err(err),
            In::Candidate { candidate } => self.queue(Media::Candidate(candidate)),
            In::Mute { audio, video } => {
                self.room.mute(self.pid, audio, video);
                Ok(())
            }
            In::Admit { participant } => {
                let target: Pid = participant
                    .strip_prefix('p')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("{participant:?} is not a participant id like p2"))?;
                let first = self.room.admit(self.pid, target).map_err(err)?;
                // The start is on the record before the participant hears they are in: whoever
                // reads the visit after an "admitted" finds it in progress.
                let recorded = if first {
                    self.s
                        .registry
                        .start_visit(self.id.to_owned(), self.joined.by.clone(), now_ms())
                        .await
                        .map(|_| ())
                        .map_err(|e| format!("the visit's start was not recorded: {e}"))
                } else {
                    Ok(())
                };
                self.room.announce_admission(target);
                audit(
                    self.s,
                    &self.joined.actor,
                    "visit.admit",
                    self.patient,
                    self.id,
                    self.remote,
                )
                .await;
                recorded
            }
            In::End => {
                if self.joined.role != JoinRole::Clinician {
                    return Err("only a clinician can end the visit".into());
                }
                // The end and its audit line are recorded together, or neither is.
                let now = now_ms();
                let line = NewAuditLine {
                    time_ms: now,
                    actor: self.joined.actor.clone(),
                    action: "visit.end".into(),
                    patient_id: Some(self.patient.to_owned()),
                    target: format!("visit/{}", self.id),
                    remote: self.remote.to_owned(),
                };
                self.s
                    .registry
                    .end_visit(
                        self.id.to_owned(),
                        self.joined.by.clone(),
                        now,
                        Some(line),
                        &self.s.clinic_zone,
                    )
                    .await
                    .map_err(|e| format!("the visit's end was not recorded: {e}"))?;
                let rooms = self.s.rooms.clone();
                let id = self.id.to_owned();
                // Not awaited here: ending closes this very socket's room.
                tokio::spawn(async move { rooms.end(&id, "the clinician ended the visit").await });
                Ok(())
            }
            In::Leave => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(clean_name(Some("  Ana\u{7}  ".into()), "patient"), "Ana");
        assert_eq!(clean_name(None, "guest"), "guest");
        assert_eq!(clean_name(Some("x".repeat(200)), "g").len(), 60);
        assert_eq!(truncate(&"é".repeat(100)).len(), 120);
    }
}
