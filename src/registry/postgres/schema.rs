//! The registry's schema on PostgreSQL, as ordered migration steps ([`super::migrate`] applies
//! those past the database's version, each in its own transaction). Append only: a step once
//! released is never changed.
//!
//! Types: times are Unix milliseconds (`bigint`), hashes `bytea`, ids Vigil's own text ids or
//! identity columns where the order of insertion matters (the audit chain).

/// The steps, oldest first.
pub const STEPS: &[&str] = &[
    // 1: the audit trail, a hash chain in id order.
    "CREATE TABLE audit (
        id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        time_ms    bigint NOT NULL,
        actor      text   NOT NULL,
        action     text   NOT NULL,
        patient_id text,
        target     text   NOT NULL,
        remote     text   NOT NULL,
        prev_hash  bytea  NOT NULL,
        hash       bytea  NOT NULL
     );
     CREATE INDEX audit_by_patient ON audit (patient_id, time_ms);
     CREATE INDEX audit_by_time ON audit (time_ms);",
];
