//! The registry: patients, their devices (with the hash of each device's secret), dashboard
//! users, and the audit trail of who read or changed a patient's data.
//!
//! It lives in its own SQLite file (`registry.db`), apart from the time-series store, so the
//! store's writer never waits on it; what has moved behind [`storage`] can also live on
//! PostgreSQL. Device credentials are also held in memory, loaded through the seam at open and
//! changed only after a change of them is committed, so that a device connecting costs no
//! database read.
//!
//! It must never keep a device secret or a password in the clear: device secrets are 256-bit
//! random values stored as SHA-256 (a slow hash adds nothing to a secret with that much entropy
//! and would turn every reconnect storm into a CPU storm); passwords, which people choose, are
//! stored as Argon2id, hashed and checked only in [`password`]'s bounded hasher.

pub mod access;
mod actor;
pub mod audit;
mod care_teams;
pub mod contacts;
pub mod cover;
pub mod devices;
pub mod discharge;
pub mod enrollment;
mod error;
mod failure_counts;
pub mod lease;
pub mod mosquitto;
mod mrn;
pub mod notifications;
pub mod outbox;
mod paging;
mod password;
mod password_policy;
pub mod patients;
pub mod plan_in_force;
pub mod postgres;
mod profile;
mod programmes;
pub mod record;
mod rotas;
pub mod setups;
pub mod sqlite;
pub mod storage;
pub mod throttles;
pub mod time_log;
pub mod timer;
pub mod tokens;
pub mod transfer;
mod users;
pub mod visits;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use access::{Role, Team, User};
pub use actor::token_actor;
pub use audit::{AuditEntry, AuditExportLine, AuditRecord};
pub use care_teams::{UnseenPatient, UnseenReason, initial_teams};
pub use devices::{BATTERY_LOW_PERCENT, Device, DeviceStatus, SECRET_PREFIX};
pub use error::RegistryError;
pub use mrn::MRN_MAX_CHARS;
pub use outbox::{Delivery, Lane, OutboxRow, QueuedReading, READING, Settled};
pub use patients::{DEFAULT_TEAM, NOT_CLEARED, Patient, PatientAudit, PatientDetails};
pub use profile::{PayloadFormat, Profile, ProfileError, Profiles};
pub use tokens::{ApiToken, Scope, TOKEN_PREFIX};
pub use users::{Session, UserUpdate};

use crate::domain::{DeviceId, PatientId};

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
    /// This process's name among the instances sharing the database: leases are held under it.
    instance: Arc<str>,
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

/// A name for this process among instances: `host-pid-random`.
fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "vigil".into());
    let mut random = [0u8; 4];
    // Without randomness the host and process id still tell this process from another.
    let _ = getrandom::fill(&mut random);
    format!("{host}-{}-{}", std::process::id(), hex::encode(random))
}

/// The hasher's client for passwords set by an admin or on the command line (not sign-ins).
const ACCOUNTS: &str = "accounts";

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
async fn status_writer(
    db: Arc<dyn storage::Storage>,
    mut rx: tokio::sync::mpsc::Receiver<StatusUpdate>,
    events: tokio::sync::broadcast::Sender<Arc<DeviceStatus>>,
    failures: Arc<std::sync::atomic::AtomicU64>,
    instance: String,
) {
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
            let Some(first) = rx.recv().await else {
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
        let batch = pending
            .iter()
            .map(|(id, &(online, battery, at_ms))| devices::StatusChange {
                id: id.as_str().to_owned(),
                online,
                battery,
                at_ms,
                instance: instance.clone(),
            })
            .collect();
        match db.write_device_status(batch).await {
            Ok(written) => {
                pending.clear();
                retry = STATUS_RETRY_INITIAL;
                for d in written {
                    let _ = events.send(Arc::new(d));
                }
            }
            Err(e) => {
                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(STATUS_RETRY_MAX);
            }
        }
        if closed && pending.is_empty() {
            return;
        }
    }
}

/// The instances whose heartbeat lease is held now.
async fn live_instances(db: &dyn storage::Storage) -> Result<Vec<String>, RegistryError> {
    Ok(db
        .live_leases(lease::INSTANCE_PREFIX.into(), crate::domain::now_ms())
        .await?
        .into_iter()
        .map(|l| l.holder)
        .collect())
}

/// The first pause after a failed device status batch; it doubles on each failure.
const STATUS_RETRY_INITIAL: std::time::Duration = std::time::Duration::from_millis(50);
/// The longest pause between tries of a failed device status batch.
const STATUS_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// The credential cache, loaded from every device's stored credentials. A row it cannot use
/// (an unknown profile, a damaged hash) is left out: that device cannot connect.
async fn credential_cache(
    db: &dyn storage::Storage,
    profiles: &Profiles,
) -> Result<HashMap<DeviceId, DeviceAuth>, RegistryError> {
    let mut devices = HashMap::new();
    for c in db.device_credentials().await? {
        let (Ok(id), Ok(patient_id), Some(profile), Ok(secret_hash)) = (
            DeviceId::parse(&c.id),
            PatientId::parse(&c.patient_id),
            profiles.get(&c.profile),
            <[u8; 32]>::try_from(c.secret_hash.as_slice()),
        ) else {
            tracing::warn!(device_id = %c.id, "device row unusable (unknown profile?); it cannot connect");
            continue;
        };
        devices.insert(
            id,
            DeviceAuth {
                patient_id,
                profile: profile.clone(),
                secret_hash,
                revoked: c.revoked,
            },
        );
    }
    Ok(devices)
}

/// Makes the audit line of a change to a device from the device's patient.
pub type DeviceAudit<'a> = dyn Fn(&PatientId) -> audit::NewAuditLine + Send + Sync + 'a;

/// A new device secret and what is kept of it.
fn new_secret_hashes() -> Result<(String, devices::SecretHashes), RegistryError> {
    let secret = devices::new_secret()?;
    let hashes = devices::SecretHashes {
        sha256: sha256(secret.as_bytes()),
        broker: mosquitto::password_hash(&secret)
            .map_err(|e| RegistryError::Db(format!("no randomness: {e}")))?,
    };
    Ok((secret, hashes))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Registry {
    /// Opens (or creates) `registry.db` in `dir` and loads device credentials into memory.
    /// Starts the device status writer on the current Tokio runtime.
    pub async fn open(dir: &Path, profiles: Profiles) -> Result<Registry, RegistryError> {
        let sqlite = sqlite::SqliteDb::open(&dir.join("registry.db"))?;
        Registry::on(Arc::new(sqlite), profiles).await
    }

    /// Opens the registry in the PostgreSQL database at `url` (see
    /// [`crate::pg::connect`]: TLS through rustls, `ca_file` or the system's roots), bringing
    /// its schema up to date under the migrations' lock, and loads device credentials into
    /// memory.
    pub async fn open_postgres(
        url: &str,
        ca_file: Option<&Path>,
        profiles: Profiles,
    ) -> Result<Registry, RegistryError> {
        let db = postgres::PgDb::open(url, ca_file).await?;
        Registry::on(Arc::new(db), profiles).await
    }

    /// Like [`Registry::open_postgres`], on a pool already connected (shared with the
    /// readings' store).
    pub async fn on_postgres(
        pool: deadpool_postgres::Pool,
        profiles: Profiles,
    ) -> Result<Registry, RegistryError> {
        let db = postgres::PgDb::on(pool).await?;
        Registry::on(Arc::new(db), profiles).await
    }

    /// The registry on `db`.
    async fn on(
        db: Arc<dyn storage::Storage>,
        profiles: Profiles,
    ) -> Result<Registry, RegistryError> {
        // This instance is known to the others from now on (its heartbeat lease, renewed by
        // `cluster::membership`); no connection survives a restart, so every device held by
        // an instance that is gone — this process's former self too — is offline. Devices
        // held by live instances stay as they are.
        let instance = instance_name();
        db.acquire_lease(
            lease::instance_lease(&instance),
            instance.clone(),
            crate::domain::now_ms(),
            lease::INSTANCE_TTL_MS,
        )
        .await?;
        let live = live_instances(&*db).await?;
        db.mark_offline_unless_held_by(live).await?;
        let devices = credential_cache(&*db, &profiles).await?;
        let (status, rx) = tokio::sync::mpsc::channel(65_536);
        let (device_events, _) = tokio::sync::broadcast::channel(4096);
        let status_failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
        tokio::spawn(status_writer(
            db.clone(),
            rx,
            device_events.clone(),
            status_failures.clone(),
            instance.clone(),
        ));
        Ok(Registry {
            db,
            devices: Arc::new(RwLock::new(devices)),
            profiles,
            status,
            device_events,
            status_failures,
            credentials_changed: tokio::sync::broadcast::channel(1024).0,
            hasher: password::Hasher::start()?,
            access: tokio::sync::broadcast::channel(ACCESS_EVENTS).0,
            instance: instance.into(),
        })
    }

    /// Whether the database answers (always, embedded).
    pub async fn ping(&self) -> Result<(), RegistryError> {
        self.db.ping().await
    }

    /// The leases whose name starts with `prefix` held now, by name.
    pub async fn live_leases(&self, prefix: &str) -> Result<Vec<lease::Lease>, RegistryError> {
        self.db
            .live_leases(prefix.to_owned(), crate::domain::now_ms())
            .await
    }

    /// The instances sharing the database now: those whose heartbeat lease is held.
    pub async fn live_instances(&self) -> Result<Vec<String>, RegistryError> {
        live_instances(&*self.db).await
    }

    /// Marks offline the devices held by instances that are gone (their heartbeat lapsed or
    /// was given up); how many.
    pub async fn mark_devices_of_gone_instances(&self) -> Result<u64, RegistryError> {
        let mut live = self.live_instances().await?;
        if !live.iter().any(|i| *i == *self.instance) {
            // Between two heartbeats this instance is alive whatever the lease says.
            live.push(self.instance.to_string());
        }
        self.db.mark_offline_unless_held_by(live).await
    }

    /// This process's name among the instances sharing the database (host, process id and a
    /// random part, so a restarted process is a new instance).
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    /// The secret `name` every instance sharing the database agrees on: the one stored, or
    /// `candidate`, stored now (see [`storage::SecretStore`]).
    pub async fn shared_secret(
        &self,
        name: &str,
        candidate: Vec<u8>,
    ) -> Result<Vec<u8>, RegistryError> {
        self.db
            .shared_secret(name.to_owned(), candidate, crate::domain::now_ms())
            .await
    }

    /// Takes or renews lease `name` for this instance for `ttl_ms` (see [`lease`]); `None`
    /// when another instance holds it.
    pub async fn acquire_lease(
        &self,
        name: &str,
        ttl_ms: i64,
    ) -> Result<Option<lease::Lease>, RegistryError> {
        self.db
            .acquire_lease(
                name.to_owned(),
                self.instance.to_string(),
                crate::domain::now_ms(),
                ttl_ms,
            )
            .await
    }

    /// Gives `lease` up, if this instance still holds it at its epoch.
    pub async fn release_lease(&self, lease: &lease::Lease) -> Result<bool, RegistryError> {
        self.db
            .release_lease(lease.name.clone(), lease.holder.clone(), lease.epoch)
            .await
    }

    /// The patients no clinician can see (only admins do), those with the most open alerts
    /// first (see [`care_teams`]).
    pub async fn unseen_patients(&self) -> Result<Vec<UnseenPatient>, RegistryError> {
        self.db.unseen_patients().await
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

    /// Creates a patient; `mrn` is checked and must be no other patient's. `audit`, when given,
    /// is appended in the same transaction (its MRN line only if the patient has an MRN).
    #[expect(
        clippy::too_many_arguments,
        reason = "the patient's fields as the API gives them, each checked here, and the audit lines that commit with them"
    )]
    pub async fn create_patient(
        &self,
        id: PatientId,
        name: String,
        birth_date: Option<String>,
        mrn: Option<String>,
        details: PatientDetails,
        now_ms: i64,
        audit: Option<PatientAudit>,
    ) -> Result<Patient, RegistryError> {
        let name = patients::check_name(&name)?;
        if let Some(d) = &birth_date {
            patients::check_birth_date(d)?;
        }
        let mrn = mrn.as_deref().map(mrn::check).transpose()?.flatten();
        details.check()?;
        let patient = patients::NewPatient {
            id: id.as_str().to_owned(),
            name,
            birth_date,
            mrn,
            created_ms: now_ms,
            details: patients::on_a_team(details),
        };
        let p = self.db.create_patient(patient, audit).await?;
        self.access_changed(AccessChange::Patient {
            id: p.id.as_str().to_owned(),
            team: p.details.care_team.clone(),
        });
        Ok(p)
    }

    /// Changes a patient's name, birth date, MRN or details; `None` leaves a field as it is, an
    /// empty MRN clears it. The care team can be changed, not cleared. The change is merged
    /// into the patient as stored when it is written, so concurrent changes of different fields
    /// all survive. `audit`, when given, is appended in the same transaction (its MRN line only
    /// if the MRN changed). Returns the patient as it now is and whether its MRN changed.
    pub async fn update_patient(
        &self,
        id: PatientId,
        name: Option<String>,
        birth_date: Option<String>,
        mrn: Option<String>,
        details: PatientDetails,
        audit: Option<PatientAudit>,
    ) -> Result<(Patient, bool), RegistryError> {
        let name = name.as_deref().map(patients::check_name).transpose()?;
        if let Some(d) = &birth_date {
            patients::check_birth_date(d)?;
        }
        // `None`: unchanged; `Some(None)`: cleared.
        let mrn = mrn.as_deref().map(mrn::check).transpose()?;
        details.check()?;
        patients::check_not_cleared(&details)?;
        let change = patients::PatientChange {
            name,
            birth_date,
            mrn,
            details,
        };
        let done = self
            .db
            .update_patient(id.as_str().to_owned(), change, audit)
            .await?;
        if done.team_changed {
            self.access_changed(AccessChange::Patient {
                id: id.as_str().to_owned(),
                team: done.patient.details.care_team.clone(),
            });
        }
        Ok((done.patient, done.mrn_changed))
    }

    pub async fn patient(&self, id: PatientId) -> Result<Patient, RegistryError> {
        self.db
            .patient(id.as_str().to_owned())
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("patient {id}")))
    }

    pub async fn patients(&self) -> Result<Vec<Patient>, RegistryError> {
        self.db.patients().await
    }

    /// The care team a patient belongs to: `Err(NotFound)` for no such patient.
    pub async fn patient_team(&self, id: PatientId) -> Result<Option<String>, RegistryError> {
        self.db
            .patient_team(id.as_str().to_owned())
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("patient {id}")))
    }

    /// Provisions a device and returns it with its secret, which is not kept and cannot be
    /// shown again. `audit`, when given, is appended in the same transaction: the secret is
    /// answered only once the device, its secret's hash and the line are all committed.
    pub async fn create_device(
        &self,
        id: DeviceId,
        patient_id: PatientId,
        profile: &str,
        now_ms: i64,
        audit: Option<audit::NewAuditLine>,
    ) -> Result<(Device, String), RegistryError> {
        let Some(prof) = self.profiles.get(profile).cloned() else {
            let known: Vec<&str> = self.profiles.ids().collect();
            return Err(RegistryError::Invalid(format!(
                "profile {profile:?} is not one of {}",
                known.join(", ")
            )));
        };
        let (secret, hashes) = new_secret_hashes()?;
        let new = devices::NewDevice {
            id: id.as_str().to_owned(),
            patient_id: patient_id.as_str().to_owned(),
            profile: prof.id.clone(),
            created_ms: now_ms,
            secret: hashes.clone(),
        };
        let device = self.db.create_device(new, audit).await?;
        if let Ok(mut map) = self.devices.write() {
            map.insert(
                id,
                DeviceAuth {
                    patient_id,
                    profile: prof,
                    secret_hash: hashes.sha256,
                    revoked: false,
                },
            );
        }
        Ok((device, secret))
    }

    /// The version of the devices' credentials on a shared database (see
    /// [`storage::DeviceStore::credentials_version`]); `None` on SQLite.
    pub async fn credentials_version(&self) -> Result<Option<i64>, RegistryError> {
        self.db.credentials_version().await
    }

    /// Reloads the cache of device credentials from the database (another instance changed
    /// some) and tells the connections' holders of every device whose credentials changed
    /// or went (they end its connections); how many changed.
    pub async fn reload_credentials(&self) -> Result<usize, RegistryError> {
        let fresh = credential_cache(&*self.db, &self.profiles).await?;
        let changed: Vec<DeviceId> = {
            let Ok(mut map) = self.devices.write() else {
                return Err(RegistryError::Db("the credential cache is poisoned".into()));
            };
            let changed = map
                .iter()
                .filter(|(id, old)| {
                    fresh.get(*id).is_none_or(|new| {
                        new.secret_hash != old.secret_hash
                            || new.revoked != old.revoked
                            || new.patient_id != old.patient_id
                    })
                })
                .map(|(id, _)| id.clone())
                .collect();
            *map = fresh;
            changed
        };
        for id in &changed {
            let _ = self.credentials_changed.send(id.clone());
        }
        Ok(changed.len())
    }

    /// Devices whose credentials were just revoked or replaced: whoever holds their
    /// connections ends them.
    pub fn subscribe_credential_changes(&self) -> tokio::sync::broadcast::Receiver<DeviceId> {
        self.credentials_changed.subscribe()
    }

    /// The audit line `audit` makes of the device's patient (a device never changes patient),
    /// `None` when there is none.
    async fn device_line(
        &self,
        id: &DeviceId,
        audit: Option<&DeviceAudit<'_>>,
    ) -> Result<Option<audit::NewAuditLine>, RegistryError> {
        match audit {
            Some(f) => Ok(Some(f(&self.device(id.clone()).await?.patient_id))),
            None => Ok(None),
        }
    }

    /// Revokes a device: it can no longer connect, and its connections are ended (by the
    /// endpoint, told through [`Registry::subscribe_credential_changes`]). Its readings stay.
    /// `audit`, when given, makes the audit line of the device's patient, appended in the same
    /// transaction.
    pub async fn revoke_device(
        &self,
        id: DeviceId,
        now_ms: i64,
        audit: Option<&DeviceAudit<'_>>,
    ) -> Result<Device, RegistryError> {
        let line = self.device_line(&id, audit).await?;
        let dev = self
            .db
            .revoke_device(id.as_str().to_owned(), now_ms, line)
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
    /// connections made with it are ended. `audit`, when given, makes the audit line of the
    /// device's patient, appended in the same transaction: the new secret is answered only once
    /// its hash and the line are committed, and until then the old secret still works.
    pub async fn rotate_device_secret(
        &self,
        id: DeviceId,
        audit: Option<&DeviceAudit<'_>>,
    ) -> Result<(Device, String), RegistryError> {
        let line = self.device_line(&id, audit).await?;
        let (secret, hashes) = new_secret_hashes()?;
        let dev = self
            .db
            .rotate_device_secret(id.as_str().to_owned(), hashes.clone(), line)
            .await?;
        if let Ok(mut map) = self.devices.write()
            && let Some(a) = map.get_mut(&id)
        {
            a.secret_hash = hashes.sha256;
        }
        let _ = self.credentials_changed.send(id);
        Ok((dev, secret))
    }

    pub async fn device(&self, id: DeviceId) -> Result<Device, RegistryError> {
        self.db
            .devices(Some(id.as_str().to_owned()), None)
            .await?
            .pop()
            .ok_or_else(|| RegistryError::NotFound(format!("device {id}")))
    }

    /// A patient's devices, by id.
    pub async fn patient_devices(&self, patient: PatientId) -> Result<Vec<Device>, RegistryError> {
        self.db
            .devices(None, Some(patient.as_str().to_owned()))
            .await
    }

    /// Every device, for the monitoring panel.
    pub async fn all_devices(&self) -> Result<Vec<Device>, RegistryError> {
        self.db.devices(None, None).await
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
        self.db.broker_passwords().await
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

    /// Appends `lines` in one transaction, in their order: all or none (a read that shows
    /// many patients writes a line per patient).
    pub async fn audit_batch(&self, lines: Vec<audit::NewAuditLine>) -> Result<(), RegistryError> {
        self.db.append_audit_batch(lines).await
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
        if user.disabled {
            // A disabled user's tokens stop working at once, on every instance: each request
            // reads the user.
            return Ok(None);
        }
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

    /// Patient `p1` (Ada), created unaudited.
    async fn patient_p1(r: &Registry) -> PatientId {
        let p = PatientId::parse("p1").unwrap();
        r.create_patient(
            p.clone(),
            "Ada".into(),
            None,
            None,
            PatientDetails::default(),
            0,
            None,
        )
        .await
        .unwrap();
        p
    }

    async fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path(), Profiles::built_in().unwrap())
            .await
            .unwrap();
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
        let p = patient_p1(&r).await;
        let d = DeviceId::parse("d1").unwrap();
        r.create_device(d.clone(), p, "scale", 0, None)
            .await
            .unwrap();
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
        let p = patient_p1(&r).await;
        let (_, secret) = r
            .create_device(DeviceId::parse("d1").unwrap(), p, "scale", 0, None)
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
        let r2 = Registry::open(dir.path(), Profiles::built_in().unwrap())
            .await
            .unwrap();
        assert!(r2.authenticate("d1", secret.as_bytes()).is_some());
    }

    /// A device's secret changes in the credential cache only once the change and its audit
    /// line are committed: when the audit trail refuses the line, the old secret still
    /// authenticates and a device not created cannot connect.
    #[tokio::test]
    async fn a_secret_change_the_audit_trail_refuses_leaves_the_old_secret_working() {
        let (dir, r) = registry().await;
        let p = patient_p1(&r).await;
        let d = DeviceId::parse("d1").unwrap();
        let (_, old) = r
            .create_device(d.clone(), p.clone(), "scale", 0, None)
            .await
            .unwrap();
        let other = rusqlite::Connection::open(dir.path().join("registry.db")).unwrap();
        other
            .execute_batch(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit
                 BEGIN SELECT RAISE(ABORT, 'injected: audit refused'); END;",
            )
            .unwrap();
        let line = |patient: &PatientId| audit::NewAuditLine {
            patient_id: Some(patient.as_str().to_owned()),
            ..token_line("device.rotate", "d1")
        };
        assert!(
            r.rotate_device_secret(d.clone(), Some(&line))
                .await
                .is_err()
        );
        assert!(r.revoke_device(d.clone(), 1, Some(&line)).await.is_err());
        assert!(
            r.authenticate("d1", old.as_bytes()).is_some(),
            "the old secret still works"
        );
        let d2 = DeviceId::parse("d2").unwrap();
        let made = r
            .create_device(d2.clone(), p.clone(), "scale", 0, Some(line(&p)))
            .await;
        assert!(made.is_err());
        assert!(
            r.device_auth(&d2).is_none(),
            "a device not created cannot connect"
        );
        other.execute_batch("DROP TRIGGER refuse_audit").unwrap();
        let (_, new) = r.rotate_device_secret(d, Some(&line)).await.unwrap();
        assert!(r.authenticate("d1", old.as_bytes()).is_none());
        assert!(r.authenticate("d1", new.as_bytes()).is_some());
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
            None,
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
                0,
                None
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
                0,
                None
            )
            .await,
            Err(RegistryError::Invalid(_))
        ));
        let d = DeviceId::parse("d1").unwrap();
        assert!(matches!(
            r.create_device(
                d.clone(),
                PatientId::parse("nobody").unwrap(),
                "scale",
                0,
                None
            )
            .await,
            Err(RegistryError::NotFound(_))
        ));
        assert!(matches!(
            r.create_device(d.clone(), p.clone(), "toaster", 0, None)
                .await,
            Err(RegistryError::Invalid(_))
        ));
        r.create_device(d.clone(), p.clone(), "scale", 0, None)
            .await
            .unwrap();
        assert!(matches!(
            r.create_device(d, p, "scale", 0, None).await,
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
                None,
            )
            .await
            .unwrap();
        assert_eq!(a.mrn.as_deref(), Some("M-1"));
        // Another patient cannot have it, at creation or by an update; nothing is half done.
        assert!(matches!(
            r.create_patient(p2.clone(), "Bo".into(), None, Some("M-1".into()), none(), 0, None)
                .await,
            Err(RegistryError::Exists(m)) if m == "another patient with this mrn"
        ));
        assert!(r.patient(p2.clone()).await.is_err());
        r.create_patient(p2.clone(), "Bo".into(), None, None, none(), 0, None)
            .await
            .unwrap();
        assert!(matches!(
            r.update_patient(
                p2.clone(),
                Some("Bob".into()),
                None,
                Some("M-1".into()),
                none(),
                None
            )
            .await,
            Err(RegistryError::Exists(_))
        ));
        assert_eq!(r.patient(p2.clone()).await.unwrap().name, "Bo");
        assert!(matches!(
            r.update_patient(p2.clone(), None, None, Some("M 2".into()), none(), None)
                .await,
            Err(RegistryError::Invalid(_))
        ));
        // Unchanged, set again to the same, changed, cleared: only real changes say so.
        let (b, changed) = r
            .update_patient(p1.clone(), None, None, None, none(), None)
            .await
            .unwrap();
        assert_eq!((b.mrn.as_deref(), changed), (Some("M-1"), false));
        let (_, changed) = r
            .update_patient(p1.clone(), None, None, Some("M-1".into()), none(), None)
            .await
            .unwrap();
        assert!(!changed);
        let (_, changed) = r
            .update_patient(p1.clone(), None, None, Some("".into()), none(), None)
            .await
            .unwrap();
        assert!(changed);
        assert_eq!(r.patient(p1).await.unwrap().mrn, None);
        // Cleared, the MRN is free for the other patient.
        let (b, changed) = r
            .update_patient(p2, None, None, Some("M-1".into()), none(), None)
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
        r.create_patient(p.clone(), "Ada".into(), None, None, north, 0, None)
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
        r.update_patient(p.clone(), None, None, None, phone, None)
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
        r.update_patient(p, None, None, None, moved, None)
            .await
            .unwrap();
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
        let (dir, r) = registry().await;
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
        let hash: String = crate::registry::sqlite::with_file(dir.path(), |c| {
            Ok(c.query_row("SELECT password_hash FROM users", [], |r| r.get(0))?)
        })
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
        let p = patient_p1(&r).await;
        let (a, b) = (
            DeviceId::parse("ox-a").unwrap(),
            DeviceId::parse("ox-b").unwrap(),
        );
        for d in [&a, &b] {
            r.create_device(d.clone(), p.clone(), "scale", 0, None)
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
        let rows: Vec<(String, bool, Option<u8>, i64)> =
            crate::registry::sqlite::with_file(dir.path(), |c| {
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
        let (dir, r) = registry().await;
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
        crate::registry::sqlite::with_file(dir.path(), |c| {
            Ok(c.execute("UPDATE audit SET actor = 'mallory' WHERE id = 2", [])?)
        })
        .await
        .unwrap();
        let e = r.verify_audit_chain().await.unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
