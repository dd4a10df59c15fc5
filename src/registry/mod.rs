//! The registry: patients, their devices (with the hash of each device's secret), dashboard
//! users, and the audit trail of who read or changed a patient's data.
//!
//! It lives in its own SQLite file (`registry.db`), apart from the time-series store, so the
//! store's writer never waits on it. Device credentials are also held in memory so that a
//! device connecting costs no disk read.
//!
//! It must never keep a device secret or a password in the clear: device secrets are 256-bit
//! random values stored as SHA-256 (a slow hash adds nothing to a secret with that much entropy
//! and would turn every reconnect storm into a CPU storm); passwords, which people choose, are
//! stored as Argon2id, hashed and checked only in [`password`]'s bounded hasher.

pub mod access;
mod actor;
pub mod audit;
mod care_teams;
mod error;
pub mod mosquitto;
mod mrn;
pub mod outbox;
mod password;
mod password_policy;
pub mod postgres;
mod profile;
pub mod record;
mod schema;
pub mod sqlite;
pub mod storage;
pub mod tokens;
mod usernames;
mod users;
pub mod visits;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use access::{Role, Team, User};
pub use actor::token_actor;
pub use audit::{AuditEntry, AuditExportLine, AuditRecord};
pub use care_teams::{UnseenPatient, UnseenReason, initial_teams};
pub use error::RegistryError;
pub use mrn::MRN_MAX_CHARS;
pub use outbox::{Delivery, Lane, OutboxRow, QueuedReading, READING, Settled};
pub use profile::{PayloadFormat, Profile, ProfileError, Profiles};
pub use tokens::{ApiToken, Scope, TOKEN_PREFIX};
pub use users::{Session, UserUpdate};

use crate::domain::{DeviceId, PatientId, format_rfc3339};
use schema::SCHEMA;

/// The id of the care team a patient is put on when none is given.
pub const DEFAULT_TEAM: &str = "default";

/// A new patient's details, on the default team when they name none.
fn on_a_team(mut details: PatientDetails) -> PatientDetails {
    if details.care_team.as_deref().is_none_or(str::is_empty) {
        details.care_team = Some(DEFAULT_TEAM.to_owned());
    }
    details
}

/// Refuses an update that would leave a patient on no care team (an empty string clears a
/// field).
fn check_not_cleared(update: &PatientDetails) -> Result<(), RegistryError> {
    if update.care_team.as_deref() == Some("") {
        return Err(RegistryError::Invalid(NOT_CLEARED.into()));
    }
    Ok(())
}

/// Why a patient's team cannot be cleared, in the words the API answers with.
pub const NOT_CLEARED: &str = "care_team cannot be cleared: every patient belongs to a care team; \
     give another team's id to move the patient";

/// A patient as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Patient {
    pub id: PatientId,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<String>,
    /// The clinic's medical record number, unique per clinic (see [`mrn`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mrn: Option<String>,
    pub created_at: String,
    #[serde(flatten)]
    pub details: PatientDetails,
}

/// What the CRM record keeps about a patient beyond name and birth date: demographics, the
/// care team responsible and how the patient prefers to be contacted. Every field is
/// optional; an empty string clears a field in an update.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct PatientDetails {
    /// FHIR AdministrativeGender: `male`, `female`, `other` or `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The care team responsible for the patient: always one (the default team when none is
    /// given); see `care_teams`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub care_team: Option<String>,
    /// `phone`, `sms`, `email` or `post`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_preference: Option<String>,
    /// Free text, e.g. "mornings only; daughter is the carer".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_notes: Option<String>,
}

impl PatientDetails {
    fn fields(&self) -> [(&'static str, &Option<String>); 7] {
        [
            ("gender", &self.gender),
            ("phone", &self.phone),
            ("email", &self.email),
            ("address", &self.address),
            ("care_team", &self.care_team),
            ("contact_preference", &self.contact_preference),
            ("contact_notes", &self.contact_notes),
        ]
    }

    fn check(&self) -> Result<(), RegistryError> {
        for (name, value) in self.fields() {
            if let Some(v) = value
                && v.chars().count() > 500
            {
                return Err(RegistryError::Invalid(format!(
                    "{name} must be at most 500 characters"
                )));
            }
        }
        let one_of = |name: &str, v: &Option<String>, allowed: &[&str]| match v.as_deref() {
            Some(x) if !x.is_empty() && !allowed.contains(&x) => Err(RegistryError::Invalid(
                format!("{name} must be one of {}", allowed.join(", ")),
            )),
            _ => Ok(()),
        };
        one_of(
            "gender",
            &self.gender,
            &["male", "female", "other", "unknown"],
        )?;
        one_of(
            "contact_preference",
            &self.contact_preference,
            &["phone", "sms", "email", "post"],
        )?;
        if let Some(e) = self.email.as_deref()
            && !e.is_empty()
            && (!e.contains('@') || e.contains(char::is_whitespace))
        {
            return Err(RegistryError::Invalid(format!(
                "email {e:?} is not an e-mail address"
            )));
        }
        if let Some(t) = self.care_team.as_deref()
            && !t.is_empty()
            && PatientId::parse(t).is_err()
        {
            return Err(RegistryError::Invalid(
                "care_team must be 1 to 64 characters of A-Z a-z 0-9 . _ -".into(),
            ));
        }
        Ok(())
    }

    /// `self` with the fields `update` gives; an empty string clears.
    fn merged(mut self, update: PatientDetails) -> PatientDetails {
        let set = |old: &mut Option<String>, new: Option<String>| {
            if let Some(n) = new {
                *old = (!n.is_empty()).then_some(n);
            }
        };
        set(&mut self.gender, update.gender);
        set(&mut self.phone, update.phone);
        set(&mut self.email, update.email);
        set(&mut self.address, update.address);
        set(&mut self.care_team, update.care_team);
        set(&mut self.contact_preference, update.contact_preference);
        set(&mut self.contact_notes, update.contact_notes);
        self
    }

    /// The details as the `details` column keeps them: the care team has its own column.
    fn without_team(mut self) -> PatientDetails {
        self.care_team = None;
        self
    }

    fn to_json(&self) -> Option<String> {
        let cleaned = PatientDetails::default().merged(self.clone());
        (cleaned != PatientDetails::default())
            .then(|| serde_json::to_string(&cleaned).unwrap_or_default())
    }
}

fn check_name(name: &str) -> Result<String, RegistryError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(RegistryError::Invalid(
            "name must be 1 to 200 characters".into(),
        ));
    }
    Ok(name.to_owned())
}

fn check_birth_date(d: &str) -> Result<(), RegistryError> {
    if valid_date(d) {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "birth_date {d:?} is not a date like 1950-04-23"
        )))
    }
}

fn patient_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Patient>> {
    let id: String = r.get(0)?;
    let details: Option<String> = r.get(4)?;
    let mut details: PatientDetails = details
        .and_then(|d| serde_json::from_str(&d).ok())
        .unwrap_or_default();
    details.care_team = r.get(6)?;
    Ok(PatientId::parse(&id).ok().map(|id| Patient {
        id,
        name: r.get(1).unwrap_or_default(),
        birth_date: r.get(2).unwrap_or_default(),
        mrn: r.get(5).unwrap_or_default(),
        created_at: format_rfc3339(r.get(3).unwrap_or_default()),
        details,
    }))
}

/// A device as the API shows it (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    pub id: DeviceId,
    pub patient_id: PatientId,
    pub profile: String,
    pub created_at: String,
    pub online: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery: Option<u8>,
    pub revoked: bool,
}

/// What the MQTT endpoint needs to know about a device, held in memory.
#[derive(Debug, Clone)]
pub struct DeviceAuth {
    pub patient_id: PatientId,
    pub profile: Arc<Profile>,
    secret_hash: [u8; 32],
    pub revoked: bool,
}

/// Changes of access held for listeners that fall behind (they then re-check everything).
const ACCESS_EVENTS: usize = 1024;

/// A handle to the registry; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    /// The SQLite database, for what has not moved behind [`storage`] yet.
    sqlite: sqlite::SqliteDb,
    /// The registry's storage, behind the seam.
    db: Arc<dyn storage::Storage>,
    devices: Arc<RwLock<HashMap<DeviceId, DeviceAuth>>>,
    profiles: Profiles,
    status: tokio::sync::mpsc::Sender<StatusUpdate>,
    device_events: tokio::sync::broadcast::Sender<Arc<DeviceStatus>>,
    /// Device status batches that failed to commit (each is kept and tried again).
    status_failures: Arc<std::sync::atomic::AtomicU64>,
    /// Devices whose credentials were revoked or replaced: their connections must end.
    credentials_changed: tokio::sync::broadcast::Sender<DeviceId>,
    /// Every password hash and check.
    hasher: password::Hasher,
    /// Changes of who may see what (see [`Registry::subscribe_access`]).
    access: tokio::sync::broadcast::Sender<AccessChange>,
}

/// A change that may end a credential or change what someone may see, announced after it is
/// committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessChange {
    /// This user's access changed: a session of theirs ended, a token of theirs was revoked,
    /// their role, teams or password changed.
    User(String),
    /// A patient was created or moved to another care team (`team`: now; `None`, no team).
    Patient { id: String, team: Option<String> },
}

/// The hasher's client for passwords set by an admin or on the command line (not sign-ins).
const ACCOUNTS: &str = "accounts";

/// A device's status as just written: for the live view.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceStatus {
    pub device_id: String,
    pub patient_id: String,
    pub online: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery: Option<u8>,
    pub last_seen_ms: i64,
}

/// A device's connection state or battery report, written in batches.
struct StatusUpdate {
    id: DeviceId,
    online: Option<bool>,
    battery: Option<u8>,
    at_ms: i64,
    /// The MQTT connection this came from: a device is offline only once none of its
    /// connections is live (a reconnect can overtake the old connection's close).
    conn: Option<u64>,
}

/// Writes device status updates, coalesced per device, one transaction per batch, so that a
/// reconnect storm of thousands of devices costs a few commits rather than one each.
///
/// A batch that fails to commit is kept and tried again (after a pause that grows to
/// [`STATUS_RETRY_MAX`], merged with what arrived meanwhile: the newest status of each
/// device wins), so that a passing database error never leaves a device shown online that
/// has gone, or offline that is back. What waits is one entry per device, so it never grows
/// beyond the registry's devices (and the few unknown ids a batch may name).
fn status_writer(
    conn: Connection,
    mut rx: tokio::sync::mpsc::Receiver<StatusUpdate>,
    events: tokio::sync::broadcast::Sender<Arc<DeviceStatus>>,
    failures: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut written: Vec<DeviceStatus> = Vec::new();
    // Per device, its connections that came online and have not ended.
    let mut live: HashMap<DeviceId, Vec<u64>> = HashMap::new();
    let mut pending: HashMap<DeviceId, (Option<bool>, Option<u8>, i64)> = HashMap::new();
    let mut merge =
        |u: StatusUpdate, pending: &mut HashMap<DeviceId, (Option<bool>, Option<u8>, i64)>| {
            let mut online = u.online;
            if let Some(c) = u.conn {
                match online {
                    Some(true) => live.entry(u.id.clone()).or_default().push(c),
                    Some(false) => {
                        let conns = live.entry(u.id.clone()).or_default();
                        conns.retain(|x| *x != c);
                        if conns.is_empty() {
                            live.remove(&u.id);
                        } else {
                            // Another connection of the device is live: still online.
                            online = None;
                        }
                    }
                    // A connection taken over by a newer one of the same client: it is
                    // gone, but the device is not offline.
                    None => {
                        if let Some(conns) = live.get_mut(&u.id) {
                            conns.retain(|x| *x != c);
                            if conns.is_empty() {
                                live.remove(&u.id);
                            }
                        }
                    }
                }
            }
            let e = pending.entry(u.id).or_insert((None, None, u.at_ms));
            e.0 = online.or(e.0);
            e.1 = u.battery.or(e.1);
            e.2 = e.2.max(u.at_ms);
        };
    let mut retry = STATUS_RETRY_INITIAL;
    let mut closed = false;
    loop {
        if pending.is_empty() {
            let Some(first) = rx.blocking_recv() else {
                return;
            };
            merge(first, &mut pending);
        }
        while pending.len() < 4096 {
            match rx.try_recv() {
                Ok(u) => merge(u, &mut pending),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let result = (|| -> rusqlite::Result<()> {
            let tx = rusqlite::Transaction::new_unchecked(&conn, TransactionBehavior::Immediate)?;
            {
                let mut before = tx.prepare_cached(
                    "SELECT patient_id, online, battery FROM devices WHERE id = ?1",
                )?;
                let mut stmt = tx.prepare_cached(
                    "UPDATE devices SET online = coalesce(?2, online), battery = coalesce(?3, battery),
                     last_seen_ms = max(coalesce(last_seen_ms, 0), ?4) WHERE id = ?1",
                )?;
                let mut timeline = tx.prepare_cached(
                    "INSERT INTO timeline (patient_id, time_ms, kind, data) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (id, &(online, battery, at)) in &pending {
                    let prior: Option<(String, bool, Option<u8>)> = before
                        .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .optional()?;
                    stmt.execute(params![id.as_str(), online, battery, at])?;
                    let Some((patient, was_online, was_battery)) = prior else {
                        continue;
                    };
                    written.push(DeviceStatus {
                        device_id: id.as_str().to_owned(),
                        patient_id: patient.clone(),
                        online: online.unwrap_or(was_online),
                        battery: battery.or(was_battery),
                        last_seen_ms: at,
                    });
                    for (kind, data) in
                        device_events(id.as_str(), was_online, was_battery, online, battery)
                    {
                        timeline.execute(params![patient, at, kind, data.to_string()])?;
                    }
                }
            }
            tx.commit()
        })();
        match result {
            Ok(()) => {
                pending.clear();
                retry = STATUS_RETRY_INITIAL;
                for d in written.drain(..) {
                    let _ = events.send(Arc::new(d));
                }
            }
            Err(e) => {
                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                written.clear();
                if closed {
                    // The registry is gone (shutdown): every device starts offline at the
                    // next start anyway.
                    tracing::warn!(error = %e, devices = pending.len(), "device status batch not written at shutdown");
                    return;
                }
                tracing::warn!(
                    error = %e,
                    devices = pending.len(),
                    retry_ms = retry.as_millis() as u64,
                    "device status batch not written; kept for the next try"
                );
                pause(retry);
                retry = (retry * 2).min(STATUS_RETRY_MAX);
            }
        }
        if closed && pending.is_empty() {
            return;
        }
    }
}

/// The first pause after a failed device status batch; it doubles on each failure.
const STATUS_RETRY_INITIAL: std::time::Duration = std::time::Duration::from_millis(50);
/// The longest pause between tries of a failed device status batch.
const STATUS_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits on the status writer's own thread (never a runtime worker).
#[expect(
    clippy::disallowed_methods,
    reason = "the device status writer runs on a dedicated thread, not a runtime worker"
)]
fn pause(d: std::time::Duration) {
    std::thread::sleep(d);
}

/// Devices: one by id, those of one patient, or all.
fn devices_where(
    c: &Connection,
    id: Option<&DeviceId>,
    patient: Option<&PatientId>,
) -> Result<Vec<Device>, RegistryError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, patient_id, profile, created_ms, online, last_seen_ms, battery, revoked
         FROM devices WHERE (?1 IS NULL OR id = ?1) AND (?2 IS NULL OR patient_id = ?2)
         ORDER BY patient_id, id",
    )?;
    let ids = params![id.map(DeviceId::as_str), patient.map(PatientId::as_str)];
    let rows = stmt.query_map(ids, |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, bool>(4)?,
            r.get::<_, Option<i64>>(5)?,
            r.get::<_, Option<u8>>(6)?,
            r.get::<_, bool>(7)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, patient_id, profile, created, online, seen, battery, revoked) = row?;
        if let (Ok(id), Ok(patient_id)) = (DeviceId::parse(&id), PatientId::parse(&patient_id)) {
            out.push(Device {
                id,
                patient_id,
                profile,
                created_at: format_rfc3339(created),
                online,
                last_seen: seen.map(format_rfc3339),
                battery,
                revoked,
            });
        }
    }
    Ok(out)
}

/// Battery level at or below which the record notes "battery low".
pub const BATTERY_LOW_PERCENT: u8 = 20;

/// The timeline entries a device's status change makes: offline, back online, battery low
/// (once, when it crosses the threshold).
fn device_events(
    id: &str,
    was_online: bool,
    was_battery: Option<u8>,
    online: Option<bool>,
    battery: Option<u8>,
) -> Vec<(&'static str, serde_json::Value)> {
    let mut out = Vec::new();
    match online {
        Some(false) if was_online => out.push((
            "device.offline",
            serde_json::json!({"device_id": id, "battery": battery.or(was_battery)}),
        )),
        Some(true) if !was_online => {
            out.push(("device.online", serde_json::json!({"device_id": id})));
        }
        _ => {}
    }
    if let Some(b) = battery
        && b <= BATTERY_LOW_PERCENT
        && was_battery.is_none_or(|w| w > BATTERY_LOW_PERCENT)
    {
        out.push((
            "device.battery_low",
            serde_json::json!({"device_id": id, "battery": b}),
        ));
    }
    out
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The prefix of every device secret: it makes a leaked secret recognisable to secret
/// scanners, and keeps command-line tools from mistaking a secret for an option.
pub const SECRET_PREFIX: &str = "vgd_";

/// A new random device secret: `vgd_` and 32 bytes from the OS in URL-safe base64
/// (47 characters).
fn new_secret() -> Result<String, RegistryError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| RegistryError::Db(format!("no randomness: {e}")))?;
    Ok(format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// Checks a calendar date `YYYY-MM-DD`.
fn valid_date(s: &str) -> bool {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    s.len() == 10 && time::Date::parse(s, &fmt).is_ok()
}

impl Registry {
    /// Opens (or creates) `registry.db` in `dir` and loads device credentials into memory.
    pub fn open(dir: &Path, profiles: Profiles) -> Result<Registry, RegistryError> {
        let conn = crate::store::open_db(&dir.join("registry.db"), SCHEMA)?;
        usernames::warn_of_case_twins(&conn)?;
        let mut devices = HashMap::new();
        {
            let mut stmt =
                conn.prepare("SELECT id, patient_id, profile, secret_hash, revoked FROM devices")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, bool>(4)?,
                ))
            })?;
            for row in rows {
                let (id, patient, profile, hash, revoked) = row?;
                let (Ok(id), Ok(patient_id), Some(profile), Ok(secret_hash)) = (
                    DeviceId::parse(&id),
                    PatientId::parse(&patient),
                    profiles.get(&profile),
                    <[u8; 32]>::try_from(hash.as_slice()),
                ) else {
                    tracing::warn!(device_id = %id, "device row unusable (unknown profile?); it cannot connect");
                    continue;
                };
                devices.insert(
                    id,
                    DeviceAuth {
                        patient_id,
                        profile: profile.clone(),
                        secret_hash,
                        revoked,
                    },
                );
            }
        }
        // No connection survives a restart: every device starts offline.
        conn.execute("UPDATE devices SET online = 0 WHERE online = 1", [])?;
        let status_conn = crate::store::open_db(&dir.join("registry.db"), SCHEMA)?;
        let (status, rx) = tokio::sync::mpsc::channel(65_536);
        let (device_events, _) = tokio::sync::broadcast::channel(4096);
        let events = device_events.clone();
        let status_failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failures = status_failures.clone();
        std::thread::Builder::new()
            .name("vigil-device-status".into())
            .spawn(move || status_writer(status_conn, rx, events, failures))
            .map_err(|e| RegistryError::Db(e.to_string()))?;
        let sqlite = sqlite::SqliteDb::new(conn);
        Ok(Registry {
            db: Arc::new(sqlite.clone()),
            sqlite,
            devices: Arc::new(RwLock::new(devices)),
            profiles,
            status,
            device_events,
            status_failures,
            credentials_changed: tokio::sync::broadcast::channel(1024).0,
            hasher: password::Hasher::start()?,
            access: tokio::sync::broadcast::channel(ACCESS_EVENTS).0,
        })
    }

    /// Every change that may end a credential or narrow or widen what a signed-in user sees
    /// (a session ended, an API token revoked, a user's role or teams changed, a patient
    /// created or moved to another care team), as it is committed. Whoever holds an open
    /// socket re-checks what the change concerns; one that lags behind re-checks everything.
    pub fn subscribe_access(&self) -> tokio::sync::broadcast::Receiver<AccessChange> {
        self.access.subscribe()
    }

    /// Announces a change of access (after it is committed). Nobody listening is fine.
    pub(crate) fn access_changed(&self, change: AccessChange) {
        let _ = self.access.send(change);
    }

    /// How many device status batches have failed to commit so far (each is tried again).
    pub fn device_status_failures(&self) -> u64 {
        self.status_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Device status changes as they are written (for the live view).
    pub fn subscribe_devices(&self) -> tokio::sync::broadcast::Receiver<Arc<DeviceStatus>> {
        self.device_events.subscribe()
    }

    pub fn profiles(&self) -> &Profiles {
        &self.profiles
    }

    /// The storage behind the seam, for the parts of the program whose registry methods live
    /// beside them (video visits).
    pub(crate) fn storage(&self) -> &dyn storage::Storage {
        &*self.db
    }

    /// Runs `f` with the SQLite connection on a blocking thread.
    pub(crate) async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, RegistryError> {
        self.sqlite.with(f).await
    }

    /// Creates a patient; `mrn` is checked and must be no other patient's.
    pub async fn create_patient(
        &self,
        id: PatientId,
        name: String,
        birth_date: Option<String>,
        mrn: Option<String>,
        details: PatientDetails,
        now_ms: i64,
    ) -> Result<Patient, RegistryError> {
        let name = check_name(&name)?;
        if let Some(d) = &birth_date {
            check_birth_date(d)?;
        }
        let mrn = mrn.as_deref().map(mrn::check).transpose()?.flatten();
        details.check()?;
        let details = on_a_team(details);
        let team = details.care_team.clone().unwrap_or_default();
        let details_json = details.clone().without_team().to_json();
        self.with(move |c| {
            let n = c
                .execute(
                    "INSERT INTO patients (id, name, birth_date, created_ms, details, mrn, care_team)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
                    params![id.as_str(), name, birth_date, now_ms, details_json, mrn, team],
                )
                .map_err(|e| {
                    if mrn::is_taken(&e) {
                        mrn::taken()
                    } else {
                        error::no_such_team(e, &team)
                    }
                })?;
            if n == 0 {
                return Err(RegistryError::Exists(format!("patient {id}")));
            }
            Ok(Patient {
                id,
                name,
                birth_date,
                mrn,
                created_at: format_rfc3339(now_ms),
                details,
            })
        })
        .await
        .inspect(|p| {
            self.access_changed(AccessChange::Patient {
                id: p.id.as_str().to_owned(),
                team: p.details.care_team.clone(),
            });
        })
    }

    /// Changes a patient's name, birth date, MRN or details; `None` leaves a field as it is, an
    /// empty MRN clears it. The care team can be changed, not cleared. Returns the patient as it
    /// now is and whether its MRN changed (which the caller audits on its own line).
    pub async fn update_patient(
        &self,
        id: PatientId,
        name: Option<String>,
        birth_date: Option<String>,
        mrn: Option<String>,
        details: PatientDetails,
    ) -> Result<(Patient, bool), RegistryError> {
        let name = name.as_deref().map(check_name).transpose()?;
        if let Some(d) = &birth_date {
            check_birth_date(d)?;
        }
        // `None`: unchanged; `Some(None)`: cleared.
        let mrn = mrn.as_deref().map(mrn::check).transpose()?;
        details.check()?;
        check_not_cleared(&details)?;
        let current = self.patient(id.clone()).await?;
        let team_before = current.details.care_team.clone();
        let mrn_changed = mrn.as_ref().is_some_and(|m| *m != current.mrn);
        let merged = current.details.merged(details);
        let moved = (merged.care_team != team_before).then(|| AccessChange::Patient {
            id: id.as_str().to_owned(),
            team: merged.care_team.clone(),
        });
        let team = merged.care_team.clone();
        let details_json = merged.clone().without_team().to_json();
        let (set_mrn, new_mrn) = (mrn.is_some(), mrn.flatten());
        self.with(move |c| {
            c.execute(
                "UPDATE patients SET name = coalesce(?2, name), birth_date = coalesce(?3, birth_date),
                 details = ?4, mrn = CASE WHEN ?5 THEN ?6 ELSE mrn END,
                 care_team = coalesce(?7, care_team) WHERE id = ?1",
                params![id.as_str(), name, birth_date, details_json, set_mrn, new_mrn, team],
            )
            .map_err(|e| {
                if mrn::is_taken(&e) {
                    mrn::taken()
                } else {
                    error::no_such_team(e, team.as_deref().unwrap_or_default())
                }
            })?;
            Ok(())
        })
        .await?;
        if let Some(change) = moved {
            self.access_changed(change);
        }
        Ok((self.patient(current.id).await?, mrn_changed))
    }

    pub async fn patient(&self, id: PatientId) -> Result<Patient, RegistryError> {
        self.with(move |c| {
            c.query_row(
                "SELECT id, name, birth_date, created_ms, details, mrn, care_team FROM patients WHERE id = ?1",
                [id.as_str()],
                patient_row,
            )
            .optional()?
            .flatten()
            .ok_or_else(|| RegistryError::NotFound(format!("patient {id}")))
        })
        .await
    }

    pub async fn patients(&self) -> Result<Vec<Patient>, RegistryError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, name, birth_date, created_ms, details, mrn, care_team FROM patients ORDER BY id",
            )?;
            let rows = stmt.query_map([], patient_row)?;
            let mut out = Vec::new();
            for row in rows {
                out.extend(row?);
            }
            Ok(out)
        })
        .await
    }

    /// Provisions a device and returns it with its secret, which is not kept and cannot be
    /// shown again.
    pub async fn create_device(
        &self,
        id: DeviceId,
        patient_id: PatientId,
        profile: &str,
        now_ms: i64,
    ) -> Result<(Device, String), RegistryError> {
        let Some(prof) = self.profiles.get(profile).cloned() else {
            let known: Vec<&str> = self.profiles.ids().collect();
            return Err(RegistryError::Invalid(format!(
                "profile {profile:?} is not one of {}",
                known.join(", ")
            )));
        };
        let secret = new_secret()?;
        let secret_hash = sha256(secret.as_bytes());
        let broker_hash = mosquitto::password_hash(&secret)
            .map_err(|e| RegistryError::Db(format!("no randomness: {e}")))?;
        let (id2, patient2, profile_id) = (id.clone(), patient_id.clone(), prof.id.clone());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let exists: bool = tx
                .query_row(
                    "SELECT 1 FROM patients WHERE id = ?1",
                    [patient2.as_str()],
                    |_| Ok(true),
                )
                .optional()?
                .unwrap_or(false);
            if !exists {
                return Err(RegistryError::NotFound(format!("patient {patient2}")));
            }
            let n = tx.execute(
                "INSERT INTO devices (id, patient_id, profile, secret_hash, created_ms, broker_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                params![
                    id2.as_str(),
                    patient2.as_str(),
                    profile_id,
                    &secret_hash[..],
                    now_ms,
                    broker_hash
                ],
            )?;
            if n == 0 {
                return Err(RegistryError::Exists(format!("device {id2}")));
            }
            tx.commit()?;
            Ok(())
        })
        .await?;
        if let Ok(mut map) = self.devices.write() {
            map.insert(
                id.clone(),
                DeviceAuth {
                    patient_id: patient_id.clone(),
                    profile: prof.clone(),
                    secret_hash,
                    revoked: false,
                },
            );
        }
        Ok((
            Device {
                id,
                patient_id,
                profile: prof.id.clone(),
                created_at: format_rfc3339(now_ms),
                online: false,
                last_seen: None,
                battery: None,
                revoked: false,
            },
            secret,
        ))
    }

    /// Devices whose credentials were just revoked or replaced: whoever holds their
    /// connections ends them.
    pub fn subscribe_credential_changes(&self) -> tokio::sync::broadcast::Receiver<DeviceId> {
        self.credentials_changed.subscribe()
    }

    /// Revokes a device: it can no longer connect, and its connections are ended (by the
    /// endpoint, told through [`Registry::subscribe_credential_changes`]). Its readings stay.
    pub async fn revoke_device(&self, id: DeviceId, now_ms: i64) -> Result<Device, RegistryError> {
        let id2 = id.clone();
        let dev = self
            .with(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let d = devices_where(&tx, Some(&id2), None)?
                    .pop()
                    .ok_or_else(|| RegistryError::NotFound(format!("device {id2}")))?;
                if !d.revoked {
                    tx.execute("UPDATE devices SET revoked = 1 WHERE id = ?1", [id2.as_str()])?;
                    tx.execute(
                        "INSERT INTO timeline (patient_id, time_ms, kind, data) VALUES (?1, ?2, 'device.revoked', ?3)",
                        params![d.patient_id.as_str(), now_ms, serde_json::json!({"device_id": id2.as_str()}).to_string()],
                    )?;
                }
                tx.commit()?;
                Ok(Device { revoked: true, ..d })
            })
            .await?;
        if let Ok(mut map) = self.devices.write()
            && let Some(a) = map.get_mut(&id)
        {
            a.revoked = true;
        }
        let _ = self.credentials_changed.send(id);
        Ok(dev)
    }

    /// Gives a device a new secret, returned once; the old one stops working at once and the
    /// connections made with it are ended.
    pub async fn rotate_device_secret(
        &self,
        id: DeviceId,
    ) -> Result<(Device, String), RegistryError> {
        let secret = new_secret()?;
        let secret_hash = sha256(secret.as_bytes());
        let broker_hash = mosquitto::password_hash(&secret)
            .map_err(|e| RegistryError::Db(format!("no randomness: {e}")))?;
        let id2 = id.clone();
        let dev = self
            .with(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let d = devices_where(&tx, Some(&id2), None)?
                    .pop()
                    .ok_or_else(|| RegistryError::NotFound(format!("device {id2}")))?;
                if d.revoked {
                    return Err(RegistryError::Invalid(format!(
                        "device {id2} is revoked; provision a new device instead"
                    )));
                }
                tx.execute(
                    "UPDATE devices SET secret_hash = ?2, broker_hash = ?3 WHERE id = ?1",
                    params![id2.as_str(), &secret_hash[..], broker_hash],
                )?;
                tx.commit()?;
                Ok(d)
            })
            .await?;
        if let Ok(mut map) = self.devices.write()
            && let Some(a) = map.get_mut(&id)
        {
            a.secret_hash = secret_hash;
        }
        let _ = self.credentials_changed.send(id);
        Ok((dev, secret))
    }

    pub async fn device(&self, id: DeviceId) -> Result<Device, RegistryError> {
        self.with(move |c| {
            devices_where(c, Some(&id), None)?
                .pop()
                .ok_or_else(|| RegistryError::NotFound(format!("device {id}")))
        })
        .await
    }

    /// A patient's devices, by id.
    pub async fn patient_devices(&self, patient: PatientId) -> Result<Vec<Device>, RegistryError> {
        self.with(move |c| devices_where(c, None, Some(&patient)))
            .await
    }

    /// Every device, for the monitoring panel.
    pub async fn all_devices(&self) -> Result<Vec<Device>, RegistryError> {
        self.with(move |c| devices_where(c, None, None)).await
    }

    /// Checks a device's credentials. `None` for an unknown or revoked device or a wrong
    /// secret; the comparison takes the same time whichever it is.
    pub fn authenticate(&self, id: &str, secret: &[u8]) -> Option<(DeviceId, DeviceAuth)> {
        let presented = sha256(secret);
        let map = self.devices.read().ok()?;
        let found = DeviceId::parse(id).ok().and_then(|d| {
            let auth = map.get(&d)?;
            Some((d, auth.clone()))
        });
        let expected = found.as_ref().map_or([0u8; 32], |(_, a)| a.secret_hash);
        let matches: bool = presented.ct_eq(&expected).into();
        match found {
            Some((d, auth)) if matches && !auth.revoked => Some((d, auth)),
            _ => None,
        }
    }

    /// The device's credentials record, if it exists and is not revoked (external mode, where
    /// the broker has authenticated the device and the topic names it).
    pub fn device_auth(&self, id: &DeviceId) -> Option<DeviceAuth> {
        let map = self.devices.read().ok()?;
        map.get(id).filter(|a| !a.revoked).cloned()
    }

    /// Mosquitto password-file entries (`id`, `$7$…`) of every device that may connect.
    pub async fn broker_passwords(&self) -> Result<Vec<(String, String)>, RegistryError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, broker_hash FROM devices
                 WHERE revoked = 0 AND broker_hash IS NOT NULL ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Looks up the device a verified TLS client certificate names (its CN). `None` for an
    /// unknown or revoked device.
    pub fn authenticate_certificate(&self, common_name: &str) -> Option<(DeviceId, DeviceAuth)> {
        let id = DeviceId::parse(common_name).ok()?;
        let map = self.devices.read().ok()?;
        let auth = map.get(&id).filter(|a| !a.revoked)?.clone();
        Some((id, auth))
    }

    /// Records that a device connected, reported its status or went away. Queued and written
    /// in the next batch (within moments); waits only while the queue is full.
    /// `conn` names the MQTT connection the change comes from, when it does: every connection
    /// that came online reports its end (`online` false; `None` when a newer connection of the
    /// same client took over), and the device goes offline when the last one ends.
    pub async fn set_device_status(
        &self,
        id: DeviceId,
        online: Option<bool>,
        battery: Option<u8>,
        now_ms: i64,
        conn: Option<u64>,
    ) -> Result<(), RegistryError> {
        self.status
            .send(StatusUpdate {
                id,
                online,
                battery,
                at_ms: now_ms,
                conn,
            })
            .await
            .map_err(|_| RegistryError::Db("device status writer stopped".into()))
    }

    /// Appends to the audit trail. Each line's hash covers the previous line's hash, so a line
    /// changed or removed later breaks the chain ([`Registry::verify_audit_chain`]).
    pub async fn audit(&self, entry: AuditEntry<'_>, now_ms: i64) -> Result<(), RegistryError> {
        self.db
            .append_audit(audit::NewAuditLine::of(&entry, now_ms))
            .await
            .map(drop)
    }

    /// Reads the audit trail, filtered: the first `limit` lines oldest first, or with
    /// `newest_first` the last `limit` lines newest first. `actor` finds a user's own lines and
    /// those of their API tokens ([`token_actor`]).
    pub async fn audit_records(
        &self,
        patient_id: Option<String>,
        actor: Option<String>,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
        newest_first: bool,
    ) -> Result<Vec<AuditRecord>, RegistryError> {
        let q = audit::AuditQuery {
            patient_id,
            actor,
            from_ms,
            to_ms,
            limit,
            newest_first,
        };
        let lines = self.db.audit_records(q).await?;
        Ok(lines.into_iter().map(AuditRecord::from).collect())
    }

    /// One page of the audit trail for export, in chain order: lines with `id > after_id` and a
    /// time within `from_ms..=to_ms`, each with everything needed to recompute its hash.
    pub async fn audit_export_page(
        &self,
        after_id: i64,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<AuditExportLine>, RegistryError> {
        let lines = self.db.audit_page(after_id, from_ms, to_ms, limit).await?;
        Ok(lines.into_iter().map(AuditExportLine::from).collect())
    }

    /// Recomputes the audit hash chain; `Err` names the first line that does not match. Reads in
    /// pages, so other registry work runs between them however long the trail is.
    pub async fn verify_audit_chain(&self) -> Result<usize, RegistryError> {
        storage::verify_chain(&*self.db).await
    }

    /// Creates a token for `user` (any spelling of the name; the token holds the stored one)
    /// and appends the audit line `audit` makes of the new token's id, both or neither; returns
    /// the token's secret (shown once) and the token.
    pub async fn create_api_token(
        &self,
        user: &str,
        label: &str,
        scope: Scope,
        now_ms: i64,
        expires_ms: i64,
        audit: impl FnOnce(&str) -> audit::NewAuditLine,
    ) -> Result<(String, ApiToken), RegistryError> {
        let label = tokens::check_label(label)?;
        let user = self.user(user).await?.name;
        let (secret, id) = tokens::new_secret()?;
        let line = audit(&id);
        let token = tokens::NewApiToken {
            id,
            hash: tokens::secret_hash(&secret),
            user,
            label,
            scope,
            created_ms: now_ms,
            expires_ms,
        };
        let token = self.db.create_token(token, line).await?;
        Ok((secret, token.into()))
    }

    /// The tokens of `user`, or every token (`None`), newest first.
    pub async fn api_tokens(&self, user: Option<String>) -> Result<Vec<ApiToken>, RegistryError> {
        let found = self.db.tokens(user).await?;
        Ok(found.into_iter().map(ApiToken::from).collect())
    }

    /// One token by id.
    pub async fn api_token_by_id(&self, id: String) -> Result<Option<ApiToken>, RegistryError> {
        Ok(self.db.token_by_id(id).await?.map(ApiToken::from))
    }

    /// Revokes a token (at once: the next request with it is refused) and appends `audit`, both
    /// or neither; its user's access change is announced once committed. Idempotent.
    pub async fn revoke_api_token(
        &self,
        id: String,
        now_ms: i64,
        audit: audit::NewAuditLine,
    ) -> Result<ApiToken, RegistryError> {
        let t = self.db.revoke_token(id, now_ms, audit).await?;
        self.access_changed(AccessChange::User(t.user.clone()));
        Ok(t.into())
    }

    /// The token a secret names and its user, if it is live (not revoked, not expired).
    pub async fn api_token(
        &self,
        secret: &str,
        now_ms: i64,
    ) -> Result<Option<(ApiToken, User)>, RegistryError> {
        let by = tokens::LiveBy::Hash(tokens::secret_hash(secret));
        self.live_token(by, now_ms).await
    }

    /// The token with this id and its user, if it is still live: how an open socket re-checks
    /// the token it was opened with.
    pub async fn live_api_token(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<(ApiToken, User)>, RegistryError> {
        self.live_token(tokens::LiveBy::Id(id.to_owned()), now_ms)
            .await
    }

    async fn live_token(
        &self,
        by: tokens::LiveBy,
        now_ms: i64,
    ) -> Result<Option<(ApiToken, User)>, RegistryError> {
        let Some(token) = self.db.live_token(by, now_ms).await? else {
            return Ok(None);
        };
        let token = ApiToken::from(token);
        let user = self.user(&token.user).await?;
        Ok(Some((token, user)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_line(action: &str, id: &str) -> audit::NewAuditLine {
        audit::NewAuditLine {
            time_ms: 0,
            actor: "admin".into(),
            action: action.into(),
            patient_id: None,
            target: format!("token/{id}"),
            remote: "127.0.0.1".into(),
        }
    }

    /// The audit line of a change to user `name`.
    fn test_line(name: &str) -> audit::NewAuditLine {
        audit::NewAuditLine {
            time_ms: 0,
            actor: "admin".into(),
            action: "user.update".into(),
            patient_id: None,
            target: format!("user/{name}"),
            remote: "127.0.0.1".into(),
        }
    }

    async fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path(), Profiles::built_in().unwrap()).unwrap();
        (dir, r)
    }

    /// The status event that reports `battery` (each step of a test marks itself with one).
    async fn status_with(
        events: &mut tokio::sync::broadcast::Receiver<Arc<DeviceStatus>>,
        battery: u8,
    ) -> Arc<DeviceStatus> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let e = tokio::time::timeout_at(deadline, events.recv())
                .await
                .expect("status written")
                .unwrap();
            if e.battery == Some(battery) {
                return e;
            }
        }
    }

    #[tokio::test]
    async fn a_device_is_offline_only_when_its_last_connection_ends() {
        let (_dir, r) = registry().await;
        let p = PatientId::parse("p1").unwrap();
        r.create_patient(
            p.clone(),
            "Ada".into(),
            None,
            None,
            PatientDetails::default(),
            0,
        )
        .await
        .unwrap();
        let d = DeviceId::parse("d1").unwrap();
        r.create_device(d.clone(), p, "scale", 0).await.unwrap();
        let mut events = r.subscribe_devices();
        // Each case: updates in the order written (online, connection, battery), and whether
        // the device is online after the last one, whose battery marks it in the events.
        type Update = (Option<bool>, Option<u64>, Option<u8>);
        let cases: [(&[Update], bool); 5] = [
            // Connection 1 up; a reconnect (2) up; then connection 1's close lands: online.
            (
                &[
                    (Some(true), Some(1), None),
                    (Some(true), Some(2), None),
                    (Some(false), Some(1), Some(50)),
                ],
                true,
            ),
            // Connection 2's own close does apply.
            (&[(Some(false), Some(2), Some(49))], false),
            // Two connections at once (a second client id): offline only after both end.
            (
                &[
                    (Some(true), Some(3), None),
                    (Some(true), Some(4), None),
                    (Some(false), Some(4), Some(48)),
                ],
                true,
            ),
            (&[(Some(false), Some(3), Some(47))], false),
            // A takeover (same client id): the old connection's end, even before the new one's
            // start, leaves the device online.
            (
                &[
                    (Some(true), Some(5), None),
                    (None, Some(5), None),
                    (Some(true), Some(6), Some(46)),
                ],
                true,
            ),
        ];
        for (updates, online) in cases {
            let mut mark = 0;
            for &(on, conn, battery) in updates {
                r.set_device_status(d.clone(), on, battery, 10, conn)
                    .await
                    .unwrap();
                mark = battery.unwrap_or(mark);
            }
            let e = status_with(&mut events, mark).await;
            assert_eq!(e.online, online, "after {updates:?}");
            assert_eq!(r.device(d.clone()).await.unwrap().online, online);
        }
        r.set_device_status(d.clone(), Some(false), Some(45), 16, Some(6))
            .await
            .unwrap();
        assert!(!status_with(&mut events, 45).await.online);
    }

    #[tokio::test]
    async fn a_device_authenticates_with_its_secret_only() {
        let (dir, r) = registry().await;
        let p = PatientId::parse("p1").unwrap();
        r.create_patient(
            p.clone(),
            "Ada".into(),
            None,
            None,
            PatientDetails::default(),
            0,
        )
        .await
        .unwrap();
        let (_, secret) = r
            .create_device(DeviceId::parse("d1").unwrap(), p, "scale", 0)
            .await
            .unwrap();
        assert_eq!(secret.len(), 47);
        assert!(secret.starts_with(SECRET_PREFIX));
        assert!(r.authenticate("d1", secret.as_bytes()).is_some());
        assert!(r.authenticate("d1", b"wrong").is_none());
        assert!(r.authenticate("d2", secret.as_bytes()).is_none());
        // The secret is not stored, only its hash; and it survives a restart.
        let raw = std::fs::read(dir.path().join("registry.db")).unwrap();
        assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()));
        let r2 = Registry::open(dir.path(), Profiles::built_in().unwrap()).unwrap();
        assert!(r2.authenticate("d1", secret.as_bytes()).is_some());
    }

    #[tokio::test]
    async fn refuses_duplicates_unknown_patients_and_profiles() {
        let (_dir, r) = registry().await;
        let p = PatientId::parse("p1").unwrap();
        r.create_patient(
            p.clone(),
            "Ada".into(),
            Some("1950-04-23".into()),
            None,
            PatientDetails::default(),
            0,
        )
        .await
        .unwrap();
        assert!(matches!(
            r.create_patient(
                p.clone(),
                "Ada".into(),
                None,
                None,
                PatientDetails::default(),
                0
            )
            .await,
            Err(RegistryError::Exists(_))
        ));
        assert!(matches!(
            r.create_patient(
                PatientId::parse("p2").unwrap(),
                "B".into(),
                Some("1950-13-01".into()),
                None,
                PatientDetails::default(),
                0
            )
            .await,
            Err(RegistryError::Invalid(_))
        ));
        let d = DeviceId::parse("d1").unwrap();
        assert!(matches!(
            r.create_device(d.clone(), PatientId::parse("nobody").unwrap(), "scale", 0)
                .await,
            Err(RegistryError::NotFound(_))
        ));
        assert!(matches!(
            r.create_device(d.clone(), p.clone(), "toaster", 0).await,
            Err(RegistryError::Invalid(_))
        ));
        r.create_device(d.clone(), p.clone(), "scale", 0)
            .await
            .unwrap();
        assert!(matches!(
            r.create_device(d, p, "scale", 0).await,
            Err(RegistryError::Exists(_))
        ));
    }

    #[tokio::test]
    async fn an_mrn_belongs_to_one_patient_and_can_be_changed_or_cleared() {
        let (_dir, r) = registry().await;
        let (p1, p2) = (
            PatientId::parse("p1").unwrap(),
            PatientId::parse("p2").unwrap(),
        );
        let none = PatientDetails::default;
        let a = r
            .create_patient(
                p1.clone(),
                "Ada".into(),
                None,
                Some(" M-1 ".into()),
                none(),
                0,
            )
            .await
            .unwrap();
        assert_eq!(a.mrn.as_deref(), Some("M-1"));
        // Another patient cannot have it, at creation or by an update; nothing is half done.
        assert!(matches!(
            r.create_patient(p2.clone(), "Bo".into(), None, Some("M-1".into()), none(), 0)
                .await,
            Err(RegistryError::Exists(m)) if m == "another patient with this mrn"
        ));
        assert!(r.patient(p2.clone()).await.is_err());
        r.create_patient(p2.clone(), "Bo".into(), None, None, none(), 0)
            .await
            .unwrap();
        assert!(matches!(
            r.update_patient(
                p2.clone(),
                Some("Bob".into()),
                None,
                Some("M-1".into()),
                none()
            )
            .await,
            Err(RegistryError::Exists(_))
        ));
        assert_eq!(r.patient(p2.clone()).await.unwrap().name, "Bo");
        assert!(matches!(
            r.update_patient(p2.clone(), None, None, Some("M 2".into()), none())
                .await,
            Err(RegistryError::Invalid(_))
        ));
        // Unchanged, set again to the same, changed, cleared: only real changes say so.
        let (b, changed) = r
            .update_patient(p1.clone(), None, None, None, none())
            .await
            .unwrap();
        assert_eq!((b.mrn.as_deref(), changed), (Some("M-1"), false));
        let (_, changed) = r
            .update_patient(p1.clone(), None, None, Some("M-1".into()), none())
            .await
            .unwrap();
        assert!(!changed);
        let (_, changed) = r
            .update_patient(p1.clone(), None, None, Some("".into()), none())
            .await
            .unwrap();
        assert!(changed);
        assert_eq!(r.patient(p1).await.unwrap().mrn, None);
        // Cleared, the MRN is free for the other patient.
        let (b, changed) = r
            .update_patient(p2, None, None, Some("M-1".into()), none())
            .await
            .unwrap();
        assert_eq!((b.mrn.as_deref(), changed), (Some("M-1"), true));
        assert_eq!(
            serde_json::to_value(&b).unwrap()["mrn"],
            serde_json::json!("M-1")
        );
    }

    #[tokio::test]
    async fn every_change_of_access_is_announced_and_other_changes_are_not() {
        let (_dir, r) = registry().await;
        let mut access = r.subscribe_access();
        let mut announced = || match access.try_recv() {
            Ok(c) => Some(c),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty) => None,
            Err(e) => panic!("{e}"),
        };
        let nina = || Some(AccessChange::User("nina".into()));
        r.create_team("north", "North", 0, None).await.unwrap();
        r.create_team("south", "South", 0, None).await.unwrap();
        assert_eq!(announced(), None, "a new team changes nobody's access");
        r.add_user("nina", Role::Clinician, "amber kettle orbit meadow", 0)
            .await
            .unwrap();
        r.set_user_teams("nina", vec!["north".into()])
            .await
            .unwrap();
        assert_eq!(announced(), nina(), "teams set");
        let p = PatientId::parse("p1").unwrap();
        let north = PatientDetails {
            care_team: Some("north".into()),
            ..PatientDetails::default()
        };
        r.create_patient(p.clone(), "Ada".into(), None, None, north, 0)
            .await
            .unwrap();
        assert_eq!(
            announced(),
            Some(AccessChange::Patient {
                id: "p1".into(),
                team: Some("north".into())
            }),
            "a patient created"
        );
        let phone = PatientDetails {
            phone: Some("555".into()),
            ..PatientDetails::default()
        };
        r.update_patient(p.clone(), None, None, None, phone)
            .await
            .unwrap();
        assert_eq!(
            announced(),
            None,
            "a new phone number changes nobody's access"
        );
        let moved = PatientDetails {
            care_team: Some("south".into()),
            ..PatientDetails::default()
        };
        r.update_patient(p, None, None, None, moved).await.unwrap();
        assert_eq!(
            announced(),
            Some(AccessChange::Patient {
                id: "p1".into(),
                team: Some("south".into())
            }),
            "a patient moved to another team"
        );
        let update = UserUpdate {
            teams: Some(Vec::new()),
            ..UserUpdate::default()
        };
        r.update_user("nina", update, test_line).await.unwrap();
        assert_eq!(announced(), nina(), "a user's teams changed");
        let (session, _) = r.create_session("nina", 0, 1_000).await.unwrap();
        assert_eq!(announced(), None, "a new session changes nobody's access");
        r.end_session(&session, None).await.unwrap();
        assert_eq!(announced(), nina(), "signed out");
        r.end_session(&session, None).await.unwrap();
        assert_eq!(announced(), None, "no such session: nothing changed");
        let (_, t) = r
            .create_api_token("nina", "poller", Scope::Read, 0, 1_000, |id| {
                token_line("token.create", id)
            })
            .await
            .unwrap();
        assert_eq!(announced(), None);
        let line = token_line("token.revoke", &t.id);
        r.revoke_api_token(t.id, 1, line).await.unwrap();
        assert_eq!(announced(), nina(), "a token revoked");
    }

    #[tokio::test]
    async fn passwords_are_argon2id_and_verified() {
        let (_dir, r) = registry().await;
        r.add_user("nurse", Role::Clinician, "correct horse battery", 0)
            .await
            .unwrap();
        assert_eq!(
            r.verify_user("nurse", "correct horse battery", "127.0.0.1")
                .await
                .unwrap(),
            Some(Role::Clinician)
        );
        for (user, password) in [
            ("nurse", "wrong password!"),
            ("nobody", "correct horse battery"),
        ] {
            assert_eq!(
                r.verify_user(user, password, "127.0.0.1").await.unwrap(),
                None
            );
        }
        assert!(r.add_user("x", Role::Admin, "short", 0).await.is_err());
        let hash: String = r
            .with(|c| Ok(c.query_row("SELECT password_hash FROM users", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
    }

    #[tokio::test]
    async fn a_user_is_added_while_another_connection_is_writing() {
        let (dir, r) = registry().await;
        // Another writer on the database (the device status writer, `vigil user add` beside
        // the gateway) holds the write lock while the user is added.
        let other = rusqlite::Connection::open(dir.path().join("registry.db")).unwrap();
        other
            .execute_batch(
                "BEGIN IMMEDIATE;
                 INSERT INTO teams (id, name, created_ms) VALUES ('north', 'North', 0);",
            )
            .unwrap();
        let add = r.add_user("nina", Role::Clinician, "correct horse battery", 0);
        tokio::pin!(add);
        if let Ok(done) = tokio::time::timeout(std::time::Duration::from_secs(1), &mut add).await {
            panic!("the user was not added after the other writer: {done:?}");
        }
        other.execute_batch("COMMIT").unwrap();
        add.await.unwrap();
        assert_eq!(r.user("nina").await.unwrap().role, Role::Clinician);
    }

    #[tokio::test]
    async fn a_failed_device_status_batch_is_kept_and_written_at_the_next_try() {
        let (dir, r) = registry().await;
        let p = PatientId::parse("p1").unwrap();
        r.create_patient(
            p.clone(),
            "Ada".into(),
            None,
            None,
            PatientDetails::default(),
            0,
        )
        .await
        .unwrap();
        let (a, b) = (
            DeviceId::parse("ox-a").unwrap(),
            DeviceId::parse("ox-b").unwrap(),
        );
        for d in [&a, &b] {
            r.create_device(d.clone(), p.clone(), "scale", 0)
                .await
                .unwrap();
        }
        let mut events = r.subscribe_devices();
        // The database refuses every device status change for a while.
        let other = rusqlite::Connection::open(dir.path().join("registry.db")).unwrap();
        other
            .execute_batch(
                "CREATE TRIGGER refuse_status BEFORE UPDATE ON devices
                 BEGIN SELECT RAISE(ABORT, 'injected: status refused'); END;",
            )
            .unwrap();
        // a comes online, then goes; b comes online: each device's newest status must land.
        r.set_device_status(a.clone(), Some(true), Some(90), 1_000, Some(1))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while r.device_status_failures() < 1 {
            assert!(tokio::time::Instant::now() < deadline, "no failed batch");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        r.set_device_status(a.clone(), Some(false), None, 2_000, Some(1))
            .await
            .unwrap();
        r.set_device_status(b.clone(), Some(true), Some(80), 2_000, Some(2))
            .await
            .unwrap();
        let failed = r.device_status_failures();
        while r.device_status_failures() == failed {
            assert!(tokio::time::Instant::now() < deadline, "no failed batch");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        other.execute_batch("DROP TRIGGER refuse_status").unwrap();
        status_with(&mut events, 80).await;
        let rows: Vec<(String, bool, Option<u8>, i64)> = r
            .with(|c| {
                let mut stmt =
                    c.prepare("SELECT id, online, battery, last_seen_ms FROM devices ORDER BY id")?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
            .unwrap();
        assert_eq!(
            rows,
            [
                ("ox-a".to_owned(), false, Some(90), 2_000),
                ("ox-b".to_owned(), true, Some(80), 2_000),
            ]
        );
    }

    #[tokio::test]
    async fn the_audit_chain_detects_a_changed_line() {
        let (_dir, r) = registry().await;
        let p = PatientId::parse("p1").unwrap();
        for i in 0..3 {
            r.audit(
                AuditEntry {
                    actor: "admin",
                    action: "read",
                    patient_id: Some(&p),
                    target: "observations",
                    remote: "127.0.0.1",
                },
                i,
            )
            .await
            .unwrap();
        }
        assert_eq!(r.verify_audit_chain().await.unwrap(), 3);
        r.with(|c| Ok(c.execute("UPDATE audit SET actor = 'mallory' WHERE id = 2", [])?))
            .await
            .unwrap();
        let e = r.verify_audit_chain().await.unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
