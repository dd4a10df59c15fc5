//! vigil-sim: virtual patients and their devices, for Vigil's tests, demos and benchmarks.
//!
//! Pure parts, deterministic for a seed:
//! - [`rng`]: a small seeded random number generator (SplitMix64) and normal noise;
//! - [`physio`]: a patient's vital signs over time — baselines, circadian rhythm, correlated
//!   signals, measurement noise — and how each scenario changes them;
//! - [`scenario`]: named clinical stories with the alerts Vigil should raise and when;
//! - [`device`]: what each device profile measures, how often, its battery and drop-outs;
//! - [`payload`]: the bytes a device sends — vigil-json, SenML, Bluetooth GATT — and
//!   malformed payloads Vigil must refuse;
//! - [`history`]: a month of a patient's past — an adherence persona, the days they measured,
//!   each reading with its own time, the care team's time with them.
//!
//! The shells: [`provision`] (patients and devices through the HTTP API), [`fleet`] (one MQTT
//! connection per device, real or accelerated time), [`backfill`] (a month of history sent
//! through the API and MQTT) and [`bench`] (Vigil measured end to end beside a plain
//! `mosquitto_sub` and a typical Python subscriber).
//!
//! Trend rules measured: [`trends`] (the scenarios with their ground truth, and the report's
//! arithmetic; the gateway's `examples/trends.rs` replays them through Vigil's alert engine).
//!
//! Video visits: [`visit`] (a participant on the signalling WebSocket and a WebRTC peer
//! connection to Vigil's relay, sending synthetic VP8 and Opus and checking what it receives)
//! and [`visit_load`] (`vigil-sim visits`: concurrent 1:1 visits as load).

pub mod backfill;
pub mod bench;
pub mod bench_cluster;
pub mod device;
pub mod fleet;
pub mod history;
pub mod payload;
pub mod peers;
pub mod physio;
pub mod provision;
pub mod rng;
pub mod scenario;
pub mod trends;
pub mod visit;
pub mod visit_load;
