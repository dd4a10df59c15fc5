//! `vigil::decode::decode_gatt` on arbitrary bytes.
//!
//! Input: byte 0 selects the characteristic, `GATT_CHARACTERISTICS[b0 % 8]`, where the
//! eighth slot is an unsupported UUID (0x2a00) for the "no decoder" path; the rest of the input
//! is the characteristic's value bytes (flags first).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::decode::{GATT_CHARACTERISTICS, decode_gatt};
use vigil_fuzz::check_decoded;

/// Not a health characteristic (0x2A00 is Device Name): must be refused, not decoded.
const UNSUPPORTED: u16 = 0x2a00;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let slot = usize::from(selector) % (GATT_CHARACTERISTICS.len() + 1);
    let uuid = GATT_CHARACTERISTICS
        .get(slot)
        .copied()
        .unwrap_or(UNSUPPORTED);
    let result = decode_gatt(uuid, payload);
    if uuid == UNSUPPORTED {
        assert!(
            result.is_err(),
            "decoded unsupported characteristic {uuid:04x}"
        );
    }
    check_decoded(&result, true, false);
});
