//! `vigil::decode::decode_vigil_json` on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::decode::decode_vigil_json;
use vigil_fuzz::check_decoded;

fuzz_target!(|data: &[u8]| {
    check_decoded(&decode_vigil_json(data), false, false);
});
