//! The readings' schema on PostgreSQL, in a schema of its own (`readings`), beside the
//! registry's tables: one ordered list of steps, applied by [`crate::pg::migrate`] with its
//! version in `vigil_store_schema`.
//!
//! `readings.observations` is partitioned by the reading's time, one partition per calendar
//! month (UTC), made when first needed ([`super::partitions`]); a default partition holds
//! readings whose month has none (far in the past or the future). The primary key includes the
//! partition key, as PostgreSQL requires, and is the reading's identity: (device, metric, time).

/// The table that holds this schema's version.
pub(super) const VERSION_TABLE: &str = "vigil_store_schema";

/// The steps, in order; never edit one that has shipped, add another.
pub(super) const STEPS: &[&str] = &[
    // 1: observations, dead letters, the outward spools.
    "CREATE SCHEMA readings;
     CREATE TABLE readings.observations (
        device_id   text             NOT NULL,
        metric      smallint         NOT NULL,
        time_ms     bigint           NOT NULL,
        patient_id  text             NOT NULL,
        value       double precision NOT NULL,
        received_ms bigint           NOT NULL,
        PRIMARY KEY (device_id, metric, time_ms)
     ) PARTITION BY RANGE (time_ms);
     CREATE INDEX observations_by_patient ON readings.observations (patient_id, metric, time_ms);
     CREATE TABLE readings.observations_default PARTITION OF readings.observations DEFAULT;
     CREATE TABLE readings.dead_letters (
        id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        time_ms    bigint NOT NULL,
        device_id  text   NOT NULL,
        patient_id text,
        topic      text   NOT NULL,
        reason     text   NOT NULL,
        payload    bytea  NOT NULL
     );
     CREATE INDEX dead_letters_by_device ON readings.dead_letters (device_id, id);
     CREATE INDEX dead_letters_by_time ON readings.dead_letters (time_ms);
     CREATE TABLE readings.influx_outbox (
        id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        line text NOT NULL
     );
     CREATE TABLE readings.influx_rejected (
        id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        time_ms bigint NOT NULL,
        line    text   NOT NULL,
        reason  text   NOT NULL
     );
     CREATE TABLE readings.fhir_spool (
        id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        device_id text     NOT NULL,
        metric    smallint NOT NULL,
        time_ms   bigint   NOT NULL
     );",
    // 2: each reading's alert partition and the transaction that wrote it, so that the
    // instance evaluating a partition reads its readings in commit order with no gap
    // (`super::feed`). Readings from before have neither and are never fed.
    "ALTER TABLE readings.observations ADD COLUMN part smallint;
     ALTER TABLE readings.observations ADD COLUMN tx xid8;
     ALTER TABLE readings.observations ALTER COLUMN tx SET DEFAULT pg_current_xact_id();
     CREATE INDEX observations_by_part_tx ON readings.observations (part, tx);",
];
