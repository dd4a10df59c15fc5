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
    // 6: the CRM record (the record and outbox stores): care plans, alerts (one unresolved per
    // patient and rule, a partial unique index that opening an alert relies on under
    // concurrency), and the outbox, with SQLite's columns and references (a care plan names its
    // patient; alerts and outbox rows keep the patient's id as SQLite does, without a key). The
    // timeline is the record's table too; step 2 created it and its index already, so nothing
    // of it is missing here. Alert ids are Vigil's text ids; outbox ids an identity column (the
    // events' order). JSON stays text: the outbox payload is the exact body delivered (and
    // signed), which jsonb would re-encode.
    "CREATE TABLE care_plans (
        patient_id text   PRIMARY KEY REFERENCES patients (id),
        plan       text   NOT NULL,
        updated_ms bigint NOT NULL,
        updated_by text   NOT NULL
     );
     CREATE TABLE alerts (
        id              text    PRIMARY KEY,
        patient_id      text    NOT NULL,
        rule_id         text    NOT NULL,
        kind            text    NOT NULL,
        severity        text    NOT NULL,
        status          text    NOT NULL,
        message         text    NOT NULL,
        opened_ms       bigint  NOT NULL,
        trigger_json    text,
        escalations     integer NOT NULL DEFAULT 0,
        escalated_ms    bigint  NOT NULL,
        acknowledged_ms bigint,
        acknowledged_by text,
        ack_note        text,
        resolved_ms     bigint,
        resolved_by     text,
        resolve_note    text
     );
     CREATE UNIQUE INDEX alerts_one_unresolved ON alerts (patient_id, rule_id)
        WHERE status <> 'resolved';
     CREATE INDEX alerts_by_time ON alerts (opened_ms);
     CREATE INDEX alerts_by_patient ON alerts (patient_id, opened_ms);
     CREATE TABLE outbox (
        id                    bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        sink                  text    NOT NULL,
        event_id              text    NOT NULL,
        event_type            text    NOT NULL,
        patient_id            text    NOT NULL,
        payload               text    NOT NULL,
        created_ms            bigint  NOT NULL,
        status                text    NOT NULL DEFAULT 'pending',
        attempts              integer NOT NULL DEFAULT 0,
        next_ms               bigint  NOT NULL,
        done_ms               bigint,
        last_error            text,
        retried_ms            bigint,
        attempts_before_retry integer NOT NULL DEFAULT 0,
        UNIQUE (sink, event_id)
     );
     CREATE INDEX outbox_pending ON outbox (sink, status, id);
     CREATE INDEX outbox_by_patient ON outbox (patient_id, sink, status);",
    // 7: leases on pieces of work (see `registry::lease`), as SQLite's version 12.
    "CREATE TABLE leases (
        name       text   PRIMARY KEY,
        holder     text   NOT NULL,
        epoch      bigint NOT NULL,
        expires_ms bigint NOT NULL
     );",
    // 8: which instance holds an online device's connection, as SQLite's version 13.
    "ALTER TABLE devices ADD COLUMN instance text;",
    // 9: a counter every change of a device's credentials moves (a statement trigger, so no
    // way of writing them is missed), which every instance watches to reload its cache of
    // them: a device added, revoked or given a new secret through one instance is known to
    // all within moments. PostgreSQL only: on SQLite there is one instance.
    "CREATE TABLE credential_changes (version bigint NOT NULL);
     INSERT INTO credential_changes (version) VALUES (0);
     CREATE FUNCTION credential_changed() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         UPDATE credential_changes SET version = version + 1;
         RETURN NULL;
       END
     $$;
     CREATE TRIGGER devices_credentials_changed
       AFTER INSERT OR DELETE OR UPDATE OF secret_hash, revoked, patient_id, profile ON devices
       FOR EACH STATEMENT EXECUTE FUNCTION credential_changed();",
    // 10: people's changes the alert engine must hear of (a care plan set, an alert
    // acknowledged or resolved), written with the change and read, in commit order, by the
    // instance holding the patient's alert partition (`tx` as in the readings' feed).
    // PostgreSQL only: on SQLite the one instance's engine is told directly.
    "CREATE TABLE engine_notices (
        tx         xid8     NOT NULL DEFAULT pg_current_xact_id(),
        part       smallint NOT NULL,
        patient_id text     NOT NULL,
        kind       text     NOT NULL,
        rule_id    text,
        at_ms      bigint   NOT NULL
     );
     CREATE INDEX engine_notices_by_part_tx ON engine_notices (part, tx);
     CREATE INDEX engine_notices_by_time ON engine_notices (at_ms);",
    // 11: failed authentications counted across instances (`registry::throttles`).
    "CREATE TABLE throttle_failures (
        key     text    PRIMARY KEY,
        count   integer NOT NULL,
        last_ms bigint  NOT NULL
     );
     CREATE INDEX throttle_failures_by_time ON throttle_failures (last_ms, key COLLATE \"C\");",
    // 12: the instance a visit's call lives on, and secrets every instance must share (the
    // key that signs visit links).
    "ALTER TABLE visits ADD COLUMN host text, ADD COLUMN host_url text;
     CREATE TABLE secrets (
        name       text   PRIMARY KEY,
        value      bytea  NOT NULL,
        created_ms bigint NOT NULL
     );",
    // 13: the care programme: programmes (four built in, `registry::enrollment::BUILT_IN`)
    // and patients' enrollment episodes, one per start date.
    "CREATE TABLE programs (
        id         text   PRIMARY KEY,
        name       text   NOT NULL,
        created_ms bigint NOT NULL,
        created_by text   NOT NULL
     );
     INSERT INTO programs (id, name, created_ms, created_by) VALUES
        ('hypertension', 'Hypertension', 0, 'vigil'),
        ('heart-failure', 'Heart failure', 0, 'vigil'),
        ('diabetes', 'Diabetes', 0, 'vigil'),
        ('copd', 'COPD', 0, 'vigil');
     CREATE TABLE enrollments (
        patient_id     text   NOT NULL REFERENCES patients (id),
        start_date     text   NOT NULL,
        end_date       text,
        program        text   NOT NULL REFERENCES programs (id),
        practitioner   text,
        diagnoses      text   NOT NULL,
        consent_method text   NOT NULL,
        consent_by     text   NOT NULL,
        consent_ms     bigint NOT NULL,
        updated_by     text   NOT NULL,
        updated_ms     bigint NOT NULL,
        PRIMARY KEY (patient_id, start_date)
     );",
    // 14: the care team's time with each patient (`registry::time_log`).
    "CREATE TABLE time_entries (
        id          text    PRIMARY KEY,
        patient_id  text    NOT NULL REFERENCES patients (id),
        date        text    NOT NULL,
        minutes     integer NOT NULL,
        activity    text    NOT NULL,
        interactive boolean NOT NULL,
        note        text,
        username    text    NOT NULL,
        created_ms  bigint  NOT NULL
     );
     CREATE INDEX time_entries_by_patient ON time_entries (patient_id, date);",
    // 15: time entries changed (who, when) and deleted (kept, who, when).
    "ALTER TABLE time_entries ADD COLUMN updated_by text, ADD COLUMN updated_ms bigint,
        ADD COLUMN deleted_by text, ADD COLUMN deleted_ms bigint;",
    // 16: device set-ups with the patient, the 99453 event (`registry::setups`).
    "CREATE TABLE device_setups (
        id         text   PRIMARY KEY,
        patient_id text   NOT NULL REFERENCES patients (id),
        device_id  text   NOT NULL,
        date       text   NOT NULL,
        note       text,
        username   text   NOT NULL,
        created_ms bigint NOT NULL
     );
     CREATE INDEX device_setups_by_patient ON device_setups (patient_id, date);",
    // 17: each user's running care-management timer (`registry::timer`).
    "CREATE TABLE timers (
        username   text   PRIMARY KEY,
        patient_id text   NOT NULL REFERENCES patients (id),
        activity   text   NOT NULL,
        started_ms bigint NOT NULL
     );",
    // 18: who covers each care team, its on-call rota and shifts (`registry::cover`).
    "CREATE TABLE team_cover (
        team_id    text   PRIMARY KEY REFERENCES teams (id),
        rota       text,
        shifts     text   NOT NULL DEFAULT '[]',
        updated_by text   NOT NULL,
        updated_ms bigint NOT NULL
     );",
    // 19: how to reach each user (`registry::contacts`).
    "CREATE TABLE user_contacts (
        username   text   PRIMARY KEY REFERENCES users (username),
        contact    text   NOT NULL,
        updated_ms bigint NOT NULL
     );",
    // 20: each care team's escalation policy (`oncall::policy`), beside its cover.
    "ALTER TABLE team_cover ADD COLUMN policy text;",
    // 21: alerts' escalation steps, taken once each, and the notifications' outbox
    // (`registry::notifications`).
    "CREATE TABLE escalation_steps (
        alert_id text    NOT NULL,
        step     integer NOT NULL,
        level    integer NOT NULL,
        due_ms   bigint  NOT NULL,
        taken_ms bigint  NOT NULL,
        PRIMARY KEY (alert_id, step)
     );
     CREATE TABLE notifications (
        id             text    PRIMARY KEY,
        alert_id       text    NOT NULL,
        patient_id     text    NOT NULL,
        step           integer NOT NULL,
        username       text    NOT NULL,
        channel        text    NOT NULL,
        address        text,
        status         text    NOT NULL,
        attempts       integer NOT NULL DEFAULT 0,
        next_ms        bigint  NOT NULL,
        claimed_by     text,
        claim_until_ms bigint,
        last_error     text,
        receipt        text,
        created_ms     bigint  NOT NULL,
        settled_ms     bigint,
        UNIQUE (alert_id, step, username, channel)
     );
     CREATE INDEX notifications_due ON notifications (status, next_ms);
     CREATE INDEX notifications_by_alert ON notifications (alert_id);",
    // 22: acknowledgement links used, one row each (`notify::ack`).
    "CREATE TABLE ack_links_used (
        notification_id text   PRIMARY KEY,
        username        text   NOT NULL,
        used_ms         bigint NOT NULL
     );",
    // 23: the inbox — who an alert is assigned to, and a snooze with its reason, as SQLite's
    // version 26.
    "ALTER TABLE alerts ADD COLUMN assigned_to text;
     ALTER TABLE alerts ADD COLUMN assigned_ms bigint;
     ALTER TABLE alerts ADD COLUMN snoozed_until_ms bigint;
     ALTER TABLE alerts ADD COLUMN snooze_reason text;",
    // 24: users' display names and disabling, patients' discharge, as SQLite's version 27.
    "ALTER TABLE users ADD COLUMN display_name text, ADD COLUMN disabled_ms bigint,
         ADD COLUMN password_temporary boolean NOT NULL DEFAULT false;
     ALTER TABLE patients ADD COLUMN discharged_ms bigint, ADD COLUMN discharge_date text,
         ADD COLUMN discharge_reason text, ADD COLUMN discharged_by text;",
    // 25: a plan notice carries the plan for the engine as its change committed it ("default"
    // or the plan's JSON; NULL from older builds: the engine reads the plan in force again).
    "ALTER TABLE engine_notices ADD COLUMN plan text;",
];
