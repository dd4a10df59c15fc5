//! Vigil: a telehealth remote-monitoring gateway.
//!
//! A reading's way through the crate, by module:
//!
//! 1. [`ingest`] — a device publishes over MQTT to the embedded endpoint
//!    ([`ingest::embedded`]); the topic names the device ([`ingest::topic`]).
//! 2. [`decode`] — pure decoders turn the payload (vigil-json, SenML, Bluetooth GATT bytes)
//!    into raw readings.
//! 3. [`ingest::pipeline`] — each raw reading is checked against the device's profile
//!    ([`registry`]) and the metric table ([`domain`]): unit conversion, plausible range, time.
//!    A refused payload becomes a dead letter with its reason.
//! 4. [`store`] — one writer thread commits observations in batches (group commit, fsync);
//!    only then is the publish acknowledged to the device.
//! 5. [`crm`] — after the commit, the alert engine ([`alerts`]) judges each patient's care plan
//!    on the new readings; alerts, the patient's timeline and the outbox are written in one
//!    transaction, and the outbox workers deliver events to FHIR and webhooks.
//! 6. [`web`] — the API reads observations, alerts and the record back; every read is audited.
//!
//! [`notify`] sends alerts to people by email and SMS, saying no more than it must.
//! [`agp`] computes a patient's Ambulatory Glucose Profile from their glucose readings (pure).
//!
//! [`app`] wires these together; [`config`] holds the settings; [`data_dir`] keeps the data
//! directory private and locked to one gateway; [`telemetry`] the logs and metrics;
//! [`tls_reload`] keeps TLS certificates current; [`video`] relays video visits; [`terminal`]
//! reads a password without echo for the command line; [`slots`] caps each listener's
//! connections and [`fd_budget`] fits the caps into the process's file-descriptor limit.

pub mod agp;
pub mod alerts;
pub mod app;
pub mod backup;
pub mod billing;
pub mod cluster;
pub mod config;
pub mod crm;
pub mod data_dir;
pub mod db_migrate;
pub mod decode;
pub mod domain;
pub mod fd_budget;
pub mod ingest;
pub mod notify;
pub mod oncall;
pub mod pg;
pub mod population;
pub mod registry;
pub mod slots;
pub mod store;
pub mod telemetry;
pub mod terminal;
pub mod throttle;
pub mod tls_reload;
pub mod video;
pub mod web;
pub mod worklist;
