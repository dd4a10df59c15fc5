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
    // 2: video visits, and the patients' timeline their start and end write to. The timeline
    // is the CRM record's table, with SQLite's columns; it is created here only if the record's
    // own step has not created it already. `visits.patient_id` references `patients (id)`
    // from step 5 on.
    "CREATE TABLE visits (
        id         text   PRIMARY KEY,
        patient_id text   NOT NULL,
        created_by text   NOT NULL,
        created_ms bigint NOT NULL,
        expires_ms bigint NOT NULL,
        started_ms bigint,
        ended_ms   bigint,
        ended_by   text
     );
     CREATE INDEX visits_by_patient ON visits (patient_id, created_ms);
     CREATE TABLE IF NOT EXISTS timeline (
        id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        patient_id text   NOT NULL,
        time_ms    bigint NOT NULL,
        kind       text   NOT NULL,
        data       text   NOT NULL
     );
     CREATE INDEX IF NOT EXISTS timeline_by_patient ON timeline (patient_id, time_ms);",
    // 3: API tokens (the token store), kept as the hash of their secret. `username` references
    // `users (username)` from step 4 on, as on SQLite.
    "CREATE TABLE api_tokens (
        id          text   PRIMARY KEY,
        token_hash  bytea  NOT NULL UNIQUE,
        username    text   NOT NULL,
        label       text   NOT NULL,
        scope       text   NOT NULL,
        created_ms  bigint NOT NULL,
        expires_ms  bigint NOT NULL,
        revoked_ms  bigint
     );
     CREATE INDEX api_tokens_by_user ON api_tokens (username);",
    // 4: access (the access store): users, care teams and their members, sign-in sessions,
    // with SQLite's columns. Usernames are unique whatever their case (a unique index on
    // `lower(username)`; they are ASCII). The default care team exists from the start, as
    // SQLite's version 8 makes it. API tokens now reference their user, as on SQLite.
    "CREATE TABLE users (
        username      text   PRIMARY KEY,
        password_hash text   NOT NULL,
        role          text   NOT NULL,
        created_ms    bigint NOT NULL
     );
     CREATE UNIQUE INDEX users_name_ignores_case ON users (lower(username));
     CREATE TABLE teams (
        id         text   PRIMARY KEY,
        name       text   NOT NULL,
        created_ms bigint NOT NULL
     );
     INSERT INTO teams (id, name, created_ms)
        VALUES ('default', 'Default care team', (extract(epoch FROM now()) * 1000)::bigint);
     CREATE TABLE team_members (
        team_id  text NOT NULL REFERENCES teams (id),
        username text NOT NULL REFERENCES users (username),
        PRIMARY KEY (team_id, username)
     );
     CREATE INDEX team_members_by_user ON team_members (username);
     CREATE TABLE sessions (
        token_hash bytea  PRIMARY KEY,
        username   text   NOT NULL REFERENCES users (username),
        csrf       text   NOT NULL,
        created_ms bigint NOT NULL,
        expires_ms bigint NOT NULL
     );
     CREATE INDEX sessions_by_user ON sessions (username);
     ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_username_fkey
        FOREIGN KEY (username) REFERENCES users (username);",
    // 5: patients and their devices (the patient and device stores), with SQLite's columns.
    // A patient's MRN is unique where set and their care team names a team (step 4); a device
    // belongs to a patient and keeps only the hashes of its secret. Visits now reference their
    // patient, as on SQLite.
    "CREATE TABLE patients (
        id         text   PRIMARY KEY,
        name       text   NOT NULL,
        birth_date text,
        created_ms bigint NOT NULL,
        details    text,
        mrn        text   UNIQUE,
        care_team  text   NOT NULL DEFAULT 'default' REFERENCES teams (id)
     );
     CREATE INDEX patients_by_team ON patients (care_team);
     CREATE TABLE devices (
        id           text     PRIMARY KEY,
        patient_id   text     NOT NULL REFERENCES patients (id),
        profile      text     NOT NULL,
        secret_hash  bytea    NOT NULL,
        created_ms   bigint   NOT NULL,
        revoked      boolean  NOT NULL DEFAULT false,
        online       boolean  NOT NULL DEFAULT false,
        last_seen_ms bigint,
        battery      smallint,
        broker_hash  text
     );
     CREATE INDEX devices_by_patient ON devices (patient_id);
     ALTER TABLE visits ADD CONSTRAINT visits_patient_id_fkey
        FOREIGN KEY (patient_id) REFERENCES patients (id);",
];
