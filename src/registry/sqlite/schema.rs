//! The registry's database schema: every version's SQL, in order. A database is brought up to
//! date by applying the versions it lacks (`store::open_db`). All the registry's SQL schema
//! lives here, whichever part of the program reads the tables (the CRM record, video visits),
//! so that the registry depends on none of them and a second backend has one place to mirror.

/// Every schema version, oldest first.
pub(crate) const SCHEMA: &[&str] = &[
    // version 1
    "CREATE TABLE patients (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        birth_date TEXT,
        created_ms INTEGER NOT NULL
     );
     CREATE TABLE devices (
        id           TEXT PRIMARY KEY,
        patient_id   TEXT NOT NULL REFERENCES patients (id),
        profile      TEXT NOT NULL,
        secret_hash  BLOB NOT NULL,
        created_ms   INTEGER NOT NULL,
        revoked      INTEGER NOT NULL DEFAULT 0,
        online       INTEGER NOT NULL DEFAULT 0,
        last_seen_ms INTEGER,
        battery      INTEGER
     );
     CREATE INDEX devices_by_patient ON devices (patient_id);
     CREATE TABLE users (
        username      TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        role          TEXT NOT NULL,
        created_ms    INTEGER NOT NULL
     );
     CREATE TABLE audit (
        id         INTEGER PRIMARY KEY,
        time_ms    INTEGER NOT NULL,
        actor      TEXT NOT NULL,
        action     TEXT NOT NULL,
        patient_id TEXT,
        target     TEXT NOT NULL,
        remote     TEXT NOT NULL,
        prev_hash  BLOB NOT NULL,
        hash       BLOB NOT NULL
     );
     CREATE INDEX audit_by_patient ON audit (patient_id, time_ms);",
    // version 2: the device's password in Mosquitto's format, for external-broker mode.
    "ALTER TABLE devices ADD COLUMN broker_hash TEXT;",
    // version 3: the CRM record — care plans, alerts, the timeline and the outbox.
    SCHEMA_V3,
    // version 4: care teams and sign-in sessions.
    SCHEMA_V4,
    // version 5: video visits.
    SCHEMA_V5,
    // version 6: API tokens.
    SCHEMA_V6,
    // version 7: usernames unique whatever their case.
    SCHEMA_V7,
    // version 8: the default care team, and every patient on a care team.
    SCHEMA_V8,
    // version 9: the patient's medical record number, unique where set.
    SCHEMA_V9,
    // version 10: a failed delivery put back in the queue starts a new delivery window.
    SCHEMA_V10,
    // version 11: the patient's care team in a column of its own, naming a team.
    SCHEMA_V11,
    // version 12: leases on pieces of work (see `registry::lease`).
    "CREATE TABLE leases (
        name       TEXT PRIMARY KEY,
        holder     TEXT NOT NULL,
        epoch      INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    );",
    // version 13: which instance holds an online device's connection.
    "ALTER TABLE devices ADD COLUMN instance TEXT;",
    // version 14: failed authentications, kept over restarts (`registry::throttles`).
    "CREATE TABLE throttle_failures (
        key     TEXT PRIMARY KEY,
        count   INTEGER NOT NULL,
        last_ms INTEGER NOT NULL
    );
    CREATE INDEX throttle_failures_by_time ON throttle_failures (last_ms, key);",
    // version 15: the instance a visit's call lives on, and secrets kept in the registry (the
    // key that signs visit links), so that a move to PostgreSQL takes them along.
    "ALTER TABLE visits ADD COLUMN host TEXT;
    ALTER TABLE visits ADD COLUMN host_url TEXT;
    CREATE TABLE secrets (
        name       TEXT PRIMARY KEY,
        value      BLOB NOT NULL,
        created_ms INTEGER NOT NULL
    );",
    // version 16: the care programme: programmes (four built in,
    // `registry::enrollment::BUILT_IN`) and patients' enrollment episodes, one per start date.
    "CREATE TABLE programs (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        created_by TEXT NOT NULL
    );
    INSERT INTO programs (id, name, created_ms, created_by) VALUES
        ('hypertension', 'Hypertension', 0, 'vigil'),
        ('heart-failure', 'Heart failure', 0, 'vigil'),
        ('diabetes', 'Diabetes', 0, 'vigil'),
        ('copd', 'COPD', 0, 'vigil');
    CREATE TABLE enrollments (
        patient_id     TEXT NOT NULL REFERENCES patients (id),
        start_date     TEXT NOT NULL,
        end_date       TEXT,
        program        TEXT NOT NULL REFERENCES programs (id),
        practitioner   TEXT,
        diagnoses      TEXT NOT NULL,
        consent_method TEXT NOT NULL,
        consent_by     TEXT NOT NULL,
        consent_ms     INTEGER NOT NULL,
        updated_by     TEXT NOT NULL,
        updated_ms     INTEGER NOT NULL,
        PRIMARY KEY (patient_id, start_date)
    );",
    // version 17: the care team's time with each patient (`registry::time_log`).
    "CREATE TABLE time_entries (
        id          TEXT PRIMARY KEY,
        patient_id  TEXT NOT NULL REFERENCES patients (id),
        date        TEXT NOT NULL,
        minutes     INTEGER NOT NULL,
        activity    TEXT NOT NULL,
        interactive INTEGER NOT NULL,
        note        TEXT,
        username    TEXT NOT NULL,
        created_ms  INTEGER NOT NULL
    );
    CREATE INDEX time_entries_by_patient ON time_entries (patient_id, date);",
    // version 18: time entries changed (who, when) and deleted (kept, who, when).
    "ALTER TABLE time_entries ADD COLUMN updated_by TEXT;
    ALTER TABLE time_entries ADD COLUMN updated_ms INTEGER;
    ALTER TABLE time_entries ADD COLUMN deleted_by TEXT;
    ALTER TABLE time_entries ADD COLUMN deleted_ms INTEGER;",
    // version 19: device set-ups with the patient, the 99453 event (`registry::setups`).
    "CREATE TABLE device_setups (
        id         TEXT PRIMARY KEY,
        patient_id TEXT NOT NULL REFERENCES patients (id),
        device_id  TEXT NOT NULL,
        date       TEXT NOT NULL,
        note       TEXT,
        username   TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX device_setups_by_patient ON device_setups (patient_id, date);",
    // version 20: each user's running care-management timer (`registry::timer`).
    "CREATE TABLE timers (
        username   TEXT PRIMARY KEY,
        patient_id TEXT NOT NULL REFERENCES patients (id),
        activity   TEXT NOT NULL,
        started_ms INTEGER NOT NULL
    );",
    // version 21: who covers each care team, its on-call rota and shifts (`registry::cover`).
    "CREATE TABLE team_cover (
        team_id    TEXT PRIMARY KEY REFERENCES teams (id),
        rota       TEXT,
        shifts     TEXT NOT NULL DEFAULT '[]',
        updated_by TEXT NOT NULL,
        updated_ms INTEGER NOT NULL
    );",
    // version 22: how to reach each user (`registry::contacts`).
    "CREATE TABLE user_contacts (
        username   TEXT PRIMARY KEY REFERENCES users (username),
        contact    TEXT NOT NULL,
        updated_ms INTEGER NOT NULL
    );",
    // version 23: each care team's escalation policy (`oncall::policy`), beside its cover.
    "ALTER TABLE team_cover ADD COLUMN policy TEXT;",
    // version 24: alerts' escalation steps, taken once each, and the notifications' outbox
    // (`registry::notifications`).
    "CREATE TABLE escalation_steps (
        alert_id TEXT    NOT NULL,
        step     INTEGER NOT NULL,
        level    INTEGER NOT NULL,
        due_ms   INTEGER NOT NULL,
        taken_ms INTEGER NOT NULL,
        PRIMARY KEY (alert_id, step)
    );
    CREATE TABLE notifications (
        id             TEXT PRIMARY KEY,
        alert_id       TEXT    NOT NULL,
        patient_id     TEXT    NOT NULL,
        step           INTEGER NOT NULL,
        username       TEXT    NOT NULL,
        channel        TEXT    NOT NULL,
        address        TEXT,
        status         TEXT    NOT NULL,
        attempts       INTEGER NOT NULL DEFAULT 0,
        next_ms        INTEGER NOT NULL,
        claimed_by     TEXT,
        claim_until_ms INTEGER,
        last_error     TEXT,
        receipt        TEXT,
        created_ms     INTEGER NOT NULL,
        settled_ms     INTEGER,
        UNIQUE (alert_id, step, username, channel)
    );
    CREATE INDEX notifications_due ON notifications (status, next_ms);
    CREATE INDEX notifications_by_alert ON notifications (alert_id);",
    // version 25: acknowledgement links used, one row each (`notify::ack`).
    "CREATE TABLE ack_links_used (
        notification_id TEXT PRIMARY KEY,
        username        TEXT    NOT NULL,
        used_ms         INTEGER NOT NULL
    );",
    // version 26: the inbox — who an alert is assigned to, and a snooze with its reason
    // (`POST /alerts/{id}/assign`, `/snooze`; docs/dashboard.md).
    "ALTER TABLE alerts ADD COLUMN assigned_to TEXT;
     ALTER TABLE alerts ADD COLUMN assigned_ms INTEGER;
     ALTER TABLE alerts ADD COLUMN snoozed_until_ms INTEGER;
     ALTER TABLE alerts ADD COLUMN snooze_reason TEXT;",
    // version 27: users' display names and disabling; patients' discharge
    // (`registry::discharge`).
    SCHEMA_RECORDS,
];

/// Schema version 27: a user's display name (shown to patients instead of the
/// username) and when they were disabled (a disabled user cannot sign in; their sessions and
/// tokens stop working), and whether their password is a temporary one from a reset (they must
/// choose their own before doing anything else); a patient's discharge (when, the date the
/// clinic gives, the reason and who), `NULL` while the patient is under monitoring.
const SCHEMA_RECORDS: &str = "
    ALTER TABLE users ADD COLUMN display_name TEXT;
    ALTER TABLE users ADD COLUMN disabled_ms INTEGER;
    ALTER TABLE users ADD COLUMN password_temporary INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE patients ADD COLUMN discharged_ms INTEGER;
    ALTER TABLE patients ADD COLUMN discharge_date TEXT;
    ALTER TABLE patients ADD COLUMN discharge_reason TEXT;
    ALTER TABLE patients ADD COLUMN discharged_by TEXT;";

/// Schema version 3: the CRM record — care plans, alerts, the timeline and the outbox.
const SCHEMA_V3: &str = "
    ALTER TABLE patients ADD COLUMN details TEXT;
    CREATE TABLE care_plans (
        patient_id TEXT PRIMARY KEY REFERENCES patients (id),
        plan       TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        updated_by TEXT NOT NULL
    );
    CREATE TABLE alerts (
        id              TEXT PRIMARY KEY,
        patient_id      TEXT NOT NULL,
        rule_id         TEXT NOT NULL,
        kind            TEXT NOT NULL,
        severity        TEXT NOT NULL,
        status          TEXT NOT NULL,
        message         TEXT NOT NULL,
        opened_ms       INTEGER NOT NULL,
        trigger_json    TEXT,
        escalations     INTEGER NOT NULL DEFAULT 0,
        escalated_ms    INTEGER NOT NULL,
        acknowledged_ms INTEGER,
        acknowledged_by TEXT,
        ack_note        TEXT,
        resolved_ms     INTEGER,
        resolved_by     TEXT,
        resolve_note    TEXT
    );
    CREATE UNIQUE INDEX alerts_one_unresolved ON alerts (patient_id, rule_id)
        WHERE status <> 'resolved';
    CREATE INDEX alerts_by_time ON alerts (opened_ms);
    CREATE INDEX alerts_by_patient ON alerts (patient_id, opened_ms);
    CREATE TABLE timeline (
        id         INTEGER PRIMARY KEY,
        patient_id TEXT NOT NULL,
        time_ms    INTEGER NOT NULL,
        kind       TEXT NOT NULL,
        data       TEXT NOT NULL
    );
    CREATE INDEX timeline_by_patient ON timeline (patient_id, time_ms);
    CREATE TABLE outbox (
        id           INTEGER PRIMARY KEY,
        sink         TEXT NOT NULL,
        event_id     TEXT NOT NULL,
        event_type   TEXT NOT NULL,
        patient_id   TEXT NOT NULL,
        payload      TEXT NOT NULL,
        created_ms   INTEGER NOT NULL,
        status       TEXT NOT NULL DEFAULT 'pending',
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_ms      INTEGER NOT NULL,
        done_ms      INTEGER,
        last_error   TEXT,
        UNIQUE (sink, event_id)
    );
    CREATE INDEX outbox_pending ON outbox (sink, status, id);";

/// Schema version 4: care teams, their members, and sessions.
const SCHEMA_V4: &str = "
    CREATE TABLE teams (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE team_members (
        team_id  TEXT NOT NULL REFERENCES teams (id),
        username TEXT NOT NULL REFERENCES users (username),
        PRIMARY KEY (team_id, username)
    );
    CREATE INDEX team_members_by_user ON team_members (username);
    CREATE TABLE sessions (
        token_hash BLOB PRIMARY KEY,
        username   TEXT NOT NULL REFERENCES users (username),
        csrf       TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    );
    CREATE INDEX sessions_by_user ON sessions (username);";

/// Schema version 5: video visits.
const SCHEMA_V5: &str = "
    CREATE TABLE visits (
        id         TEXT PRIMARY KEY,
        patient_id TEXT NOT NULL REFERENCES patients (id),
        created_by TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        started_ms INTEGER,
        ended_ms   INTEGER,
        ended_by   TEXT
    );
    CREATE INDEX visits_by_patient ON visits (patient_id, created_ms);";

/// Schema version 6: API tokens.
const SCHEMA_V6: &str = "
    CREATE TABLE api_tokens (
        id          TEXT PRIMARY KEY,
        token_hash  BLOB NOT NULL UNIQUE,
        username    TEXT NOT NULL REFERENCES users (username),
        label       TEXT NOT NULL,
        scope       TEXT NOT NULL,
        created_ms  INTEGER NOT NULL,
        expires_ms  INTEGER NOT NULL,
        revoked_ms  INTEGER
    );
    CREATE INDEX api_tokens_by_user ON api_tokens (username);";

/// Schema version 7: usernames unique whatever their case. A unique index cannot be built on a
/// registry that already holds two names differing only in case, and merging or dropping one
/// of those accounts would lose a clinician's access or history; so triggers refuse any new
/// clash, and the existing pairs are kept (and logged at every start,
/// `usernames::warn_of_case_twins`).
const SCHEMA_V7: &str = "
    CREATE INDEX users_by_name_nocase ON users (username COLLATE NOCASE);
    CREATE TRIGGER users_names_ignore_case_insert BEFORE INSERT ON users
    WHEN EXISTS (SELECT 1 FROM users WHERE username = NEW.username COLLATE NOCASE)
    BEGIN
        SELECT RAISE(ABORT, 'a user of that name exists (usernames ignore case)');
    END;
    CREATE TRIGGER users_names_ignore_case_update BEFORE UPDATE OF username ON users
    WHEN EXISTS (SELECT 1 FROM users
                 WHERE username = NEW.username COLLATE NOCASE AND rowid <> OLD.rowid)
    BEGIN
        SELECT RAISE(ABORT, 'a user of that name exists (usernames ignore case)');
    END;";

/// Schema version 8: the default care team, and every patient without a team moved to it. It is
/// idempotent, so it is correct whichever version number it ends up with. (The team's id and
/// name are written out here because SQL cannot take `DEFAULT_TEAM`; a test checks them.)
pub(crate) const SCHEMA_V8: &str = "
    INSERT OR IGNORE INTO teams (id, name, created_ms)
        VALUES ('default', 'Default care team', CAST(strftime('%s', 'now') AS INTEGER) * 1000);
    UPDATE patients SET details = json_set(coalesce(details, '{}'), '$.care_team', 'default')
     WHERE details IS NULL
        OR CASE WHEN json_valid(details)
                THEN coalesce(json_extract(details, '$.care_team'), '') = ''
                ELSE 0 END;";

/// Schema version 9: the MRN column, unique where set.
const SCHEMA_V9: &str = "
    ALTER TABLE patients ADD COLUMN mrn TEXT;
    CREATE UNIQUE INDEX patients_by_mrn ON patients (mrn) WHERE mrn IS NOT NULL;";

/// Schema version 10: a failed delivery put back in the queue starts a new delivery window
/// (`retried_ms`; attempts made before are in `attempts_before_retry`), and an index finds a
/// patient's deliveries for a retry of them all.
const SCHEMA_V10: &str = "
    ALTER TABLE outbox ADD COLUMN retried_ms INTEGER;
    ALTER TABLE outbox ADD COLUMN attempts_before_retry INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX outbox_by_patient ON outbox (patient_id, sink, status);";

/// Schema version 11: the patient's care team in a column of its own, which must name a team
/// (it was a field of the `details` JSON, which no constraint or index covers). Each patient
/// keeps their team; one on a team that no longer exists gets that team back (named by its
/// id, with no members) rather than being moved to the default team, whose clinicians would
/// then see a patient nobody gave them. Foreign keys are off while migrating, which is what
/// lets `ADD COLUMN` take a `REFERENCES` with a default; the migration then checks them.
pub(crate) const SCHEMA_V11: &str = "
    INSERT OR IGNORE INTO teams (id, name, created_ms)
        VALUES ('default', 'Default care team', CAST(strftime('%s', 'now') AS INTEGER) * 1000);
    INSERT OR IGNORE INTO teams (id, name, created_ms)
        SELECT DISTINCT json_extract(details, '$.care_team'), json_extract(details, '$.care_team'),
               CAST(strftime('%s', 'now') AS INTEGER) * 1000
          FROM patients
         WHERE json_valid(details) AND coalesce(json_extract(details, '$.care_team'), '') <> '';
    ALTER TABLE patients ADD COLUMN care_team TEXT NOT NULL DEFAULT 'default' REFERENCES teams (id);
    UPDATE patients SET care_team = json_extract(details, '$.care_team')
     WHERE json_valid(details) AND coalesce(json_extract(details, '$.care_team'), '') <> '';
    UPDATE patients SET details = nullif(json_remove(details, '$.care_team'), '{}')
     WHERE json_valid(details);
    CREATE INDEX patients_by_team ON patients (care_team);";
