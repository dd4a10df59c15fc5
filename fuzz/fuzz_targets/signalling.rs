//! `vigil::video::signal::parse` on arbitrary UTF-8 (a visit's signalling socket takes text
//! messages of up to 64 KiB from anyone holding a join link), and the `webrtc` crate's SDP parser
//! on every offer or answer that parses, as the relay would run it.
//!
//! Besides not panicking: a message that parses has a known `type`, and an error says why in
//! words.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::video::signal::{In, check_offer, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Ok(In::Offer { sdp } | In::Answer { sdp }) => {
            if let Err(why) = check_offer(&sdp) {
                assert!(!why.is_empty());
            }
        }
        Ok(_) => {}
        Err(why) => assert!(!why.is_empty()),
    }
    // The raw text as an SDP too: the parser sees what a client puts in `sdp`.
    let _ = check_offer(text);
});
