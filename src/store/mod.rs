//! The time-series store: observations and dead letters, durably.
//!
//! The embedded backend is SQLite in WAL mode with `synchronous=FULL`, written by exactly one
//! thread that owns the write connection. Producers send [`Write`]s over a bounded channel;
//! the writer takes everything waiting (up to `batch_max`), commits it in one transaction
//! (group commit: one fsync for the batch) and only then answers each producer. A reading is
//! acknowledged to its device after that answer, never before.
//!
//! Observations are keyed by (device, metric, time): a redelivered reading is ignored, not
//! stored twice. Reads run on `spawn_blocking` with their own connections, never on the writer.
//!
//! It must never: acknowledge before the commit, hold a lock across an await, or buffer without
//! bound (a full channel makes producers wait, which slows the devices' acknowledgements).

mod embedded;
mod fhir_spool;
pub mod influx;

pub use embedded::{
    Committed, CommittedBatch, DeadLetter, ObservationQuery, Series, SeriesPoint, Store,
    StoreError, StoredDeadLetter, StoredObservation,
};
pub(crate) use embedded::{is_disk_full, open_db};
pub use fhir_spool::Spooled;
