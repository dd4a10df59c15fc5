//! The media relay (an SFU): one `webrtc` peer connection per participant, each participant's
//! RTP forwarded to the others, keyframe requests forwarded back to the sender.
//!
//! A [`Room`] is one visit's call. It knows nothing of patients or tokens: signalling
//! (`web::signal`) decides who may enter and in which role, and passes their messages here.
//! Negotiation rule: a client offers once, when admitted; every later negotiation is an offer
//! from the relay (a track added or removed), serialised per participant, so there is no glare.
//!
//! Per forwarded track: a reader task (the publisher's track → a broadcast channel); per
//! subscriber a writer task (rewrites SSRC and payload type for its leg, strips header
//! extensions) and an RTCP task (PLI/FIR from the subscriber → a PLI to the publisher). NACKs
//! are answered per leg by the default interceptors. A peer connection is always closed with
//! `close().await`: dropping one leaks its driver (see `docs/design/webrtc-spike.md`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceCandidateInit, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::rtp_transceiver::RtpSender;

pub use super::outbox::{CLOSE_TOO_SLOW, Out, Outbox, OutboxReader, outbox};
use super::rtc_setup::RtcSetup;
use super::token::JoinRole;
use crate::telemetry::Metrics;

/// A participant's number in its room (`p1`, `p2`, … on the wire).
pub type Pid = u32;

/// The most participants a visit holds: the clinician, the patient and two more.
pub const MAX_PARTICIPANTS: usize = 4;

/// How long a participant has to answer the relay's offer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a room refused something (said to the participant in these words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("this visit has ended")]
    Ended,
    #[error("this visit is full ({MAX_PARTICIPANTS} participants)")]
    Full,
    #[error("{0}")]
    Refused(String),
}

fn refused(why: impl Into<String>) -> RelayError {
    RelayError::Refused(why.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Waiting,
    Admitted,
    InCall,
}

struct PState {
    admission: Admission,
    /// Microphone muted.
    audio: bool,
    /// Camera off.
    video: bool,
    /// Candidates that came before the offer; `None` once the offer is applied.
    pending: Option<Vec<RTCIceCandidateInit>>,
}

/// One participant's outgoing copy of another's track.
struct Forward {
    sender: Arc<dyn RtpSender>,
    tasks: Vec<JoinHandle<()>>,
}

struct Participant {
    role: JoinRole,
    name: String,
    out: Outbox,
    state: Mutex<PState>,
    pc: std::sync::OnceLock<Arc<dyn PeerConnection>>,
    gathered: watch::Sender<bool>,
    /// Whether its connection has reached `connected` (ICE and DTLS done).
    connected: watch::Sender<bool>,
    answers_tx: mpsc::Sender<RTCSessionDescription>,
    answers_rx: tokio::sync::Mutex<mpsc::Receiver<RTCSessionDescription>>,
    negotiating: tokio::sync::Mutex<()>,
    /// Cancelled when the participant leaves: a renegotiation waiting for its answer stops.
    gone: tokio_util::sync::CancellationToken,
    /// Keyed by (publisher, track id).
    forwards: Mutex<HashMap<(Pid, String), Forward>>,
    /// Held while a forward is added, from the check that it is missing to its insertion: a
    /// track is subscribed both when it is published and when this participant's connection
    /// comes up, and the two can meet.
    subscribing: tokio::sync::Mutex<()>,
}

impl Participant {
    fn send(&self, msg: Value) {
        self.out.send(msg.to_string());
    }
}

/// A track published by one participant, fanned out to the others.
struct Published {
    from: Pid,
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
    /// The publisher's SSRC, the target of forwarded keyframe requests.
    media_ssrc: u32,
    remote: Arc<dyn TrackRemote>,
    tx: broadcast::Sender<rtp::Packet>,
}

/// One visit's call.
pub struct Room {
    visit_id: String,
    rtc: Arc<RtcSetup>,
    metrics: Metrics,
    next_pid: AtomicU32,
    participants: Mutex<BTreeMap<Pid, Arc<Participant>>>,
    published: Mutex<Vec<Arc<Published>>>,
    readers: Mutex<HashMap<Pid, Vec<JoinHandle<()>>>>,
    ended: AtomicBool,
    started: AtomicBool,
}

/// The peer connection's events, on its driver task: real work is spawned.
struct Handler {
    room: Weak<Room>,
    pid: Pid,
    gathered: watch::Sender<bool>,
    connected: watch::Sender<bool>,
    _live: LiveConnection,
}

/// Counts peer connections alive: only the connection holds its handler, so the handler's drop
/// means the connection was freed (the check webrtc-rs itself uses for its leak, #906).
struct LiveConnection(Metrics);

impl LiveConnection {
    fn new(m: &Metrics) -> LiveConnection {
        m.video_peer_connections.inc();
        LiveConnection(m.clone())
    }
}

impl Drop for LiveConnection {
    fn drop(&mut self) {
        self.0.video_peer_connections.dec();
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, s: RTCIceGatheringState) {
        if s == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let (room, pid) = (self.room.clone(), self.pid);
        tokio::spawn(async move {
            if let Some(room) = room.upgrade()
                && let Err(e) = room.publish(pid, track).await
            {
                tracing::warn!(visit = %room.visit_id, participant = pid, error = %e, "a track could not be relayed");
            }
        });
    }

    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        tracing::debug!(participant = self.pid, state = %s, "peer connection state");
        if s == RTCPeerConnectionState::Connected {
            self.connected.send_replace(true);
        }
        if s == RTCPeerConnectionState::Failed {
            let (room, pid) = (self.room.clone(), self.pid);
            tokio::spawn(async move {
                if let Some(room) = room.upgrade() {
                    tracing::info!(visit = %room.visit_id, participant = pid, "media connection failed");
                    room.kick(
                        pid,
                        4010,
                        "the media connection failed; rejoin from your link",
                    )
                    .await;
                }
            });
        }
    }
}

impl Room {
    fn new(visit_id: String, rtc: Arc<RtcSetup>, metrics: Metrics) -> Room {
        Room {
            visit_id,
            rtc,
            metrics,
            next_pid: AtomicU32::new(1),
            participants: Mutex::new(BTreeMap::new()),
            published: Mutex::new(Vec::new()),
            readers: Mutex::new(HashMap::new()),
            ended: AtomicBool::new(false),
            started: AtomicBool::new(false),
        }
    }

    fn get(&self, pid: Pid) -> Option<Arc<Participant>> {
        lock(&self.participants).get(&pid).cloned()
    }

    fn others(&self, pid: Pid) -> Vec<(Pid, Arc<Participant>)> {
        lock(&self.participants)
            .iter()
            .filter(|(k, _)| **k != pid)
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    /// How many participants are in the room (waiting or in the call).
    pub fn len(&self) -> usize {
        lock(&self.participants).len()
    }

    /// Whether the room is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A participant enters: a clinician is admitted at once, anyone else waits. Sync, so
    /// [`Rooms`] can do it under its lock.
    fn enter(&self, role: JoinRole, name: String, out: Outbox) -> Result<Pid, RelayError> {
        if self.ended.load(Ordering::Acquire) {
            return Err(RelayError::Ended);
        }
        let mut ps = lock(&self.participants);
        if ps.len() >= MAX_PARTICIPANTS {
            return Err(RelayError::Full);
        }
        let pid = self.next_pid.fetch_add(1, Ordering::Relaxed);
        let (answers_tx, answers_rx) = mpsc::channel(4);
        let admission = if role == JoinRole::Clinician {
            Admission::Admitted
        } else {
            Admission::Waiting
        };
        ps.insert(
            pid,
            Arc::new(Participant {
                role,
                name,
                out,
                state: Mutex::new(PState {
                    admission,
                    audio: false,
                    video: false,
                    pending: Some(Vec::new()),
                }),
                pc: std::sync::OnceLock::new(),
                gathered: watch::channel(false).0,
                connected: watch::channel(false).0,
                answers_tx,
                answers_rx: tokio::sync::Mutex::new(answers_rx),
                negotiating: tokio::sync::Mutex::new(()),
                gone: tokio_util::sync::CancellationToken::new(),
                forwards: Mutex::new(HashMap::new()),
                subscribing: tokio::sync::Mutex::new(()),
            }),
        );
        Ok(pid)
    }

    /// Whether this participant waits to be admitted.
    pub fn is_waiting(&self, pid: Pid) -> bool {
        self.get(pid)
            .is_some_and(|p| lock(&p.state).admission == Admission::Waiting)
    }

    /// The roster, as sent to every participant.
    pub fn roster(&self) -> Value {
        roster_of(&lock(&self.participants))
    }

    /// Sends the roster to everyone. It is taken and queued under one hold of the lock, so
    /// rosters sent at once (a participant entering while another one's offer is answered)
    /// reach everyone in the order they were taken and the last one each gets is the room as
    /// it is. (Taken, the lock let go, then sent, an older roster could follow a newer one:
    /// the clinician was left with a roster without the patient who was waiting.)
    pub fn broadcast_roster(&self) {
        let ps = lock(&self.participants);
        let roster = roster_of(&ps);
        for p in ps.values() {
            p.send(roster.clone());
        }
    }

    /// Sends a message to one participant.
    pub fn send_to(&self, pid: Pid, msg: Value) {
        if let Some(p) = self.get(pid) {
            p.send(msg);
        }
    }

    /// A clinician admits a waiting participant. `Ok(true)` the first time anyone is admitted
    /// (the visit starts). Nobody is told until [`Room::announce_admission`].
    pub fn admit(&self, by: Pid, target: Pid) -> Result<bool, RelayError> {
        let admitter = self
            .get(by)
            .ok_or_else(|| refused("you are not in this visit"))?;
        if admitter.role != JoinRole::Clinician {
            return Err(refused("only a clinician can admit participants"));
        }
        let t = self
            .get(target)
            .ok_or_else(|| refused(format!("participant p{target} is not in this visit")))?;
        {
            let mut st = lock(&t.state);
            if st.admission != Admission::Waiting {
                return Err(refused(format!("participant p{target} is not waiting")));
            }
            st.admission = Admission::Admitted;
        }
        Ok(!self.started.swap(true, Ordering::AcqRel))
    }

    /// Tells an admitted participant, and everyone the new roster. Separate from
    /// [`Room::admit`] so that the visit's start is on the record before anyone learns of it.
    pub fn announce_admission(&self, target: Pid) {
        if let Some(t) = self.get(target) {
            t.send(json!({"type": "admitted"}));
        }
        self.broadcast_roster();
    }

    /// An admitted participant's one offer: their connection to the relay is built, answered,
    /// and given the tracks the others already publish (by a relay offer that follows).
    pub async fn offer(self: &Arc<Self>, pid: Pid, sdp: String) -> Result<(), RelayError> {
        let p = self
            .get(pid)
            .ok_or_else(|| refused("you are not in this visit"))?;
        match lock(&p.state).admission {
            Admission::Waiting => {
                return Err(refused("wait to be admitted before sending an offer"));
            }
            Admission::InCall => {
                return Err(refused(
                    "an offer was already made; the relay renegotiates from now on",
                ));
            }
            Admission::Admitted => {}
        }
        let offer = RTCSessionDescription::offer(sdp)
            .map_err(|e| refused(format!("the offer is not valid SDP: {e}")))?;
        // One socket's messages are handled one at a time: nothing changed since the check.
        lock(&p.state).admission = Admission::InCall;
        let handler = Arc::new(Handler {
            room: Arc::downgrade(self),
            pid,
            gathered: p.gathered.clone(),
            connected: p.connected.clone(),
            _live: LiveConnection::new(&self.metrics),
        });
        let pc = match self.rtc.build(handler).await {
            Ok(pc) => pc,
            Err(e) => {
                tracing::warn!(visit = %self.visit_id, error = %e, "no peer connection for a participant");
                // May offer again.
                lock(&p.state).admission = Admission::Admitted;
                return Err(refused(
                    "the relay has no free port for this call; try again shortly",
                ));
            }
        };
        // Held from before the connection is visible to the others until the answer is queued:
        // a relay offer (a track published meanwhile and added to this connection) must not
        // reach the participant before the answer to its own offer.
        let negotiating = p.negotiating.lock().await;
        if p.pc.set(pc.clone()).is_err() {
            let _ = pc.close().await;
            return Err(refused("an offer was already made"));
        }
        // A participant that left meanwhile had no connection to close: close this one.
        if self.get(pid).is_none() {
            let _ = pc.close().await;
            return Err(refused("you left the visit"));
        }
        let negotiated = async {
            pc.set_remote_description(offer)
                .await
                .map_err(|e| refused(format!("the offer was refused: {e}")))?;
            let pending = lock(&p.state).pending.take().unwrap_or_default();
            for c in pending {
                if let Err(e) = pc.add_ice_candidate(c).await {
                    tracing::debug!(error = %e, "an early ICE candidate was refused");
                }
            }
            let answer = pc
                .create_answer(None)
                .await
                .map_err(|e| refused(format!("no answer to the offer: {e}")))?;
            pc.set_local_description(answer)
                .await
                .map_err(|e| refused(format!("no answer to the offer: {e}")))?;
            // Host candidates only (no STUN on the relay's side): gathered in milliseconds.
            let mut g = p.gathered.subscribe();
            let _ = tokio::time::timeout(Duration::from_secs(5), g.wait_for(|d| *d)).await;
            pc.local_description()
                .await
                .ok_or_else(|| refused("no answer to the offer"))
        }
        .await;
        let answer = match negotiated {
            Ok(a) => a,
            Err(e) => {
                drop(negotiating);
                // Its connection cannot be used: the participant goes, told why, and may rejoin.
                let why = format!("{e}; rejoin from your link");
                self.kick(pid, 4000, &why).await;
                return Err(e);
            }
        };
        p.send(json!({"type": "answer", "sdp": answer.sdp}));
        drop(negotiating);
        tracing::debug!(visit = %self.visit_id, participant = pid, "offer answered");
        self.broadcast_roster();
        // What the others already publish, once this connection is up: a renegotiation while
        // ICE and DTLS are still being set up only slows them down.
        let room = self.clone();
        tokio::spawn(async move {
            let mut up = p.connected.subscribe();
            let gone = p.gone.clone();
            tokio::select! {
                r = tokio::time::timeout(Duration::from_secs(15), up.wait_for(|c| *c)) => {
                    if !matches!(r, Ok(Ok(_))) {
                        return; // never connected: the Failed state or the socket ends it
                    }
                }
                () = gone.cancelled() => return,
            }
            let existing: Vec<Arc<Published>> = lock(&room.published)
                .iter()
                .filter(|pb| pb.from != pid)
                .cloned()
                .collect();
            let mut added = false;
            for pb in &existing {
                match room.subscribe(&p, pb).await {
                    Ok(a) => added |= a,
                    Err(e) => {
                        tracing::warn!(visit = %room.visit_id, participant = pid, error = %e, "a track could not be forwarded")
                    }
                }
            }
            if added {
                room.spawn_renegotiate(pid);
            }
        });
        Ok(())
    }

    /// The participant's answer to a relay offer.
    pub fn answer(&self, pid: Pid, sdp: String) -> Result<(), RelayError> {
        let p = self
            .get(pid)
            .ok_or_else(|| refused("you are not in this visit"))?;
        let answer = RTCSessionDescription::answer(sdp)
            .map_err(|e| refused(format!("the answer is not valid SDP: {e}")))?;
        p.answers_tx
            .try_send(answer)
            .map_err(|_| refused("no offer is waiting for an answer"))
    }

    /// A trickled ICE candidate from the participant (`None`: the end of its candidates).
    pub async fn candidate(
        &self,
        pid: Pid,
        c: Option<RTCIceCandidateInit>,
    ) -> Result<(), RelayError> {
        let p = self
            .get(pid)
            .ok_or_else(|| refused("you are not in this visit"))?;
        let Some(c) = c.filter(|c| !c.candidate.is_empty()) else {
            return Ok(());
        };
        {
            let mut st = lock(&p.state);
            if let Some(pending) = st.pending.as_mut() {
                if pending.len() < 64 {
                    pending.push(c);
                }
                return Ok(());
            }
        }
        let Some(pc) = p.pc.get() else {
            return Ok(());
        };
        pc.add_ice_candidate(c)
            .await
            .map_err(|e| refused(format!("the ICE candidate was refused: {e}")))
    }

    /// The participant's mute state (`true`: muted, camera off), for the roster.
    pub fn mute(&self, pid: Pid, audio: bool, video: bool) {
        if let Some(p) = self.get(pid) {
            let changed = {
                let mut st = lock(&p.state);
                let changed = (st.audio, st.video) != (audio, video);
                st.audio = audio;
                st.video = video;
                changed
            };
            if changed {
                self.broadcast_roster();
            }
        }
    }

    /// `on_track` on a participant's connection: fan the track out to everyone in the call.
    async fn publish(
        self: &Arc<Self>,
        from: Pid,
        remote: Arc<dyn TrackRemote>,
    ) -> Result<(), RelayError> {
        let media_ssrc = *remote
            .ssrcs()
            .await
            .first()
            .ok_or_else(|| refused("a track without an SSRC"))?;
        let kind = remote.kind().await;
        let codec = match remote.codec(media_ssrc).await {
            Some(c) => c,
            // webrtc 0.21.1 can hand over a track whose only coding for its SSRC has an empty
            // codec. Seen about once per full test run, when a Chromium participant rejoins a
            // call (audio or video); that track was then never relayed, and the others saw no
            // video or heard nothing. The relay negotiates exactly one codec per kind, so the
            // kind names it.
            None => {
                let codings = remote.codings().await;
                tracing::info!(visit = %self.visit_id, participant = from, ?kind, media_ssrc, ?codings, "a track came without its codec; taken from its kind");
                match kind {
                    RtpCodecKind::Video => super::rtc_setup::vp8_codec(),
                    RtpCodecKind::Audio => super::rtc_setup::opus_codec(),
                    _ => return Err(refused("a track without a codec")),
                }
            }
        };
        tracing::debug!(visit = %self.visit_id, participant = from, ?kind, "track published");
        let (tx, _) = broadcast::channel(512);
        let pb = Arc::new(Published {
            from,
            kind,
            codec,
            media_ssrc,
            remote: remote.clone(),
            tx: tx.clone(),
        });
        // Reader: the remote track → the broadcast. Ends when the publisher's connection closes.
        let reader = tokio::spawn(async move {
            while let Some(evt) = remote.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(pkt) = evt {
                    let _ = tx.send(pkt);
                }
            }
        });
        if self.get(from).is_none() {
            // Left meanwhile: its connection is closed, so the reader ends by itself.
            return Ok(());
        }
        lock(&self.readers).entry(from).or_default().push(reader);
        lock(&self.published).push(pb.clone());
        for (pid, p) in self.others(from) {
            if p.pc.get().is_none() {
                continue; // not in the call yet: gets the track with its offer
            }
            if self.subscribe(&p, &pb).await? {
                self.spawn_renegotiate(pid);
            }
        }
        Ok(())
    }

    /// Adds an outgoing copy of `pb` to `p`'s connection with its writer and RTCP tasks.
    /// `Ok(false)` when `p` already has it.
    ///
    /// One at a time per participant: two calls for the same track (its publication, and `p`'s
    /// connection coming up) would otherwise both find it missing across the awaits below and
    /// both add it. The second copy's sender would stay on the connection when the publisher
    /// leaves (its track never ends for `p`), and its tasks would outlive the forward.
    async fn subscribe(
        &self,
        p: &Arc<Participant>,
        pb: &Arc<Published>,
    ) -> Result<bool, RelayError> {
        let Some(pc) = p.pc.get() else {
            return Ok(false);
        };
        let track_id = format!("p{}-{}", pb.from, pb.media_ssrc);
        let key = (pb.from, track_id.clone());
        let _one = p.subscribing.lock().await;
        if lock(&p.forwards).contains_key(&key) {
            return Ok(false);
        }
        let out_ssrc = random_ssrc();
        let out = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            format!("participant-p{}", pb.from),
            track_id.clone(),
            format!("{:?}", pb.kind),
            pb.kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(out_ssrc),
                    ..Default::default()
                },
                codec: pb.codec.clone(),
                ..Default::default()
            }],
        )));
        let sender = pc
            .add_track(out.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| refused(format!("a track could not be added: {e}")))?;

        // Writer. write_rtp drops (and only logs) a packet whose SSRC, payload type or header
        // extensions do not match this leg: rewrite the SSRC, map the payload type to the one
        // negotiated on this leg, drop the publisher's extensions.
        let mut rx = pb.tx.subscribe();
        let w_out = out.clone();
        let w_sender = sender.clone();
        let mime = pb.codec.mime_type.to_ascii_lowercase();
        let writer = tokio::spawn(async move {
            let mut pt: Option<u8> = None;
            loop {
                match rx.recv().await {
                    Ok(mut pkt) => {
                        if pt.is_none() {
                            pt = negotiated_pt(&w_sender, &mime).await;
                        }
                        let Some(pt) = pt else { continue };
                        pkt.header.ssrc = out_ssrc;
                        pkt.header.payload_type = pt;
                        pkt.header.extension = false;
                        pkt.header.extensions.clear();
                        // An error means the leg is not bound yet (still being negotiated): the
                        // packet is dropped. The room aborts this task when the leg goes.
                        let _ = w_out.write_rtp(pkt).await;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        // RTCP from the subscriber about this track: keyframe requests go to the publisher.
        let remote = pb.remote.clone();
        let media_ssrc = pb.media_ssrc;
        let r_out = out.clone();
        let rtcp = tokio::spawn(async move {
            while let Some(evt) = r_out.poll().await {
                let TrackLocalEvent::OnRtcpPacket(pkts) = evt else {
                    continue;
                };
                let wants_key = pkts.iter().any(|p| {
                    p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>()
                });
                if wants_key {
                    let pli = PictureLossIndication {
                        sender_ssrc: 0,
                        media_ssrc,
                    };
                    if remote.write_rtcp(vec![Box::new(pli)]).await.is_err() {
                        break;
                    }
                }
            }
        });
        // A new subscriber needs a keyframe now, not at the publisher's next periodic one.
        if pb.kind == RtpCodecKind::Video {
            let _ = pb
                .remote
                .write_rtcp(vec![Box::new(PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc: pb.media_ssrc,
                })])
                .await;
        }
        lock(&p.forwards).insert(
            key,
            Forward {
                sender,
                tasks: vec![writer, rtcp],
            },
        );
        Ok(true)
    }

    fn spawn_renegotiate(self: &Arc<Self>, pid: Pid) {
        let room = self.clone();
        tokio::spawn(async move {
            if let Err(e) = room.renegotiate(pid).await {
                tracing::info!(visit = %room.visit_id, participant = pid, error = %e, "renegotiation failed; the participant is dropped");
                room.kick(
                    pid,
                    4011,
                    "your browser did not answer the relay's offer; rejoin from your link",
                )
                .await;
            }
        });
    }

    /// A relay offer to `pid`, then its answer.
    async fn renegotiate(&self, pid: Pid) -> Result<(), RelayError> {
        let Some(p) = self.get(pid) else {
            return Ok(());
        };
        let Some(pc) = p.pc.get().cloned() else {
            return Ok(());
        };
        let _n = p.negotiating.lock().await;
        if self.get(pid).is_none() {
            return Ok(());
        }
        let mut answers = p.answers_rx.lock().await;
        while answers.try_recv().is_ok() {} // a late answer to an offer that timed out
        let offer = pc
            .create_offer(None)
            .await
            .map_err(|e| refused(format!("no offer: {e}")))?;
        pc.set_local_description(offer)
            .await
            .map_err(|e| refused(format!("no offer: {e}")))?;
        let offer = pc
            .local_description()
            .await
            .ok_or_else(|| refused("no offer"))?;
        p.send(json!({"type": "offer", "sdp": offer.sdp}));
        tracing::debug!(visit = %self.visit_id, participant = pid, "relay offer sent");
        let answer = tokio::select! {
            a = tokio::time::timeout(ANSWER_TIMEOUT, answers.recv()) => a
                .map_err(|_| refused("no answer within 10 s"))?
                .ok_or_else(|| refused("gone"))?,
            () = p.gone.cancelled() => return Ok(()),
        };
        tracing::debug!(visit = %self.visit_id, participant = pid, "relay offer answered");
        pc.set_remote_description(answer)
            .await
            .map_err(|e| refused(format!("the answer was refused: {e}")))
    }

    /// Drops a participant with a reason (their socket is closed with `code`).
    pub async fn kick(self: &Arc<Self>, pid: Pid, code: u16, reason: &str) {
        if let Some(p) = self.get(pid) {
            p.send(json!({"type": "error", "message": reason}));
            p.out.close(code, reason);
        }
        self.leave(pid).await;
    }

    /// A participant leaves (or its connection failed): its connection is closed, its tracks
    /// are removed from the others, who are renegotiated. Idempotent.
    pub async fn leave(self: &Arc<Self>, pid: Pid) {
        let Some(p) = lock(&self.participants).remove(&pid) else {
            return;
        };
        p.gone.cancel();
        let forwards: Vec<Forward> = lock(&p.forwards).drain().map(|(_, f)| f).collect();
        for f in forwards {
            for t in f.tasks {
                t.abort();
            }
        }
        if let Some(pc) = p.pc.get() {
            let _ = pc.close().await;
        }
        let readers = lock(&self.readers).remove(&pid).unwrap_or_default();
        for mut r in readers {
            // Ends by itself once the connection is closed; never wait on it forever.
            if tokio::time::timeout(Duration::from_secs(2), &mut r)
                .await
                .is_err()
            {
                tracing::warn!(visit = %self.visit_id, participant = pid, "a track reader outlived its connection; aborted");
                r.abort();
            }
        }
        lock(&self.published).retain(|pb| pb.from != pid);
        let ending = self.ended.load(Ordering::Acquire);
        for (opid, op) in self.others(pid) {
            let gone: Vec<Forward> = {
                let mut fw = lock(&op.forwards);
                let keys: Vec<_> = fw
                    .keys()
                    .filter(|(from, _)| *from == pid)
                    .cloned()
                    .collect();
                keys.into_iter().filter_map(|k| fw.remove(&k)).collect()
            };
            if gone.is_empty() {
                continue;
            }
            // Writers stop before remove_track: a write after it logs "unknown sender" in the driver.
            for f in &gone {
                for t in &f.tasks {
                    t.abort();
                }
            }
            if let Some(pc) = op.pc.get() {
                for f in gone {
                    for t in f.tasks {
                        let _ = t.await;
                    }
                    let _ = pc.remove_track(&f.sender).await;
                }
            }
            if !ending {
                self.spawn_renegotiate(opid);
            }
        }
        if !ending {
            self.broadcast_roster();
        }
    }

    /// The visit has ended: everyone is told and disconnected.
    pub async fn end(self: &Arc<Self>, reason: &str) {
        self.ended.store(true, Ordering::Release);
        let all: Vec<(Pid, Arc<Participant>)> = lock(&self.participants)
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (_, p) in &all {
            p.send(json!({"type": "ended", "reason": reason}));
            p.out.close(1000, "the visit has ended");
        }
        for (pid, _) in all {
            self.leave(pid).await;
        }
    }
}

/// The roster of a room's participants: who, in which role, waiting or in the call, muted.
fn roster_of(ps: &BTreeMap<Pid, Arc<Participant>>) -> Value {
    let list: Vec<Value> = ps
        .iter()
        .map(|(pid, p)| {
            let st = lock(&p.state);
            json!({
                "id": format!("p{pid}"),
                "role": p.role.as_str(),
                "name": p.name,
                "state": if st.admission == Admission::Waiting { "waiting" } else { "in_call" },
                "audio": st.audio,
                "video": st.video,
            })
        })
        .collect();
    json!({"type": "participants", "participants": list})
}

/// The payload type this leg negotiated for `mime` (lower case), once negotiation gave one.
async fn negotiated_pt(sender: &Arc<dyn RtpSender>, mime: &str) -> Option<u8> {
    let params = sender.get_parameters().await.ok()?;
    params
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
        .map(|c| c.payload_type)
}

fn random_ssrc() -> u32 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0x5eed_0001;
    }
    u32::from_le_bytes(b) | 1
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Every room, by visit id.
pub struct Rooms {
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    /// Visits whose call emptied, and when the last participant left.
    emptied: Mutex<HashMap<String, i64>>,
    rtc: Arc<RtcSetup>,
    metrics: Metrics,
}

impl Rooms {
    pub fn new(rtc: RtcSetup, metrics: Metrics) -> Rooms {
        Rooms {
            rooms: Mutex::new(HashMap::new()),
            emptied: Mutex::new(HashMap::new()),
            rtc: Arc::new(rtc),
            metrics,
        }
    }

    /// A participant enters a visit's room (made on first use).
    pub fn enter(
        &self,
        visit_id: &str,
        role: JoinRole,
        name: String,
        out: Outbox,
    ) -> Result<(Arc<Room>, Pid), RelayError> {
        let mut rooms = lock(&self.rooms);
        let room = rooms
            .entry(visit_id.to_owned())
            .or_insert_with(|| {
                Arc::new(Room::new(
                    visit_id.to_owned(),
                    self.rtc.clone(),
                    self.metrics.clone(),
                ))
            })
            .clone();
        let pid = room.enter(role, name, out);
        if pid.is_err() && room.is_empty() {
            rooms.remove(visit_id);
        }
        self.metrics.video_rooms.set(rooms.len() as i64);
        Ok((room, pid?))
    }

    /// A participant leaves; the room goes when it is empty. `true` when it went.
    pub async fn leave(&self, room: &Arc<Room>, pid: Pid) -> bool {
        room.leave(pid).await;
        let mut rooms = lock(&self.rooms);
        let gone = room.is_empty()
            && rooms
                .get(&room.visit_id)
                .is_some_and(|r| Arc::ptr_eq(r, room));
        if gone {
            rooms.remove(&room.visit_id);
        }
        self.metrics.video_rooms.set(rooms.len() as i64);
        gone
    }

    /// Ends a visit's call, if it has one.
    pub async fn end(&self, visit_id: &str, reason: &str) {
        let room = lock(&self.rooms).remove(visit_id);
        if let Some(room) = room {
            room.end(reason).await;
        }
        self.metrics.video_rooms.set(lock(&self.rooms).len() as i64);
    }

    /// Notes that a visit's call emptied at `left_ms`.
    pub fn emptied(&self, visit_id: &str, left_ms: i64) {
        lock(&self.emptied).insert(visit_id.to_owned(), left_ms);
    }

    /// The visits whose call emptied at least `after_ms` before `now_ms` and that nobody has
    /// rejoined, with when the last participant left; they are forgotten here.
    pub fn take_emptied(&self, now_ms: i64, after_ms: i64) -> Vec<(String, i64)> {
        let rooms = lock(&self.rooms);
        let mut emptied = lock(&self.emptied);
        emptied.retain(|id, _| rooms.get(id).is_none_or(|r| r.is_empty()));
        let due: Vec<(String, i64)> = emptied
            .iter()
            .filter(|(_, left)| now_ms - **left >= after_ms)
            .map(|(id, left)| (id.clone(), *left))
            .collect();
        for (id, _) in &due {
            emptied.remove(id);
        }
        due
    }

    /// Whether a visit's room exists and has anyone in it.
    pub fn occupied(&self, visit_id: &str) -> bool {
        lock(&self.rooms)
            .get(visit_id)
            .is_some_and(|r| !r.is_empty())
    }

    /// Ends every call (shutdown).
    pub async fn close_all(&self) {
        let all: Vec<Arc<Room>> = lock(&self.rooms).drain().map(|(_, r)| r).collect();
        for r in all {
            r.end("Vigil is shutting down").await;
        }
        self.metrics.video_rooms.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emptied_visit_is_due_once_after_the_wait_unless_rejoined() {
        let rooms = Rooms::new(
            RtcSetup::new([127, 0, 0, 1].into(), 40_000..=40_001, Vec::new()),
            Metrics::new(),
        );
        rooms.emptied("vis_a", 1_000);
        rooms.emptied("vis_b", 2_000);
        assert!(rooms.take_emptied(1_200, 300).is_empty());
        // Someone is back in b: it is forgotten, not ended.
        let (tx, _rx) = outbox(4);
        let (room, _) = rooms
            .enter("vis_b", JoinRole::Clinician, "c".into(), tx)
            .unwrap();
        assert_eq!(room.len(), 1);
        assert_eq!(
            rooms.take_emptied(5_000, 300),
            vec![("vis_a".to_owned(), 1_000)]
        );
        assert!(rooms.take_emptied(9_000, 300).is_empty());
    }

    #[test]
    fn a_fifth_participant_is_refused_and_only_a_clinician_admits() {
        let rooms = Rooms::new(
            RtcSetup::new([127, 0, 0, 1].into(), 40_000..=40_001, Vec::new()),
            Metrics::new(),
        );
        let mut pids = Vec::new();
        let mut rxs = Vec::new();
        for role in [
            JoinRole::Patient,
            JoinRole::Clinician,
            JoinRole::Guest,
            JoinRole::Guest,
        ] {
            let (tx, rx) = outbox(16);
            rxs.push(rx);
            pids.push(rooms.enter("vis_c", role, "x".into(), tx).unwrap());
        }
        let (tx, _rx) = outbox(4);
        assert_eq!(
            rooms.enter("vis_c", JoinRole::Guest, "y".into(), tx).err(),
            Some(RelayError::Full)
        );
        let room = pids[0].0.clone();
        let (patient, clinician, guest) = (pids[0].1, pids[1].1, pids[2].1);
        assert!(room.is_waiting(patient) && !room.is_waiting(clinician));
        assert!(room.admit(guest, patient).is_err(), "a guest cannot admit");
        assert_eq!(
            room.admit(clinician, patient),
            Ok(true),
            "the first admission starts the visit"
        );
        assert_eq!(room.admit(clinician, guest), Ok(false));
        assert!(
            room.admit(clinician, patient).is_err(),
            "not waiting any more"
        );
        let admitted_messages = |rx: &mut OutboxReader| {
            std::iter::from_fn(|| rx.try_text())
                .filter(|t| t.contains(r#""admitted""#))
                .count()
        };
        assert_eq!(
            admitted_messages(&mut rxs[0]),
            0,
            "nobody is told before the admission is announced"
        );
        room.announce_admission(patient);
        assert_eq!(admitted_messages(&mut rxs[0]), 1);
    }

    /// A participant whose socket stops reading is disconnected, told why, once its queue is
    /// full; the others get every message. (A roster that did not fit used to be dropped, and
    /// the close that should have followed did not fit either: the participant stayed in the
    /// call, its roster out of date, and nothing said so.)
    #[tokio::test]
    async fn a_participant_that_stops_reading_is_disconnected_and_told_so() {
        let rooms = Rooms::new(
            RtcSetup::new([127, 0, 0, 1].into(), 0..=0, Vec::new()),
            Metrics::new(),
        );
        let (tx, mut slow) = outbox(4);
        let (room, _) = rooms
            .enter("vis_e", JoinRole::Clinician, "slow".into(), tx)
            .unwrap();
        let (tx, mut other) = outbox(64);
        rooms
            .enter("vis_e", JoinRole::Guest, "other".into(), tx)
            .unwrap();
        for _ in 0..5 {
            room.broadcast_roster();
        }
        match slow.recv().await {
            Some(Out::Close(CLOSE_TOO_SLOW, why)) => assert!(why.contains("rejoin"), "{why}"),
            other => panic!("not disconnected: {other:?}"),
        }
        for _ in 0..5 {
            let m = other.recv().await;
            assert!(
                matches!(&m, Some(Out::Text(t)) if t.contains(r#""participants""#)),
                "{m:?}"
            );
        }
    }

    /// A publisher's track for [`Room::subscribe`]: a real peer connection is not needed, and its
    /// keyframe request yields, as a real one waits for its connection's driver.
    struct FakeRemote(std::sync::Mutex<MediaStreamTrack>);

    impl FakeRemote {
        fn track(&self) -> std::sync::MutexGuard<'_, MediaStreamTrack> {
            lock(&self.0)
        }
    }

    #[async_trait::async_trait]
    impl webrtc::media_stream::Track for FakeRemote {
        async fn stream_id(&self) -> String {
            self.track().stream_id().clone()
        }
        async fn track_id(&self) -> String {
            self.track().track_id().clone()
        }
        async fn label(&self) -> String {
            self.track().label().clone()
        }
        async fn kind(&self) -> RtpCodecKind {
            self.track().kind()
        }
        async fn rid(&self, ssrc: u32) -> Option<String> {
            self.track().rid(ssrc).cloned()
        }
        async fn codec(&self, ssrc: u32) -> Option<RTCRtpCodec> {
            self.track().codec(ssrc).cloned()
        }
        async fn ssrcs(&self) -> Vec<u32> {
            self.track().ssrcs().collect()
        }
        async fn enabled(&self) -> bool {
            self.track().enabled()
        }
        async fn set_enabled(&self, enabled: bool) {
            self.track().set_enabled(enabled);
        }
        async fn muted(&self) -> bool {
            self.track().muted()
        }
        async fn set_muted(&self, muted: bool) {
            self.track().set_muted(muted);
        }
        async fn ready_state(&self) -> rtc::media_stream::MediaStreamTrackState {
            self.track().ready_state()
        }
        async fn stop(&self) {
            self.track().stop();
        }
        async fn get_capabilities(&self) -> rtc::media_stream::MediaTrackCapabilities {
            self.track().get_capabilities().clone()
        }
        async fn get_constraints(&self) -> rtc::media_stream::MediaTrackConstraints {
            self.track().get_constraints().clone()
        }
        async fn get_settings(&self) -> rtc::media_stream::MediaTrackSettings {
            self.track().get_settings().clone()
        }
        async fn apply_constraints(
            &self,
            constraints: Option<rtc::media_stream::MediaTrackConstraints>,
        ) {
            self.track().apply_constraints(constraints);
        }
        async fn codings(&self) -> Vec<RTCRtpEncodingParameters> {
            self.track().codings().to_vec()
        }
        async fn add_coding(&self, coding: RTCRtpEncodingParameters) {
            self.track().add_coding(coding);
        }
    }

    #[async_trait::async_trait]
    impl TrackRemote for FakeRemote {
        async fn write_rtcp(
            &self,
            _: Vec<Box<dyn rtc::rtcp::Packet>>,
        ) -> webrtc::error::Result<()> {
            tokio::task::yield_now().await;
            Ok(())
        }
        async fn poll(&self) -> Option<TrackRemoteEvent> {
            None
        }
    }

    /// A track is subscribed when it is published and when a participant's connection comes up;
    /// when both happen at once, the participant gets one copy of it, not two (the second
    /// copy's sender stayed on its connection after the publisher left: the track never ended
    /// for it, and the relay's offers kept sending it).
    #[tokio::test]
    async fn a_track_subscribed_twice_at_once_is_forwarded_once() {
        let rooms = Rooms::new(
            RtcSetup::new([127, 0, 0, 1].into(), 0..=0, Vec::new()),
            Metrics::new(),
        );
        let (tx, _rx) = outbox(16);
        let (room, pid) = rooms
            .enter("vis_d", JoinRole::Clinician, "c".into(), tx)
            .unwrap();
        let p = room.get(pid).unwrap();
        let handler = Arc::new(Handler {
            room: Arc::downgrade(&room),
            pid,
            gathered: p.gathered.clone(),
            connected: p.connected.clone(),
            _live: LiveConnection::new(&room.metrics),
        });
        let pc = room.rtc.build(handler).await.unwrap();
        assert!(p.pc.set(pc.clone()).is_ok());
        let codec = super::super::rtc_setup::vp8_codec();
        let remote = FakeRemote(std::sync::Mutex::new(MediaStreamTrack::new(
            "participant-p9".into(),
            "video".into(),
            "video".into(),
            RtpCodecKind::Video,
            vec![],
        )));
        let pb = Arc::new(Published {
            from: 9,
            kind: RtpCodecKind::Video,
            codec,
            media_ssrc: 1234,
            remote: Arc::new(remote),
            tx: broadcast::channel(4).0,
        });

        let (a, b) = tokio::join!(room.subscribe(&p, &pb), room.subscribe(&p, &pb));
        let added = [a.unwrap(), b.unwrap()];
        assert_eq!(
            added.iter().filter(|a| **a).count(),
            1,
            "exactly one of the two adds it: {added:?}"
        );
        assert_eq!(lock(&p.forwards).len(), 1);
        assert_eq!(
            pc.get_senders().await.len(),
            1,
            "one sender on the connection"
        );
        // Its connection is closed (`close().await`, never dropped) and its forward's tasks end.
        room.leave(pid).await;
    }
}
