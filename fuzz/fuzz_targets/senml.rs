//! `vigil::decode::decode_senml` on arbitrary bytes.
//!
//! The whole input is the payload, so the seeds stay plain SenML JSON. Each input is decoded
//! twice: with a realistic receipt time, and with an edge-case one picked by the input's
//! length (the fuzzer changes it freely, e.g. with trailing whitespace), which drives the
//! relative-time arithmetic (`now + bt + t`) to its limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::decode::decode_senml;
use vigil_fuzz::{MAX_MS, MIN_MS, NOW_MS, check_decoded};

const EDGE_NOWS: [i64; 8] = [
    0,
    -1,
    i64::MIN,
    i64::MAX,
    MIN_MS,
    MAX_MS,
    MAX_MS - 268_435_455_999, // relative times just reach the end of year 9999
    NOW_MS + 999,
];

fuzz_target!(|data: &[u8]| {
    check_decoded(&decode_senml(data, NOW_MS), false, true);
    let edge = EDGE_NOWS[data.len() % EDGE_NOWS.len()];
    check_decoded(&decode_senml(data, edge), false, true);
});
