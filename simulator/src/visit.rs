//! A video-visit participant that speaks Vigil's public contract (docs/video.md): the visits
//! API and the signalling WebSocket, then one WebRTC peer connection to Vigil's relay.
//!
//! A [`Peer`] joins a visit with a join link's token, waits to be admitted, offers a VP8 video
//! track and an Opus audio track, trickles its ICE candidates, answers the server's
//! renegotiations, and then sends synthetic media:
//!
//! - video: VP8 frames with real RFC 6386 frame headers (a keyframe every
//!   [`PeerOptions::keyframe_every`] frames and whenever the relay forwards a PLI or FIR), sized
//!   for [`PeerOptions::kbps`] at [`PeerOptions::fps`], split into RTP payloads of at most
//!   [`MAX_RTP_PAYLOAD`] bytes behind the RFC 7741 payload descriptor;
//! - audio: one Opus-sized packet every 20 ms.
//!
//! It receives the other participants' tracks (their stream id is `participant-<id>`), counts
//! RTP packets and losses by sequence number per SSRC, reassembles VP8 frames on the marker bit,
//! checks each frame's header and filler byte for byte, and records when the first complete,
//! decodable frame of each remote participant arrived.
//!
//! The peer connection belongs to a task (the peer's actor) whose every exit path ends with
//! `close().await`: leaving, the visit ending, the socket closing, an error, or the [`Peer`]
//! handle being dropped. Dropping a `webrtc` peer connection without closing it leaks its driver
//! (docs/design/webrtc-spike.md).

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt as _, StreamExt as _};
use rtc::interceptor::{Attribute, Interceptor, Packet, Registry, Slot, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
    register_default_interceptors,
};

use crate::provision::Api;

/// VP8's payload type (docs/video.md: the browsers' default).
pub const VP8_PT: u8 = 96;
/// Opus's payload type.
pub const OPUS_PT: u8 = 111;
/// The largest RTP payload a peer sends (VP8 payload descriptor included).
pub const MAX_RTP_PAYLOAD: usize = 1200;
/// The picture size written into synthetic keyframes.
pub const WIDTH: u16 = 640;
/// The picture size written into synthetic keyframes.
pub const HEIGHT: u16 = 480;
/// The bytes of one synthetic Opus packet (about 32 kbit/s at 20 ms).
pub const OPUS_PACKET_BYTES: usize = 80;
/// The first byte of every synthetic Opus packet: TOC config 31 (CELT fullband 20 ms), stereo,
/// one frame.
const OPUS_TOC: u8 = 0xfc;
/// The VP8 payload descriptor the sender writes: X, then I with a 15-bit picture id.
const VP8_DESCRIPTOR_BYTES: usize = 4;
/// Keyframes are this many times the size of a delta frame.
const KEYFRAME_SCALE: usize = 3;

// ---------------------------------------------------------------------------------------------
// The visits API
// ---------------------------------------------------------------------------------------------

/// A visit just created, with its two join links.
#[derive(Debug, Clone, Deserialize)]
pub struct NewVisit {
    /// `vis_<32 hex digits>`.
    pub id: String,
    /// `…/visit/{id}#<token>` for the patient.
    pub patient_join_url: String,
    /// `…/visit/{id}#<token>` for a clinician.
    pub clinician_join_url: String,
}

/// The token of a join link: what follows the `#`.
pub fn link_token(join_url: &str) -> Option<&str> {
    join_url
        .split_once('#')
        .map(|(_, t)| t)
        .filter(|t| !t.is_empty())
}

/// Creates a patient (`POST /api/v1/patients`).
pub async fn create_patient(api: &Api, id: &str, name: &str) -> anyhow::Result<()> {
    api.call(
        reqwest::Method::POST,
        "/patients",
        Some(json!({"id": id, "name": name})),
    )
    .await?;
    Ok(())
}

/// Starts a visit for a patient (`POST /api/v1/visits`).
pub async fn create_visit(api: &Api, patient_id: &str) -> anyhow::Result<NewVisit> {
    let v = api
        .call(
            reqwest::Method::POST,
            "/visits",
            Some(json!({ "patient_id": patient_id })),
        )
        .await?;
    serde_json::from_value(v).context("Vigil's new visit lacks id or join links")
}

/// A join link for a third participant (`POST /api/v1/visits/{id}/links {"role":"guest"}`).
pub async fn guest_link(api: &Api, visit_id: &str) -> anyhow::Result<String> {
    let v = api
        .call(
            reqwest::Method::POST,
            &format!("/visits/{visit_id}/links"),
            Some(json!({"role": "guest"})),
        )
        .await?;
    v["join_url"]
        .as_str()
        .map(str::to_owned)
        .context("Vigil's answer has no join_url")
}

/// The signalling WebSocket's URL for a visit, from Vigil's HTTP base URL
/// (`http://host:port` → `ws://host:port/api/v1/visits/{id}/signal`).
pub fn signal_url(http_base: &str, visit_id: &str) -> anyhow::Result<String> {
    let base = http_base.trim_end_matches('/');
    let ws = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        bail!("{http_base:?} is not an http:// or https:// URL")
    };
    Ok(format!("{ws}/api/v1/visits/{visit_id}/signal"))
}

// ---------------------------------------------------------------------------------------------
// Options and observable state
// ---------------------------------------------------------------------------------------------

/// How a peer joins and what it sends.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// The display name sent in `join`.
    pub name: Option<String>,
    /// The local UDP address of the peer connection (`127.0.0.1:0` for tests on loopback).
    pub udp_addr: String,
    /// Offer loopback host candidates (needed when Vigil's relay binds 127.0.0.1).
    pub loopback_candidates: bool,
    /// Video frames per second.
    pub fps: u32,
    /// Target video bitrate in kbit/s (delta frames are sized for it; keyframes are
    /// three times larger).
    pub kbps: u32,
    /// A keyframe every this many frames (besides those asked for by PLI/FIR).
    pub keyframe_every: u32,
    /// Send video.
    pub send_video: bool,
    /// Send audio.
    pub send_audio: bool,
    /// A clinician peer admits everyone who waits (for load runs).
    pub auto_admit: bool,
    /// How long to wait for the server to close the socket after `leave`/`end`.
    pub close_grace: Duration,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            name: None,
            udp_addr: "127.0.0.1:0".into(),
            loopback_candidates: true,
            fps: 30,
            kbps: 1000,
            keyframe_every: 90,
            send_video: true,
            send_audio: true,
            auto_admit: false,
            close_grace: Duration::from_secs(2),
        }
    }
}

/// Where a peer is in the visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Socket open, `join` sent, no `hello` yet.
    #[default]
    Joining,
    /// `hello` received.
    Authenticated,
    /// In the waiting room.
    Waiting,
    /// Admitted: offering or in the call.
    InCall,
    /// The visit ended (`ended`).
    Ended,
    /// The peer's actor finished: peer connection closed, socket closed.
    Finished,
}

/// One line of the roster (`participants`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RosterEntry {
    /// `p1`, `p2`, …
    pub id: String,
    /// `clinician`, `patient` or `guest`.
    pub role: String,
    /// The display name.
    #[serde(default)]
    pub name: Option<String>,
    /// `waiting` or `in_call`.
    pub state: String,
    /// Sending audio (not muted).
    #[serde(default)]
    pub audio: bool,
    /// Sending video (not muted).
    #[serde(default)]
    pub video: bool,
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// Opus.
    Audio,
    /// VP8.
    Video,
}

/// What this peer has sent.
#[derive(Debug, Clone, Default)]
pub struct SentStats {
    /// RTP packets of video written to the peer connection.
    pub video_packets: u64,
    /// RTP packets of audio written.
    pub audio_packets: u64,
    /// VP8 frames sent.
    pub frames: u64,
    /// Of which keyframes.
    pub keyframes: u64,
    /// RTP payload bytes sent.
    pub payload_bytes: u64,
    /// PLI/FIR received from the relay about our video.
    pub keyframe_requests: u64,
    /// `write_rtp` refused a packet.
    pub write_errors: u64,
}

/// One remote track this peer received (one SSRC).
#[derive(Debug, Clone)]
pub struct RemoteTrack {
    /// The sender's participant id (from the stream id `participant-<id>`).
    pub participant: String,
    /// The MediaStream id as received.
    pub stream_id: String,
    /// The track id as received (the msid's second part).
    pub track_id: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// The SSRC the relay sends it with.
    pub ssrc: u32,
    /// RTP packets received.
    pub packets: u64,
    /// Packets missing by sequence number (expected − received, from the first packet on).
    pub lost: u64,
    /// Complete, verified frames after the first keyframe (video).
    pub frames: u64,
    /// Of which keyframes.
    pub keyframes: u64,
    /// Frames that failed the check (header or filler), or audio packets with a wrong header.
    pub bad: u64,
    /// Complete frames dropped because no keyframe had arrived yet.
    pub undecodable: u64,
    /// The first RTP packet.
    pub first_packet_at: Option<Instant>,
    /// The first complete, decodable frame (video) or packet (audio).
    pub first_frame_at: Option<Instant>,
    /// The track ended: a server offer removed it (its m-section no longer sends to us: what
    /// fires `removetrack` in a browser), or the connection closed.
    pub ended: bool,
}

/// Everything observable about a peer, at one moment.
#[derive(Debug, Clone, Default)]
pub struct PeerSnapshot {
    /// Our participant id (`hello`).
    pub participant: Option<String>,
    /// Our role (`hello`).
    pub role: Option<String>,
    /// The visit object of `hello`.
    pub visit: Option<Value>,
    /// The ICE servers `hello` handed out.
    pub ice_servers: usize,
    /// Where we are.
    pub phase: Phase,
    /// `join` sent.
    pub joined_at: Option<Instant>,
    /// `admitted` received.
    pub admitted_at: Option<Instant>,
    /// The peer connection reached `connected`.
    pub connected_at: Option<Instant>,
    /// The peer connection's last state.
    pub pc_state: Option<String>,
    /// The last roster.
    pub roster: Vec<RosterEntry>,
    /// Server renegotiations answered.
    pub renegotiations: u64,
    /// `error` messages from the server, and local failures (prefixed `local:`).
    pub errors: Vec<String>,
    /// The reason of `ended`.
    pub ended: Option<String>,
    /// The close frame's code and reason, if the server closed the socket with one.
    pub close: Option<(u16, String)>,
    /// What was sent.
    pub sent: SentStats,
    /// What was received, per remote track.
    pub remote: Vec<RemoteTrack>,
}

impl PeerSnapshot {
    /// The live (not ended) remote tracks of one participant.
    pub fn tracks_from<'a>(
        &'a self,
        participant: &'a str,
    ) -> impl Iterator<Item = &'a RemoteTrack> {
        self.remote
            .iter()
            .filter(move |t| t.participant == participant && !t.ended)
    }

    /// Packets and verified frames received from a participant, of one kind, over all its
    /// tracks (ended ones included).
    pub fn received(&self, participant: &str, kind: MediaKind) -> (u64, u64) {
        self.remote
            .iter()
            .filter(|t| t.participant == participant && t.kind == kind)
            .fold((0, 0), |(p, f), t| (p + t.packets, f + t.frames))
    }

    /// The first complete, decodable video frame from a participant.
    pub fn first_frame_from(&self, participant: &str) -> Option<Instant> {
        self.remote
            .iter()
            .filter(|t| t.participant == participant && t.kind == MediaKind::Video)
            .filter_map(|t| t.first_frame_at)
            .min()
    }

    /// RTP packets received over every remote track.
    pub fn packets_received(&self) -> u64 {
        self.remote.iter().map(|t| t.packets).sum()
    }

    /// RTP packets lost over every remote track (by sequence number).
    pub fn packets_lost(&self) -> u64 {
        self.remote.iter().map(|t| t.lost).sum()
    }

    /// Frames that failed verification, over every remote track.
    pub fn bad(&self) -> u64 {
        self.remote.iter().map(|t| t.bad).sum()
    }

    /// The roster entry of a participant.
    pub fn roster_entry(&self, id: &str) -> Option<&RosterEntry> {
        self.roster.iter().find(|e| e.id == id)
    }
}

/// The peer's state, shared by its actor, its media tasks and its handle.
struct Shared {
    state: Mutex<PeerSnapshot>,
    changed: watch::Sender<u64>,
}

impl Shared {
    /// Changes the state and wakes the waiters.
    fn update<R>(&self, f: impl FnOnce(&mut PeerSnapshot) -> R) -> R {
        let r = self.quiet(f);
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
        r
    }

    /// Changes the state without waking anyone (per-packet counters; waiters poll too).
    fn quiet<R>(&self, f: impl FnOnce(&mut PeerSnapshot) -> R) -> R {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    }

    fn snapshot(&self) -> PeerSnapshot {
        self.quiet(|s| s.clone())
    }

    fn local_error(&self, e: impl std::fmt::Display) {
        self.update(|s| s.errors.push(format!("local: {e}")));
    }
}

// ---------------------------------------------------------------------------------------------
// The handle
// ---------------------------------------------------------------------------------------------

enum Command {
    Send(Value),
    Mute {
        audio: bool,
        video: bool,
    },
    /// Send `leave` (or nothing) and finish.
    Leave {
        send: bool,
    },
    /// Send `end` and wait for the server to end the visit.
    End,
}

/// A participant of a visit. Its actor task owns the socket and the peer connection; the
/// handle sends it commands and reads its state.
///
/// [`Peer::leave`] (or [`Peer::close`]) returns once the peer connection is closed. Dropping
/// the handle makes the actor leave and close on its own.
pub struct Peer {
    shared: Arc<Shared>,
    cmd: mpsc::UnboundedSender<Command>,
    task: Option<JoinHandle<()>>,
}

impl Peer {
    /// Opens the signalling socket (`ws://…/api/v1/visits/{id}/signal`), sends `join` with the
    /// token (and `opts.name`) and starts the actor. Returns once `join` is sent.
    pub async fn join(
        signal_url: &str,
        token: Option<&str>,
        opts: PeerOptions,
    ) -> anyhow::Result<Peer> {
        let (mut ws, _) = tokio_tungstenite::connect_async(signal_url)
            .await
            .with_context(|| format!("cannot open {signal_url}"))?;
        let mut join = json!({"type": "join"});
        if let Some(t) = token {
            join["token"] = json!(t);
        }
        if let Some(n) = &opts.name {
            join["name"] = json!(n);
        }
        ws.send(Message::text(join.to_string()))
            .await
            .context("cannot send join")?;
        let shared = Arc::new(Shared {
            state: Mutex::new(PeerSnapshot {
                joined_at: Some(Instant::now()),
                ..PeerSnapshot::default()
            }),
            changed: watch::channel(0).0,
        });
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (cand_tx, cand_rx) = mpsc::unbounded_channel();
        let (track_tx, track_rx) = mpsc::unbounded_channel();
        let actor = Actor {
            shared: shared.clone(),
            opts,
            ws,
            cmd_rx,
            cand_tx,
            cand_rx,
            track_tx,
            track_rx,
            pc: None,
            local: None,
            ice_servers: Vec::new(),
            offer_sent: false,
            remote_set: false,
            pending_local: Vec::new(),
            pending_remote: Vec::new(),
            media: Vec::new(),
            receivers: Vec::new(),
            admitted: HashSet::new(),
            flags: Arc::new(MediaFlags::default()),
            write_failed: None,
        };
        let task = tokio::spawn(actor.run());
        Ok(Peer {
            shared,
            cmd: cmd_tx,
            task: Some(task),
        })
    }

    /// The state now.
    pub fn snapshot(&self) -> PeerSnapshot {
        self.shared.snapshot()
    }

    /// Our participant id, once `hello` came.
    pub fn participant(&self) -> Option<String> {
        self.shared.quiet(|s| s.participant.clone())
    }

    /// Waits until `pred` holds for the state; an error naming `what` (and the state) after
    /// `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&PeerSnapshot) -> bool,
    ) -> anyhow::Result<PeerSnapshot> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.shared.changed.subscribe();
        loop {
            let s = self.shared.snapshot();
            if pred(&s) {
                return Ok(s);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{what}: not within {timeout:?} (phase {:?}, errors {:?}, close {:?}, \
                     received {} packets from {} tracks, sent {} video + {} audio packets)",
                    s.phase,
                    s.errors,
                    s.close,
                    s.packets_received(),
                    s.remote.len(),
                    s.sent.video_packets,
                    s.sent.audio_packets,
                );
            }
            // Woken by a state change, or every 20 ms for the packet counters.
            let tick = (deadline.min(tokio::time::Instant::now() + Duration::from_millis(20)))
                .max(tokio::time::Instant::now());
            let _ = tokio::time::timeout_at(tick, rx.changed()).await;
        }
    }

    /// Admits a participant from the waiting room (clinicians).
    pub fn admit(&self, participant: &str) {
        self.send(json!({"type": "admit", "participant": participant}));
    }

    /// Mutes or unmutes: stops sending the muted kinds and tells the others (`mute`).
    pub fn mute(&self, audio_muted: bool, video_muted: bool) {
        let _ = self.cmd.send(Command::Mute {
            audio: audio_muted,
            video: video_muted,
        });
    }

    /// Ends the visit for everyone (clinicians) and waits until the peer has finished.
    pub async fn end(mut self) -> PeerSnapshot {
        let _ = self.cmd.send(Command::End);
        self.finish().await
    }

    /// Sends `leave`, closes the peer connection and the socket; the final state.
    pub async fn leave(mut self) -> PeerSnapshot {
        let _ = self.cmd.send(Command::Leave { send: true });
        self.finish().await
    }

    /// Closes the peer connection and the socket without `leave` (a vanished browser tab);
    /// the final state.
    pub async fn close(mut self) -> PeerSnapshot {
        let _ = self.cmd.send(Command::Leave { send: false });
        self.finish().await
    }

    /// Waits for the actor to finish (without asking it to), e.g. after `ended` or an auth
    /// error; the final state.
    pub async fn finished(mut self) -> PeerSnapshot {
        self.finish().await
    }

    /// Any message (for protocol tests).
    pub fn send(&self, msg: Value) {
        let _ = self.cmd.send(Command::Send(msg));
    }

    async fn finish(&mut self) -> PeerSnapshot {
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            self.shared.local_error(format!("peer task failed: {e}"));
        }
        self.shared.snapshot()
    }
}

// ---------------------------------------------------------------------------------------------
// The actor
// ---------------------------------------------------------------------------------------------

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the media task reads: mute state and keyframe requests.
#[derive(Default)]
struct MediaFlags {
    audio_muted: AtomicBool,
    video_muted: AtomicBool,
    want_keyframe: AtomicBool,
}

/// Our two local tracks and their SSRCs.
struct LocalTracks {
    video: Arc<TrackLocalStaticRTP>,
    audio: Arc<TrackLocalStaticRTP>,
    video_ssrc: u32,
    audio_ssrc: u32,
}

struct Actor {
    shared: Arc<Shared>,
    opts: PeerOptions,
    ws: Ws,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    cand_tx: mpsc::UnboundedSender<Option<RTCIceCandidateInit>>,
    cand_rx: mpsc::UnboundedReceiver<Option<RTCIceCandidateInit>>,
    track_tx: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
    track_rx: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    pc: Option<Arc<dyn PeerConnection>>,
    local: Option<LocalTracks>,
    ice_servers: Vec<RTCIceServer>,
    offer_sent: bool,
    remote_set: bool,
    /// Our candidates gathered before the offer went out.
    pending_local: Vec<Option<RTCIceCandidateInit>>,
    /// The server's candidates that came before its answer.
    pending_remote: Vec<RTCIceCandidateInit>,
    media: Vec<JoinHandle<()>>,
    receivers: Vec<JoinHandle<()>>,
    /// Participants this (auto-admitting) clinician already admitted.
    admitted: HashSet<String>,
    flags: Arc<MediaFlags>,
    /// Why the socket could no longer be written, the first time it could not.
    write_failed: Option<String>,
}

impl Actor {
    async fn run(mut self) {
        if let Err(e) = self.serve().await {
            self.shared.local_error(format!("{e:#}"));
        }
        self.shutdown().await;
    }

    /// Every exit path of the actor: stop sending, close the peer connection, wait for the
    /// receivers (their tracks end with the connection), close the socket.
    async fn shutdown(&mut self) {
        for t in &self.media {
            t.abort();
        }
        for t in self.media.drain(..) {
            let _ = t.await;
        }
        if let Some(pc) = self.pc.take()
            && let Err(e) = pc.close().await
        {
            self.shared.local_error(format!("close: {e}"));
        }
        self.local = None;
        for t in self.receivers.drain(..) {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                abort.abort();
                self.shared
                    .local_error("a remote track did not end within 5 s of close()");
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
        self.shared.update(|s| {
            s.phase = Phase::Finished;
            for t in &mut s.remote {
                t.ended = true;
            }
        });
    }

    async fn serve(&mut self) -> anyhow::Result<()> {
        let mut leaving: Option<tokio::time::Instant> = None;
        loop {
            let grace = async {
                match leaving {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = self.ws.next() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        self.on_message(text.as_str()).await?;
                    }
                    Some(Ok(Message::Close(frame))) => {
                        if let Some(f) = frame {
                            let close = (u16::from(f.code), f.reason.as_str().to_owned());
                            self.shared.update(|s| s.close = Some(close));
                        }
                        return Ok(());
                    }
                    Some(Ok(_)) => {}
                    // After leave/end the server may drop the socket without a close frame.
                    Some(Err(_)) | None if leaving.is_some() => return Ok(()),
                    Some(Err(e)) => return Err(self.broken(e.into())),
                    None => {
                        return match self.write_failed.take() {
                            Some(why) => Err(anyhow::anyhow!("signalling socket: {why}")),
                            None => Ok(()),
                        };
                    }
                },
                cmd = self.cmd_rx.recv(), if leaving.is_none() => match cmd {
                    Some(Command::Send(v)) => self.send(&v).await,
                    Some(Command::Mute { audio, video }) => {
                        self.flags.audio_muted.store(audio, Ordering::Relaxed);
                        self.flags.video_muted.store(video, Ordering::Relaxed);
                        if !video {
                            self.flags.want_keyframe.store(true, Ordering::Relaxed);
                        }
                        self.send(&json!({"type": "mute", "audio": audio, "video": video})).await;
                    }
                    Some(Command::Leave { send: true }) | None => {
                        self.send(&json!({"type": "leave"})).await;
                        return Ok(());
                    }
                    Some(Command::Leave { send: false }) => return Ok(()),
                    Some(Command::End) => {
                        self.send(&json!({"type": "end"})).await;
                        leaving = Some(tokio::time::Instant::now() + self.opts.close_grace);
                    }
                },
                Some(c) = self.cand_rx.recv() => self.local_candidate(c).await,
                Some(track) = self.track_rx.recv() => {
                    let shared = self.shared.clone();
                    self.receivers.push(tokio::spawn(receive(track, shared)));
                }
                () = grace => return Ok(()),
            }
        }
    }

    /// Sends a message on the signalling socket. A socket that can no longer be written does
    /// not end the peer here: as in a browser, what is sent once the server has closed it is
    /// dropped, and what the server sent before closing (`ended`, `error`, the close frame) is
    /// still read. The read side then ends the peer, with this failure as its error unless the
    /// server closed the socket with a close frame or we were leaving.
    async fn send(&mut self, v: &Value) {
        if self.write_failed.is_some() {
            return;
        }
        if let Err(e) = self.ws.send(Message::text(v.to_string())).await {
            self.write_failed = Some(e.to_string());
        }
    }

    /// The error for a socket that broke while reading, with the write failure before it if any.
    fn broken(&mut self, e: anyhow::Error) -> anyhow::Error {
        match self.write_failed.take() {
            Some(why) => e.context(format!("signalling socket (a write failed before: {why})")),
            None => e.context("signalling socket"),
        }
    }

    async fn on_message(&mut self, text: &str) -> anyhow::Result<()> {
        let Ok(msg) = serde_json::from_str::<Value>(text) else {
            self.shared
                .local_error(format!("not JSON from the server: {text:.200}"));
            return Ok(());
        };
        match msg["type"].as_str().unwrap_or_default() {
            "hello" => {
                self.ice_servers = ice_servers(&msg["ice_servers"]);
                let n = self.ice_servers.len();
                self.shared.update(|s| {
                    s.participant = msg["participant"].as_str().map(str::to_owned);
                    s.role = msg["role"].as_str().map(str::to_owned);
                    s.visit = Some(msg["visit"].clone());
                    s.ice_servers = n;
                    if s.phase == Phase::Joining {
                        s.phase = Phase::Authenticated;
                    }
                });
            }
            "waiting" => self.shared.update(|s| s.phase = Phase::Waiting),
            "admitted" => {
                self.shared.update(|s| {
                    s.phase = Phase::InCall;
                    s.admitted_at.get_or_insert_with(Instant::now);
                });
                if self.pc.is_none() {
                    self.offer().await?;
                }
            }
            "answer" => {
                let Some(pc) = self.pc.clone() else {
                    self.shared.local_error("an answer before our offer");
                    return Ok(());
                };
                let sdp = msg["sdp"].as_str().unwrap_or_default().to_owned();
                pc.set_remote_description(RTCSessionDescription::answer(sdp)?)
                    .await
                    .context("applying the server's answer")?;
                self.remote_set = true;
                for c in std::mem::take(&mut self.pending_remote) {
                    if let Err(e) = pc.add_ice_candidate(c).await {
                        self.shared.local_error(format!("server candidate: {e}"));
                    }
                }
                self.start_media();
            }
            "offer" => self.renegotiate(&msg).await?,
            "candidate" => {
                if msg["candidate"].is_null() {
                    return Ok(()); // the server's end of candidates
                }
                match serde_json::from_value::<RTCIceCandidateInit>(msg["candidate"].clone()) {
                    Ok(c) => match (&self.pc, self.remote_set) {
                        (Some(pc), true) => {
                            if let Err(e) = pc.add_ice_candidate(c).await {
                                self.shared.local_error(format!("server candidate: {e}"));
                            }
                        }
                        _ => self.pending_remote.push(c),
                    },
                    Err(e) => self
                        .shared
                        .local_error(format!("a candidate that is not RTCIceCandidateInit: {e}")),
                }
            }
            "participants" => {
                let roster: Vec<RosterEntry> =
                    serde_json::from_value(msg["participants"].clone()).unwrap_or_default();
                let waiting: Vec<String> = roster
                    .iter()
                    .filter(|e| e.state == "waiting")
                    .map(|e| e.id.clone())
                    .collect();
                let is_clinician = self.shared.update(|s| {
                    s.roster = roster;
                    s.role.as_deref() == Some("clinician")
                });
                if self.opts.auto_admit && is_clinician {
                    for id in waiting {
                        if self.admitted.insert(id.clone()) {
                            self.send(&json!({"type": "admit", "participant": id}))
                                .await;
                        }
                    }
                }
            }
            "ended" => {
                let reason = msg["reason"].as_str().unwrap_or_default().to_owned();
                self.shared.update(|s| {
                    s.ended = Some(reason);
                    s.phase = Phase::Ended;
                });
            }
            "error" => {
                let m = msg["message"].as_str().unwrap_or_default().to_owned();
                self.shared.update(|s| s.errors.push(m));
            }
            other => {
                self.shared
                    .local_error(format!("unexpected message type {other:?}"));
            }
        }
        Ok(())
    }

    /// After `admitted`: the peer connection, our two tracks, our offer.
    async fn offer(&mut self) -> anyhow::Result<()> {
        let handler = Arc::new(Handler {
            shared: self.shared.clone(),
            cand_tx: self.cand_tx.clone(),
            track_tx: self.track_tx.clone(),
        });
        let pc = build_pc(&self.opts, self.ice_servers.clone(), handler).await?;
        // From here on, every exit path closes it.
        self.pc = Some(pc.clone());
        let stream = format!("sim-{}", random_u32());
        let video_ssrc = random_u32();
        let audio_ssrc = random_u32();
        let video = Arc::new(local_track(&stream, "video", video_ssrc, vp8_codec()));
        let audio = Arc::new(local_track(&stream, "audio", audio_ssrc, opus_codec()));
        pc.add_track(video.clone() as Arc<dyn TrackLocal>).await?;
        pc.add_track(audio.clone() as Arc<dyn TrackLocal>).await?;
        self.local = Some(LocalTracks {
            video,
            audio,
            video_ssrc,
            audio_ssrc,
        });
        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer).await?;
        let offer = pc
            .local_description()
            .await
            .context("no local description after set_local_description")?;
        self.send(&json!({"type": "offer", "sdp": offer.sdp})).await;
        self.offer_sent = true;
        for c in std::mem::take(&mut self.pending_local) {
            self.send_candidate(c).await;
        }
        Ok(())
    }

    /// A server `offer`: apply it and answer.
    async fn renegotiate(&mut self, msg: &Value) -> anyhow::Result<()> {
        let Some(pc) = self.pc.clone() else {
            self.shared
                .local_error("a server offer before we were in the call");
            return Ok(());
        };
        let sdp = msg["sdp"].as_str().unwrap_or_default().to_owned();
        let r: anyhow::Result<String> = async {
            pc.set_remote_description(RTCSessionDescription::offer(sdp.clone())?)
                .await?;
            let answer = pc.create_answer(None).await?;
            pc.set_local_description(answer).await?;
            let answer = pc
                .local_description()
                .await
                .context("no local description after the answer")?;
            Ok(answer.sdp)
        }
        .await;
        match r {
            Ok(answer) => {
                self.send(&json!({"type": "answer", "sdp": answer})).await;
                self.remote_set = true;
                // The webrtc crate ends no remote track when an offer stops sending it; a
                // browser fires `removetrack`. Do what the browser does, from the offer.
                let sending = sending_tracks(&sdp);
                self.shared.update(|s| {
                    s.renegotiations += 1;
                    for t in &mut s.remote {
                        if !sending.contains(&(t.stream_id.clone(), t.track_id.clone())) {
                            t.ended = true;
                        }
                    }
                });
            }
            Err(e) => self
                .shared
                .local_error(format!("renegotiation failed: {e:#}")),
        }
        Ok(())
    }

    async fn local_candidate(&mut self, c: Option<RTCIceCandidateInit>) {
        if self.offer_sent {
            self.send_candidate(c).await;
        } else {
            self.pending_local.push(c);
        }
    }

    async fn send_candidate(&mut self, c: Option<RTCIceCandidateInit>) {
        let candidate = match c {
            Some(c) => json!({
                "candidate": c.candidate,
                // One bundled transport: every candidate belongs to the first m-line.
                "sdpMid": c.sdp_mid.filter(|m| !m.is_empty()).unwrap_or_else(|| "0".into()),
                "sdpMLineIndex": c.sdp_mline_index.unwrap_or(0),
            }),
            None => Value::Null,
        };
        self.send(&json!({"type": "candidate", "candidate": candidate}))
            .await;
    }

    /// Once the answer is applied: the media sender and the keyframe-request reader.
    fn start_media(&mut self) {
        let Some(local) = &self.local else { return };
        if !self.media.is_empty() {
            return;
        }
        let sender = MediaSender {
            video: local.video.clone(),
            audio: local.audio.clone(),
            video_ssrc: local.video_ssrc,
            audio_ssrc: local.audio_ssrc,
            opts: self.opts.clone(),
            flags: self.flags.clone(),
            shared: self.shared.clone(),
        };
        self.media.push(tokio::spawn(sender.run()));
        let (video, flags, shared) = (local.video.clone(), self.flags.clone(), self.shared.clone());
        self.media.push(tokio::spawn(async move {
            while let Some(evt) = video.poll().await {
                let TrackLocalEvent::OnRtcpPacket(pkts) = evt else {
                    continue;
                };
                if pkts.iter().any(|p| {
                    p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>()
                }) {
                    flags.want_keyframe.store(true, Ordering::Relaxed);
                    shared.quiet(|s| s.sent.keyframe_requests += 1);
                }
            }
        }));
    }
}

/// `hello`'s `ice_servers`, in the `RTCConfiguration.iceServers` form (`urls` a string or a
/// list).
fn ice_servers(v: &Value) -> Vec<RTCIceServer> {
    v.as_array()
        .map(|list| {
            list.iter()
                .filter_map(|s| {
                    let urls: Vec<String> = match &s["urls"] {
                        Value::String(u) => vec![u.clone()],
                        Value::Array(us) => us
                            .iter()
                            .filter_map(|u| u.as_str().map(str::to_owned))
                            .collect(),
                        _ => return None,
                    };
                    Some(RTCIceServer {
                        urls,
                        username: s["username"].as_str().unwrap_or_default().to_owned(),
                        credential: s["credential"].as_str().unwrap_or_default().to_owned(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The `(stream id, track id)` of every media section of a remote description that sends to
/// us: not rejected (port 0), direction `sendrecv` or `sendonly` (the default when absent),
/// with an `a=msid`.
fn sending_tracks(sdp: &str) -> HashSet<(String, String)> {
    /// One m-section: not rejected, sends to us, its msid.
    struct Section {
        live: bool,
        sends: bool,
        msid: Option<(String, String)>,
    }
    let mut sections: Vec<Section> = Vec::new();
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            sections.push(Section {
                live: m.split_whitespace().nth(1).is_some_and(|port| port != "0"),
                sends: true,
                msid: None,
            });
        } else if let Some(sec) = sections.last_mut() {
            match line {
                "a=recvonly" | "a=inactive" => sec.sends = false,
                "a=sendrecv" | "a=sendonly" => sec.sends = true,
                _ => {
                    if let Some((stream, track)) =
                        line.strip_prefix("a=msid:").and_then(|v| v.split_once(' '))
                    {
                        sec.msid = Some((stream.to_owned(), track.trim().to_owned()));
                    }
                }
            }
        }
    }
    sections
        .into_iter()
        .filter(|s| s.live && s.sends)
        .filter_map(|s| s.msid)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The peer connection
// ---------------------------------------------------------------------------------------------

/// The connection's events: candidates and tracks go to the actor (the callbacks run on the
/// connection's driver and must return fast).
struct Handler {
    shared: Arc<Shared>,
    cand_tx: mpsc::UnboundedSender<Option<RTCIceCandidateInit>>,
    track_tx: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(c) => {
                let _ = self.cand_tx.send(Some(c));
            }
            Err(e) => self.shared.local_error(format!("local candidate: {e}")),
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.cand_tx.send(None);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.shared.update(|s| {
            s.pc_state = Some(state.to_string());
            if state == RTCPeerConnectionState::Connected {
                s.connected_at.get_or_insert_with(Instant::now);
            }
        });
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.track_tx.send(track);
    }
}

fn vp8_codec() -> RTCRtpCodec {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    };
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![
            fb("goog-remb", ""),
            fb("ccm", "fir"),
            fb("nack", ""),
            fb("nack", "pli"),
        ],
    }
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn local_track(stream: &str, kind: &str, ssrc: u32, codec: RTCRtpCodec) -> TrackLocalStaticRTP {
    let rtp_kind = if kind == "video" {
        RtpCodecKind::Video
    } else {
        RtpCodecKind::Audio
    };
    TrackLocalStaticRTP::new(MediaStreamTrack::new(
        stream.to_owned(),
        format!("{stream}-{kind}"),
        kind.to_owned(),
        rtp_kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    ))
}

/// A browser-like peer connection: VP8 (96) and Opus (111), the default interceptors plus one
/// that hands PLI/FIR to the application, mDNS off, bound to `opts.udp_addr`.
async fn build_pc(
    opts: &PeerOptions,
    ice_servers: Vec<RTCIceServer>,
    handler: Arc<dyn PeerConnectionEventHandler>,
) -> anyhow::Result<Arc<dyn PeerConnection>> {
    let mut me = MediaEngine::default();
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: vp8_codec(),
            payload_type: VP8_PT,
        },
        RtpCodecKind::Video,
    )?;
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus_codec(),
            payload_type: OPUS_PT,
        },
        RtpCodecKind::Audio,
    )?;
    let registry = register_default_interceptors(Registry::new(), &mut me)?
        // Inbound RTCP stops at the end of the chain unless marked for the application.
        .with(Slot::from(14_000), KeyframeRequests::default());
    let se = SettingEngineBuilder::new()
        .with_include_loopback_candidate(opts.loopback_candidates)
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    let addr: SocketAddr = opts
        .udp_addr
        .parse()
        .with_context(|| format!("{:?} is not an ip:port", opts.udp_addr))?;
    let pc = PeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_ice_servers(ice_servers)
                .build(),
        )
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .with_setting_engine(se)
        .with_handler(handler)
        .with_udp_addrs(vec![addr])
        .build()
        .await
        .context("cannot build the peer connection")?;
    Ok(Arc::new(pc))
}

/// Passes inbound PLI/FIR to the application (`DeliverToApplication`); without it,
/// `TrackLocal::poll` never sees a keyframe request.
#[derive(Default)]
struct KeyframeRequests {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl rtc::sansio::Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let keep: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| {
                    p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>()
                })
                .cloned()
                .collect();
            if keep.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(keep);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequests {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

// ---------------------------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------------------------

struct MediaSender {
    video: Arc<TrackLocalStaticRTP>,
    audio: Arc<TrackLocalStaticRTP>,
    video_ssrc: u32,
    audio_ssrc: u32,
    opts: PeerOptions,
    flags: Arc<MediaFlags>,
    shared: Arc<Shared>,
}

impl MediaSender {
    async fn run(self) {
        let fps = self.opts.fps.clamp(1, 120);
        let mut video_tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(fps)));
        let mut audio_tick = tokio::time::interval(Duration::from_millis(20));
        video_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        audio_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let delta_size = frame_bytes(self.opts.kbps, fps);
        let every = self.opts.keyframe_every.max(1);
        let mut video = Packetizer::new(self.video_ssrc, VP8_PT);
        let mut audio = Packetizer::new(self.audio_ssrc, OPUS_PT);
        let mut frame_no: u32 = 0;
        let mut picture_id: u16 = (random_u32() & 0x7fff) as u16;
        let mut audio_no: u32 = 0;
        loop {
            tokio::select! {
                _ = video_tick.tick(), if self.opts.send_video => {
                    if self.flags.video_muted.load(Ordering::Relaxed) {
                        continue;
                    }
                    let key = frame_no.is_multiple_of(every)
                        || self.flags.want_keyframe.swap(false, Ordering::Relaxed);
                    let size = if key { delta_size * KEYFRAME_SCALE } else { delta_size };
                    let frame = make_frame(frame_no, key, size);
                    let ts = frame_no.wrapping_mul(90_000 / fps);
                    let packets = vp8_packets(&frame, picture_id);
                    let n = packets.len() as u64;
                    let mut errors = 0;
                    for (i, payload) in packets.into_iter().enumerate() {
                        let last = i as u64 + 1 == n;
                        let pkt = video.packet(payload, ts, last);
                        if self.video.write_rtp(pkt).await.is_err() {
                            errors += 1;
                        }
                    }
                    frame_no = frame_no.wrapping_add(1);
                    picture_id = (picture_id + 1) & 0x7fff;
                    self.shared.quiet(|s| {
                        s.sent.frames += 1;
                        s.sent.keyframes += u64::from(key);
                        s.sent.video_packets += n - errors;
                        s.sent.payload_bytes += frame.len() as u64;
                        s.sent.write_errors += errors;
                    });
                }
                _ = audio_tick.tick(), if self.opts.send_audio => {
                    if self.flags.audio_muted.load(Ordering::Relaxed) {
                        continue;
                    }
                    let payload = make_audio(audio_no);
                    let len = payload.len() as u64;
                    let pkt = audio.packet(payload, audio_no.wrapping_mul(960), audio_no == 0);
                    audio_no = audio_no.wrapping_add(1);
                    let ok = self.audio.write_rtp(pkt).await.is_ok();
                    self.shared.quiet(|s| {
                        if ok {
                            s.sent.audio_packets += 1;
                            s.sent.payload_bytes += len;
                        } else {
                            s.sent.write_errors += 1;
                        }
                    });
                }
                else => break,
            }
        }
    }
}

/// The bytes of a delta frame for `kbps` at `fps` (1000 kbit/s at 30 fps: 4,166 bytes).
pub fn frame_bytes(kbps: u32, fps: u32) -> usize {
    let bytes = u64::from(kbps) * 1000 / 8 / u64::from(fps.max(1));
    (bytes as usize).max(32)
}

/// The RTP packets per second a peer sends for `opts` (video and audio, unmuted).
pub fn packets_per_second(opts: &PeerOptions) -> f64 {
    let fps = opts.fps.clamp(1, 120);
    let chunk = MAX_RTP_PAYLOAD - VP8_DESCRIPTOR_BYTES;
    let delta = frame_bytes(opts.kbps, fps).div_ceil(chunk) as f64;
    let key = (frame_bytes(opts.kbps, fps) * KEYFRAME_SCALE).div_ceil(chunk) as f64;
    let every = f64::from(opts.keyframe_every.max(1));
    let video = f64::from(fps) * ((every - 1.0) * delta + key) / every;
    let audio = 50.0;
    f64::from(u8::from(opts.send_video)) * video + f64::from(u8::from(opts.send_audio)) * audio
}

/// Numbers the RTP packets of one stream (random first sequence number and timestamp
/// offset, as a browser does).
struct Packetizer {
    ssrc: u32,
    payload_type: u8,
    seq: u16,
    ts_offset: u32,
}

impl Packetizer {
    fn new(ssrc: u32, payload_type: u8) -> Packetizer {
        Packetizer {
            ssrc,
            payload_type,
            seq: random_u32() as u16,
            ts_offset: random_u32(),
        }
    }

    fn packet(&mut self, payload: Bytes, timestamp: u32, marker: bool) -> rtc::rtp::Packet {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                marker,
                payload_type: self.payload_type,
                sequence_number: seq,
                timestamp: self.ts_offset.wrapping_add(timestamp),
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload,
        }
    }
}

/// A synthetic VP8 frame: a real frame header (RFC 6386 §9.1: the 3-byte frame tag — key or
/// inter frame, version 0, shown, first-partition size — and on keyframes the start code
/// `9d 01 2a` and the 14-bit width and height), then the frame number and a filler the
/// receiver checks byte for byte.
pub fn make_frame(n: u32, key: bool, size: usize) -> Bytes {
    let size = size.max(20);
    let mut b = BytesMut::with_capacity(size);
    let first_part = ((size - 10) as u32) & 0x7ffff;
    let tag: u32 = u32::from(!key) | (1 << 4) | (first_part << 5);
    b.put_slice(&tag.to_le_bytes()[..3]);
    if key {
        b.put_slice(&[0x9d, 0x01, 0x2a]);
        b.put_u16_le(WIDTH);
        b.put_u16_le(HEIGHT);
    }
    b.put_u32_le(n);
    let start = b.len();
    for j in start..size {
        b.put_u8(filler(n, j));
    }
    b.freeze()
}

fn filler(n: u32, j: usize) -> u8 {
    (n as usize).wrapping_mul(31).wrapping_add(j) as u8
}

/// Checks a reassembled frame: `Some(is_keyframe)` if intact, `None` if not.
pub fn check_frame(d: &[u8]) -> Option<bool> {
    let tag = d.get(..3)?;
    let key = tag[0] & 1 == 0;
    let version = (tag[0] >> 1) & 7;
    let shown = tag[0] & 0x10 != 0;
    let first_part = (u32::from(tag[0]) | u32::from(tag[1]) << 8 | u32::from(tag[2]) << 16) >> 5;
    if !shown || version != 0 || first_part as usize + 10 != d.len() {
        return None;
    }
    let mut off = 3;
    if key {
        if d.get(3..6)? != [0x9d, 0x01, 0x2a] {
            return None;
        }
        let w = u16::from_le_bytes([*d.get(6)?, *d.get(7)?]) & 0x3fff;
        let h = u16::from_le_bytes([*d.get(8)?, *d.get(9)?]) & 0x3fff;
        if (w, h) != (WIDTH, HEIGHT) {
            return None;
        }
        off = 10;
    }
    let n = u32::from_le_bytes(d.get(off..off + 4)?.try_into().ok()?);
    let body = d.get(off + 4..)?;
    body.iter()
        .enumerate()
        .all(|(i, &x)| x == filler(n, off + 4 + i))
        .then_some(key)
}

/// Splits a frame into RTP payloads of at most [`MAX_RTP_PAYLOAD`] bytes, each behind the
/// VP8 payload descriptor (RFC 7741 §4.2: X=1, S on the first, PID 0; I=1 with a 15-bit
/// picture id).
fn vp8_packets(frame: &[u8], picture_id: u16) -> Vec<Bytes> {
    let chunk = MAX_RTP_PAYLOAD - VP8_DESCRIPTOR_BYTES;
    frame
        .chunks(chunk)
        .enumerate()
        .map(|(i, part)| {
            let mut b = BytesMut::with_capacity(VP8_DESCRIPTOR_BYTES + part.len());
            b.put_u8(0x80 | if i == 0 { 0x10 } else { 0 });
            b.put_u8(0x80);
            b.put_u16(0x8000 | (picture_id & 0x7fff));
            b.put_slice(part);
            b.freeze()
        })
        .collect()
}

fn make_audio(n: u32) -> Bytes {
    let mut b = BytesMut::with_capacity(OPUS_PACKET_BYTES);
    b.put_u8(OPUS_TOC);
    for j in 1..OPUS_PACKET_BYTES {
        b.put_u8(filler(n, j));
    }
    b.freeze()
}

// ---------------------------------------------------------------------------------------------
// Receiving
// ---------------------------------------------------------------------------------------------

/// Counts a remote track's packets and losses, reassembles and checks its frames.
async fn receive(track: Arc<dyn TrackRemote>, shared: Arc<Shared>) {
    let kind = match track.kind().await {
        RtpCodecKind::Video => MediaKind::Video,
        _ => MediaKind::Audio,
    };
    let stream_id = track.stream_id().await;
    let participant = stream_id
        .strip_prefix("participant-")
        .unwrap_or(&stream_id)
        .to_owned();
    let track_id = track.track_id().await;
    let ssrc = track.ssrcs().await.first().copied().unwrap_or_default();
    let idx = shared.update(|s| {
        s.remote.push(RemoteTrack {
            participant,
            stream_id,
            track_id,
            kind,
            ssrc,
            packets: 0,
            lost: 0,
            frames: 0,
            keyframes: 0,
            bad: 0,
            undecodable: 0,
            first_packet_at: None,
            first_frame_at: None,
            ended: false,
        });
        s.remote.len() - 1
    });
    let mut seqs = SeqCounter::default();
    let mut asm = Vp8Assembler::default();
    let mut have_key = false;
    let mut last_pli: Option<Instant> = None;
    while let Some(evt) = track.poll().await {
        let pkt = match evt {
            TrackRemoteEvent::OnRtpPacket(pkt) => pkt,
            TrackRemoteEvent::OnEnded => break,
            _ => continue,
        };
        let now = Instant::now();
        seqs.push(pkt.header.sequence_number);
        let lost = seqs.lost();
        let (mut frames, mut keys, mut bad, mut undecodable) = (0, 0, 0, 0);
        let mut first_frame = false;
        match kind {
            MediaKind::Audio => {
                if pkt.payload.first() == Some(&OPUS_TOC) {
                    first_frame = true;
                    frames = 1;
                } else {
                    bad = 1;
                }
            }
            MediaKind::Video => {
                if let Some(frame) = asm.push(&pkt) {
                    match check_frame(&frame) {
                        Some(true) => {
                            have_key = true;
                            first_frame = true;
                            frames = 1;
                            keys = 1;
                        }
                        Some(false) if have_key => {
                            first_frame = true;
                            frames = 1;
                        }
                        Some(false) => undecodable = 1,
                        None => bad = 1,
                    }
                }
                // A decoder that lost a packet needs a keyframe before it can go on, and one
                // that has none yet asks for it (a PLI at most every 500 ms, as browsers do).
                if asm.take_gap() || bad > 0 {
                    have_key = false;
                }
                if !have_key
                    && last_pli.is_none_or(|t| now.duration_since(t) > Duration::from_millis(500))
                {
                    last_pli = Some(now);
                    let pli = PictureLossIndication {
                        sender_ssrc: 0,
                        media_ssrc: ssrc,
                    };
                    let _ = track.write_rtcp(vec![Box::new(pli)]).await;
                }
            }
        }
        let notify = first_frame || bad > 0;
        let apply = |s: &mut PeerSnapshot| {
            if let Some(t) = s.remote.get_mut(idx) {
                t.packets += 1;
                t.lost = lost;
                t.frames += frames;
                t.keyframes += keys;
                t.bad += bad;
                t.undecodable += undecodable;
                t.first_packet_at.get_or_insert(now);
                if first_frame {
                    t.first_frame_at.get_or_insert(now);
                }
            }
        };
        if notify {
            shared.update(apply);
        } else {
            shared.quiet(apply);
        }
    }
    shared.update(|s| {
        if let Some(t) = s.remote.get_mut(idx) {
            t.ended = true;
        }
    });
}

/// Received and lost packets of one SSRC by sequence number, across the 16-bit wrap:
/// lost = (highest − lowest + 1) − received, counted from the first packet received.
#[derive(Debug, Default, Clone)]
pub struct SeqCounter {
    lowest: i64,
    highest: i64,
    received: u64,
    started: bool,
}

impl SeqCounter {
    /// One packet.
    pub fn push(&mut self, seq: u16) {
        if !self.started {
            self.started = true;
            self.lowest = i64::from(seq);
            self.highest = i64::from(seq);
        } else {
            // The signed distance from the highest so far decides the extended number.
            let delta = i64::from(seq.wrapping_sub(self.highest as u16) as i16);
            let ext = self.highest + delta;
            self.highest = self.highest.max(ext);
            self.lowest = self.lowest.min(ext);
        }
        self.received += 1;
    }

    /// Packets received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets expected from the first to the highest sequence number.
    pub fn expected(&self) -> u64 {
        if self.started {
            (self.highest - self.lowest + 1) as u64
        } else {
            0
        }
    }

    /// Expected − received (0 when duplicates outnumber the gaps).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }
}

/// In-order VP8 frame reassembly (RFC 7741): a frame starts at S=1/PID=0 and ends at the RTP
/// marker; a sequence gap drops the frame in progress.
#[derive(Default)]
struct Vp8Assembler {
    buf: BytesMut,
    next_seq: Option<u16>,
    in_frame: bool,
    gap: bool,
}

impl Vp8Assembler {
    fn push(&mut self, pkt: &rtc::rtp::Packet) -> Option<Bytes> {
        use rtc::rtp::packetizer::Depacketizer as _;
        let seq = pkt.header.sequence_number;
        if self.next_seq.is_some_and(|n| n != seq) {
            self.gap = true;
            self.in_frame = false;
            self.buf.clear();
        }
        self.next_seq = Some(seq.wrapping_add(1));
        let mut d = rtc::rtp::codec::vp8::Vp8Packet::default();
        let payload = d.depacketize(&pkt.payload).ok()?;
        if d.s == 1 && d.pid == 0 {
            self.buf.clear();
            self.in_frame = true;
        }
        if !self.in_frame {
            return None;
        }
        self.buf.extend_from_slice(&payload);
        if pkt.header.marker {
            self.in_frame = false;
            return Some(self.buf.split().freeze());
        }
        None
    }

    /// Whether a gap happened since the last call.
    fn take_gap(&mut self) -> bool {
        std::mem::take(&mut self.gap)
    }
}

/// A random u32 from the standard library's per-process hasher keys (SSRCs, first sequence
/// numbers: nothing secret).
fn random_u32() -> u32 {
    use std::hash::{BuildHasher as _, Hasher as _};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() as u32) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_packetization_and_reassembly() {
        let mut pz = Packetizer::new(7, VP8_PT);
        pz.seq = 65_534; // across the wrap
        let mut asm = Vp8Assembler::default();
        let mut seqs = SeqCounter::default();
        for (n, key) in [(0u32, true), (1, false), (2, false)] {
            let size = if key {
                3 * frame_bytes(1000, 30)
            } else {
                frame_bytes(1000, 30)
            };
            let frame = make_frame(n, key, size);
            let payloads = vp8_packets(&frame, 5);
            assert!(payloads.iter().all(|p| p.len() <= MAX_RTP_PAYLOAD));
            let count = payloads.len();
            let mut out = None;
            for (i, p) in payloads.into_iter().enumerate() {
                let pkt = pz.packet(p, n * 3000, i + 1 == count);
                seqs.push(pkt.header.sequence_number);
                out = asm.push(&pkt).or(out);
            }
            assert_eq!(check_frame(&out.expect("a frame")), Some(key));
        }
        assert_eq!(seqs.lost(), 0);
        assert_eq!(frame_bytes(1000, 30), 4166);
        // 4 packets a delta frame, 11 a keyframe (1 in 90), plus 50 audio packets.
        let pps = packets_per_second(&PeerOptions::default());
        assert!((pps - (30.0 * (89.0 * 4.0 + 11.0) / 90.0 + 50.0)).abs() < 1e-9);
    }

    #[test]
    fn damaged_frames_fail_the_check() {
        let frame = make_frame(9, true, 4000);
        let mut bad = frame.to_vec();
        bad[2000] ^= 1;
        assert_eq!(check_frame(&bad), None);
        assert_eq!(check_frame(&frame[..3000]), None);
        assert_eq!(check_frame(&[]), None);
        assert_eq!(check_frame(&make_frame(3, false, 100)), Some(false));
    }

    #[test]
    fn losses_are_counted_across_the_wrap_and_reordering() {
        let mut c = SeqCounter::default();
        for s in [65_533u16, 65_534, 0, 1, 65_535, 4] {
            c.push(s);
        }
        // 65533..=4 is 8 packets; 2 and 3 are missing.
        assert_eq!((c.expected(), c.received(), c.lost()), (8, 6, 2));
    }

    #[test]
    fn tracks_a_server_offer_no_longer_sends_are_found() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\n\
                   a=msid:sim-1 sim-1-audio\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
                   a=sendonly\r\na=msid:participant-p2 v2\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n\
                   a=msid:participant-p3 v3\r\nm=audio 0 UDP/TLS/RTP/SAVPF 111\r\n\
                   a=sendonly\r\na=msid:participant-p3 a3\r\n";
        let s = sending_tracks(sdp);
        assert!(s.contains(&("participant-p2".into(), "v2".into())));
        assert!(s.contains(&("sim-1".into(), "sim-1-audio".into())));
        assert_eq!(s.len(), 2, "{s:?}");
    }

    #[test]
    fn join_links_yield_their_token() {
        assert_eq!(link_token("http://h/visit/vis_1#abc.def"), Some("abc.def"));
        assert_eq!(link_token("http://h/visit/vis_1"), None);
        assert_eq!(
            signal_url("http://127.0.0.1:8080/", "vis_1").unwrap(),
            "ws://127.0.0.1:8080/api/v1/visits/vis_1/signal"
        );
    }
}
