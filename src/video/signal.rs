//! The messages a participant sends on a visit's signalling socket (`docs/video.md`), parsed
//! without I/O, so that they can be fuzzed. The socket itself is `web::signal`.

use serde::Deserialize;
use serde_json::Value;

/// A message from a participant.
#[derive(Debug, Deserialize)]
#[allow(missing_docs)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum In {
    Join {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        name: Option<String>,
    },
    Offer {
        sdp: String,
    },
    Answer {
        sdp: String,
    },
    Candidate {
        candidate: Option<webrtc::peer_connection::RTCIceCandidateInit>,
    },
    Mute {
        #[serde(default)]
        audio: bool,
        #[serde(default)]
        video: bool,
    },
    Admit {
        participant: String,
    },
    Leave,
    End,
}

pub fn parse(text: &str) -> Result<In, String> {
    serde_json::from_str(text).map_err(|e| {
        let v: Option<Value> = serde_json::from_str(text).ok();
        match v
            .as_ref()
            .and_then(|v| v.get("type"))
            .and_then(Value::as_str)
        {
            Some(t) => format!("a {t:?} message that does not fit the protocol: {e}"),
            None => "every message is a JSON object with a \"type\"".to_string(),
        }
    })
}

/// Whether an SDP the participant sent is one the relay can take (the `webrtc` crate's parser),
/// with the parser's reason when not.
pub fn check_offer(sdp: &str) -> Result<(), String> {
    webrtc::peer_connection::RTCSessionDescription::offer(sdp.to_owned())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_or_say_why() {
        assert!(matches!(
            parse(r#"{"type":"join","token":"v1.a.b"}"#),
            Ok(In::Join {
                token: Some(_),
                name: None
            })
        ));
        assert!(matches!(
            parse(r#"{"type":"candidate","candidate":null}"#),
            Ok(In::Candidate { candidate: None })
        ));
        let c = parse(
            r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
        );
        assert!(
            matches!(c, Ok(In::Candidate { candidate: Some(ref c) }) if c.sdp_mid.as_deref() == Some("0"))
        );
        assert!(matches!(
            parse(r#"{"type":"mute","audio":true}"#),
            Ok(In::Mute {
                audio: true,
                video: false
            })
        ));
        assert!(
            parse(r#"{"type":"offer"}"#)
                .unwrap_err()
                .contains("\"offer\"")
        );
        assert!(parse("[1]").unwrap_err().contains("JSON object"));
        assert!(parse(r#"{"type":"dance"}"#).is_err());
    }
}
