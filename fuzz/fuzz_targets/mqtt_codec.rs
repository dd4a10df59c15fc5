//! The device endpoint's MQTT packet reader, `vigil::ingest::codec::{read_connect, read}`, on
//! arbitrary bytes from a client.
//!
//! The input is read three ways: as a connection (CONNECT first, then packets in the version
//! the CONNECT named), and as a stream of packets after CONNECT for MQTT 3.1.1 and for
//! MQTT 5 (so the fuzzer reaches every packet type without first building a valid CONNECT).
//! Packets are read until the reader asks for more bytes (`Ok(None)`) or refuses them.
//!
//! Besides not panicking: a packet read consumes bytes (the endpoint calls `read` again at
//! once after a packet, so one that consumed nothing would spin forever), and `Ok(None)`
//! consumes none (the bytes are still needed once the rest arrives).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use vigil::ingest::codec::{Version, read, read_connect};

/// The endpoint's default `mqtt.max_packet_bytes`.
const MAX_PACKET: usize = 256 * 1024;

fn read_packets(version: Version, buf: &mut BytesMut) {
    loop {
        let before = buf.len();
        match read(version, buf, MAX_PACKET) {
            Ok(Some(packet)) => {
                assert!(
                    buf.len() < before,
                    "{version:?} packet read without consuming input: {packet:?}"
                );
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "{version:?}: Ok(None) consumed input");
                return;
            }
            Err(e) => {
                let _ = e.to_string();
                return;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let before = buf.len();
    match read_connect(&mut buf, MAX_PACKET) {
        Ok(Some(connect)) => {
            assert!(buf.len() < before, "CONNECT read without consuming input");
            read_packets(connect.version, &mut buf);
        }
        Ok(None) => assert_eq!(buf.len(), before, "CONNECT: Ok(None) consumed input"),
        Err(e) => {
            let _ = e.to_string();
        }
    }

    for version in [Version::V311, Version::V5] {
        read_packets(version, &mut BytesMut::from(data));
    }
});
