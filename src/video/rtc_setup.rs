//! How the relay's peer connections are built: VP8 and Opus only, the default interceptors
//! (NACK both ways, RTCP reports, TWCC) plus one that hands keyframe requests to the relay, mDNS
//! off, and a UDP port from Vigil's own range for each connection.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, Registry, Slot, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, SettingEngineBuilder, register_default_interceptors,
};

/// VP8's payload type (the browsers' usual one).
pub const VP8_PT: u8 = 96;
/// Opus's payload type.
pub const OPUS_PT: u8 = 111;

fn feedback(typ: &str, parameter: &str) -> RTCPFeedback {
    RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    }
}

/// VP8 at 90 kHz with keyframe requests (PLI, FIR), NACK and REMB.
pub fn vp8_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![
            feedback("goog-remb", ""),
            feedback("ccm", "fir"),
            feedback("nack", ""),
            feedback("nack", "pli"),
        ],
    }
}

/// Opus, stereo at 48 kHz, with in-band FEC.
pub fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// The media engine and interceptors every relay connection gets.
fn media_engine() -> webrtc::error::Result<(MediaEngine, Registry)> {
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
        // Inbound RTCP stops at the end of the chain unless an interceptor marks it
        // `DeliverToApplication`: without this the relay never sees a subscriber's PLI.
        .with(Slot::from(14_000), KeyframeRequests::default());
    Ok((me, registry))
}

/// Builds the relay's peer connections.
#[derive(Debug)]
pub struct RtcSetup {
    bind_ip: IpAddr,
    ports: std::ops::RangeInclusive<u16>,
    next: AtomicU32,
    public_ips: Vec<IpAddr>,
}

impl RtcSetup {
    pub fn new(
        bind_ip: IpAddr,
        ports: std::ops::RangeInclusive<u16>,
        public_ips: Vec<IpAddr>,
    ) -> RtcSetup {
        RtcSetup {
            bind_ip,
            ports,
            next: AtomicU32::new(0),
            public_ips,
        }
    }

    /// A new peer connection on the next free port of the range (a port in use fails the
    /// build; the next is tried, each port at most once).
    pub async fn build(
        &self,
        handler: Arc<dyn PeerConnectionEventHandler>,
    ) -> webrtc::error::Result<Arc<dyn PeerConnection>> {
        let first = u32::from(*self.ports.start());
        let span = u32::from(*self.ports.end()) - first + 1;
        let mut last_err = None;
        for _ in 0..span.min(64) {
            let port = first + self.next.fetch_add(1, Ordering::Relaxed) % span;
            let (me, registry) = media_engine()?;
            let mut se = SettingEngineBuilder::new()
                // A server cannot resolve a browser's .local names, and the default mode opens a
                // multicast socket per connection.
                .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
                .with_include_loopback_candidate(self.bind_ip.is_loopback());
            if !self.public_ips.is_empty() {
                se = se.with_nat_1to1_ips(
                    self.public_ips.iter().map(ToString::to_string).collect(),
                    rtc::peer_connection::transport::RTCIceCandidateType::Host,
                );
            }
            let addr = std::net::SocketAddr::new(self.bind_ip, port as u16);
            let built = PeerConnectionBuilder::new()
                .with_configuration(RTCConfigurationBuilder::new().build())
                .with_media_engine(me)
                .with_interceptor_registry(registry)
                .with_setting_engine(se.build())
                .with_handler(handler.clone())
                .with_udp_addrs(vec![addr])
                .build()
                .await;
            match built {
                Ok(pc) => return Ok(Arc::new(pc)),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "relay port unavailable; trying the next");
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| {
            webrtc::error::Error::Other("no UDP port free in video.udp_ports".into())
        }))
    }
}

/// Passes inbound PLI/FIR to the application (marked `DeliverToApplication`); every other inbound
/// RTCP packet has been consumed by the interceptors before this one (it is last in the chain).
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
