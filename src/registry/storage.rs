//! The registry's storage seam: what the registry asks of a database, one trait per aggregate,
//! in domain types only (no driver type crosses it). Two backends implement it:
//! [`super::sqlite`] (the embedded default) and [`super::postgres`] (several instances on one
//! database). One conformance suite (`tests/it/registry_conformance.rs`) runs on both.
//!
//! Each method is one transaction. A change that is audited takes its audit line and writes
//! both or neither; appends to the audit chain are serialized by the backend.
//!
//! A change that puts an entry on a patient's timeline (a visit's start and end) writes the
//! entry in the same transaction.
//!
//! An alert's change writes its timeline entry and its outbox rows in the same transaction, and
//! a clinician's action on it, a care plan's change and a note their audit line too.
//!
//! Moving the registry behind this seam goes aggregate by aggregate; so far: the audit trail,
//! video visits, API tokens, access (users, care teams, sign-in sessions), patients and their
//! devices, and the CRM record (care plans, alerts, notes, the timeline) with its outbox.

use std::collections::HashMap;

use super::access::{
    Credentials, NewSession, NewTeam, NewUser, StoredSession, StoredUser, Team, UserChange,
};
use super::audit::{AuditQuery, GENESIS, NewAuditLine, StoredAuditLine, VERIFY_PAGE, verify_page};
use super::care_teams::UnseenPatient;
use super::contacts::{Contact, ContactChange};
use super::cover::Cover;
use super::devices::{
    Device, DeviceStatus, NewDevice, SecretHashes, StatusChange, StoredCredential,
};
use super::discharge::DischargeChange;
use super::enrollment::{Enrollment, Programme};
use super::error::RegistryError;
use super::lease::{Fence, Lease};
use super::notifications::{LinkUse, Notification, Settlement, TakenStep};
use super::outbox::{Delivery, Lane, OutboxRow, QueuedReading, Settled};
use super::patients::{
    Discharged, NewPatient, Patient, PatientAudit, PatientChange, PatientUpdated,
};
use super::record::{
    Alert, AlertActionError, AlertQuery, Event, Noticed, Sink, TimelineRow, Triage,
};
use super::setups::Setup;
use super::throttles::{FailureCount, FailureReport};
use super::time_log::TimeEntry;
use super::timer::{Timer, TimerStop};
use super::tokens::{LiveBy, NewApiToken, StoredToken};
use super::visits::{NewVisit, StoredVisit, VisitHost};
use crate::alerts::engine::{Effect, OpenAlert, Resolution};
use crate::alerts::rules::CarePlan;
use crate::domain::PatientId;
use crate::domain::zone::Zone;
use crate::oncall::policy::Policy;
use crate::oncall::{Rota, Shift};

/// The audit trail.
#[async_trait::async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends `line` at the chain's end; its id.
    async fn append_audit(&self, line: NewAuditLine) -> Result<i64, RegistryError>;

    /// Appends `lines` at the chain's end in their order, in one transaction: all of them or
    /// none. For a read that shows many patients at once (the panel, the alert list, the live
    /// feed's opening), which writes one line per patient shown; nothing for an empty batch.
    async fn append_audit_batch(&self, lines: Vec<NewAuditLine>) -> Result<(), RegistryError>;

    /// The lines `q` selects.
    async fn audit_records(&self, q: AuditQuery) -> Result<Vec<StoredAuditLine>, RegistryError>;

    /// Up to `limit` lines with `id > after_id` and a time within `from_ms..=to_ms`, in chain
    /// order.
    async fn audit_page(
        &self,
        after_id: i64,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<StoredAuditLine>, RegistryError>;
}

/// Video visits, and the entries their start and end put on the patient's timeline.
#[async_trait::async_trait]
pub trait VisitStore: Send + Sync {
    /// Creates `visit` and appends `audit`, both or neither; the visit as stored.
    /// `NotFound` when its patient is unknown, `Exists` when its id is taken.
    async fn create_visit(
        &self,
        visit: NewVisit,
        audit: NewAuditLine,
    ) -> Result<StoredVisit, RegistryError>;

    /// The visit `id`, if there is one.
    async fn visit(&self, id: String) -> Result<Option<StoredVisit>, RegistryError>;

    /// Marks the visit started by `by` at `now_ms` and writes `visit.started` on the
    /// timeline, both or neither; a visit that has started or ended is left as it is. The visit
    /// as it is after; `NotFound` when there is none.
    async fn start_visit(
        &self,
        id: String,
        by: String,
        now_ms: i64,
    ) -> Result<StoredVisit, RegistryError>;

    /// Marks the visit ended by `by` at `now_ms` and writes `visit.ended` on the timeline,
    /// with the care team's time it adds ([`StoredVisit::time_entry`], dated in `zone`), all
    /// or nothing; an ended visit is left as it is. `audit`, when given, is appended in the
    /// same transaction whether or not the visit had ended (the request is audited either
    /// way). The visit as it is after; `NotFound` when there is none.
    async fn end_visit(
        &self,
        id: String,
        by: String,
        now_ms: i64,
        audit: Option<NewAuditLine>,
        zone: Zone,
    ) -> Result<StoredVisit, RegistryError>;

    /// Makes `host` the visit's host unless another instance hosts it whose heartbeat lease
    /// (`instance:<id>`) is held at `now_ms`; the host after, `None` when there is no visit
    /// `id`. Of several instances asking at once, one hosts it.
    async fn host_visit(
        &self,
        id: String,
        host: VisitHost,
        now_ms: i64,
    ) -> Result<Option<VisitHost>, RegistryError>;
}

/// The care programme: the programmes admins keep and patients' enrollments in them
/// ([`super::enrollment`]).
#[async_trait::async_trait]
pub trait ProgrammeStore: Send + Sync {
    /// Every programme, by id.
    async fn programmes(&self) -> Result<Vec<Programme>, RegistryError>;

    /// Adds `programme` (made by `by` at `now_ms`) and appends `audit`, both or neither.
    /// `Exists` when its id is taken.
    async fn add_programme(
        &self,
        programme: Programme,
        by: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<Programme, RegistryError>;

    /// Puts `enrollment`: the patient's episode with its start date changed, or a new episode.
    /// With it, one transaction: an `enrollment` timeline entry, `audit`, and (where the alert
    /// engine learns of changes through the database) word to the engine that the patient's
    /// care plan in force may have changed. `NotFound` when
    /// there is no such patient, `Invalid` (naming the programmes there are) when there is no
    /// such programme, `Exists` when it would overlap another of the patient's episodes; then
    /// nothing is written.
    async fn put_enrollment(
        &self,
        enrollment: Enrollment,
        audit: NewAuditLine,
    ) -> Result<Enrollment, RegistryError>;

    /// The patient's enrollment episodes, latest start first.
    async fn enrollments(&self, patient: PatientId) -> Result<Vec<Enrollment>, RegistryError>;

    /// Each patient whose latest episode has no end, with its programme: those currently in a
    /// programme, as the care plan in force reads them (`crm::record`).
    async fn open_enrollments(&self) -> Result<Vec<(PatientId, String)>, RegistryError>;

    /// Logs a time entry and appends `audit`, both or neither; `NotFound` when there is no
    /// such patient.
    async fn add_time(
        &self,
        entry: TimeEntry,
        audit: NewAuditLine,
    ) -> Result<TimeEntry, RegistryError>;

    /// The patient's time entry `id`, unless deleted.
    async fn time_entry(
        &self,
        patient: PatientId,
        id: String,
    ) -> Result<Option<TimeEntry>, RegistryError>;

    /// Replaces the entry (same patient and id, not deleted) with `entry` and appends `audit`,
    /// both or neither, if it is still at `version_ms` (`TimeEntry::version_ms` when it was
    /// read): `Ok(None)` when it changed meanwhile (read it again), `NotFound` when it is gone.
    async fn update_time(
        &self,
        entry: TimeEntry,
        version_ms: i64,
        audit: NewAuditLine,
    ) -> Result<Option<TimeEntry>, RegistryError>;

    /// Marks the entry deleted by `by` at `now_ms` (kept, no longer listed or billed) and
    /// appends `audit`, both or neither; `NotFound` when there is none or it is deleted.
    async fn delete_time(
        &self,
        patient: PatientId,
        id: String,
        by: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<(), RegistryError>;

    /// Records a device set-up with its `device_setup` timeline entry and `audit`, one
    /// transaction. `NotFound` when there is no such patient; `Invalid` when the device is not
    /// (or no longer) the patient's; then nothing is written.
    async fn add_setup(&self, setup: Setup, audit: NewAuditLine) -> Result<Setup, RegistryError>;

    /// Starts `timer` (its user's) with `audit`, both or neither. `Exists` (naming the patient)
    /// when the user has a timer running; `NotFound` when there is no such patient.
    async fn start_timer(&self, timer: Timer, audit: NewAuditLine) -> Result<Timer, RegistryError>;

    /// The user's running timer, if any.
    async fn timer(&self, user: String) -> Result<Option<Timer>, RegistryError>;

    /// Stops the user's running timer at `now_ms` and logs its time entry
    /// ([`Timer::entry`], dated in `zone`) with `audit`, all or nothing; `Ok(None)` when no
    /// timer runs.
    async fn stop_timer(
        &self,
        user: String,
        now_ms: i64,
        stop: TimerStop,
        zone: Zone,
        audit: NewAuditLine,
    ) -> Result<Option<TimeEntry>, RegistryError>;

    /// The patient's device set-ups, by date and then as recorded.
    async fn setups(&self, patient: PatientId) -> Result<Vec<Setup>, RegistryError>;

    /// The patient's time entries dated `from` to `to` (`YYYY-MM-DD`, both included), by date
    /// and then as logged; deleted ones left out.
    async fn time_entries(
        &self,
        patient: PatientId,
        from: String,
        to: String,
    ) -> Result<Vec<TimeEntry>, RegistryError>;
}

/// Secrets the instances sharing a database must agree on (the key that signs visit links).
#[async_trait::async_trait]
pub trait SecretStore: Send + Sync {
    /// The secret `name`: the one stored, or `candidate`, stored now, when there is none. Of
    /// several instances asking at once, all get the same.
    async fn shared_secret(
        &self,
        name: String,
        candidate: Vec<u8>,
        now_ms: i64,
    ) -> Result<Vec<u8>, RegistryError>;
}

/// API tokens, kept only as the hash of their secret.
#[async_trait::async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores `token` and appends `audit`, both or neither. `Exists` if its id or hash is taken;
    /// `NotFound` if the backend knows its users and `token.user` is none of them.
    async fn create_token(
        &self,
        token: NewApiToken,
        audit: NewAuditLine,
    ) -> Result<StoredToken, RegistryError>;

    /// The tokens of `user` (its stored spelling), or every token (`None`): newest first, then
    /// by id.
    async fn tokens(&self, user: Option<String>) -> Result<Vec<StoredToken>, RegistryError>;

    /// One token by id, live or not.
    async fn token_by_id(&self, id: String) -> Result<Option<StoredToken>, RegistryError>;

    /// The token `by` names if it is live at `now_ms`: not revoked, and expiring after `now_ms`.
    async fn live_token(
        &self,
        by: LiveBy,
        now_ms: i64,
    ) -> Result<Option<StoredToken>, RegistryError>;

    /// Revokes token `id` at `now_ms` (a token already revoked keeps its first time) and appends
    /// `audit`, both or neither; the token as it now is. `NotFound` (and nothing appended) if
    /// there is no such token.
    async fn revoke_token(
        &self,
        id: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<StoredToken, RegistryError>;
}

/// Dashboard users, care teams and sign-in sessions.
///
/// A user is found by any spelling of their name: the exact spelling if a user has it, else
/// the one user whose name matches ignoring case (none if two older accounts differ only in
/// case). What is stored and returned is the spelling the user was created with.
#[async_trait::async_trait]
pub trait AccessStore: Send + Sync {
    /// Creates `user` on its teams and appends `audit` (when given), all or nothing; the user
    /// as stored. `Exists` when a user of that name, in any case, exists; `Invalid` when one of
    /// its teams does not.
    async fn create_user(
        &self,
        user: NewUser,
        audit: Option<NewAuditLine>,
    ) -> Result<StoredUser, RegistryError>;

    /// The user `name` names, if any.
    async fn user(&self, name: String) -> Result<Option<StoredUser>, RegistryError>;

    /// Every user, by name (byte order).
    async fn users(&self) -> Result<Vec<StoredUser>, RegistryError>;

    /// What the password of the user `name` names is checked against, if there is such a user.
    async fn credentials(&self, name: String) -> Result<Option<Credentials>, RegistryError>;

    /// Applies `change` to the user `name` names and appends `audit` (when given), all or
    /// nothing; a new role or password ends the user's sessions in the same transaction. The
    /// user as it now is; `NotFound` if there is none, `Invalid` if a team does not exist.
    async fn update_user(
        &self,
        name: String,
        change: UserChange,
        audit: Option<NewAuditLine>,
    ) -> Result<StoredUser, RegistryError>;

    /// Creates `team` (without members) and appends `audit` (when given), both or neither.
    /// `Exists` when its id is taken.
    async fn create_team(
        &self,
        team: NewTeam,
        audit: Option<NewAuditLine>,
    ) -> Result<Team, RegistryError>;

    /// Every care team with its members, by id (byte order); members by name.
    async fn teams(&self) -> Result<Vec<Team>, RegistryError>;

    /// Starts `session` for its user, sweeping sessions expired at its creation time; the
    /// stored spelling of the user's name. `NotFound` if there is no such user.
    async fn create_session(&self, session: NewSession) -> Result<String, RegistryError>;

    /// The session whose token hashes to `hash`, if it has not expired at `now_ms`.
    async fn live_session(
        &self,
        hash: [u8; 32],
        now_ms: i64,
    ) -> Result<Option<StoredSession>, RegistryError>;

    /// Ends the session whose token hashes to `hash` and appends `audit` (when given) whether
    /// or not there was one, both or neither; the user whose session ended, if one did.
    async fn end_session(
        &self,
        hash: [u8; 32],
        audit: Option<NewAuditLine>,
    ) -> Result<Option<String>, RegistryError>;
}

/// Patients: who they are, their details and the care team responsible for them.
#[async_trait::async_trait]
pub trait PatientStore: Send + Sync {
    /// Creates `patient` and appends `audit` (when given: its `mrn` line only if the patient
    /// has an MRN), all or nothing; the patient as stored. `Exists` when its id is taken or
    /// another patient has its MRN (`mrn::taken`'s words), `Invalid` when its care team does
    /// not exist.
    async fn create_patient(
        &self,
        patient: NewPatient,
        audit: Option<PatientAudit>,
    ) -> Result<Patient, RegistryError>;

    /// Merges `change` into the patient `id` as stored at that moment (read and written in one
    /// transaction that holds the row, so concurrent changes of different fields all survive)
    /// and appends `audit` (when given: its `mrn` line only if the MRN changed), all or
    /// nothing. `NotFound`, `Exists` (the MRN is another patient's) or `Invalid` (no such care
    /// team), and then nothing changed.
    async fn update_patient(
        &self,
        id: String,
        change: PatientChange,
        audit: Option<PatientAudit>,
    ) -> Result<PatientUpdated, RegistryError>;

    /// The patient `id`, if there is one.
    async fn patient(&self, id: String) -> Result<Option<Patient>, RegistryError>;

    /// Every patient, by id.
    async fn patients(&self) -> Result<Vec<Patient>, RegistryError>;

    /// The care team of patient `id`: `None` when there is no such patient.
    async fn patient_team(&self, id: String) -> Result<Option<Option<String>>, RegistryError>;

    /// Discharges the patient (`change.discharge` given) or readmits them, in one transaction
    /// ([`super::discharge`]): the patient's row, the `patient.discharged` (each unresolved
    /// alert resolved with its timeline entry, outbox rows and audit line) or
    /// `patient.readmitted` timeline entry, word to the alert engine where it learns of changes
    /// through the database, and `change.audit`. `NotFound` when there is no such patient;
    /// `Conflict` when they are already discharged (or, readmitting, not discharged); then
    /// nothing is written.
    async fn set_discharge(&self, change: DischargeChange) -> Result<Discharged, RegistryError>;

    /// The patients whose care team has no clinician (or who are on no team, or on one that
    /// does not exist), with their open alerts; the most open alerts first, then by id.
    async fn unseen_patients(&self) -> Result<Vec<UnseenPatient>, RegistryError>;
}

/// Devices, kept with the hashes of their secrets only, and their status.
#[async_trait::async_trait]
pub trait DeviceStore: Send + Sync {
    /// Creates `device` and appends `audit` (when given), all or nothing; the device as stored.
    /// `NotFound` when its patient does not exist, `Exists` when its id is taken.
    async fn create_device(
        &self,
        device: NewDevice,
        audit: Option<NewAuditLine>,
    ) -> Result<Device, RegistryError>;

    /// Revokes device `id`, writing `device.revoked` on its patient's timeline at `now_ms`
    /// (once: a revoked device is left as it is), and appends `audit` (when given) either way,
    /// all or nothing; the device as it now is. `NotFound` (and nothing appended) when there is
    /// none.
    async fn revoke_device(
        &self,
        id: String,
        now_ms: i64,
        audit: Option<NewAuditLine>,
    ) -> Result<Device, RegistryError>;

    /// Replaces the secret of device `id` with `secret` and appends `audit` (when given), all
    /// or nothing; the device. `NotFound` when there is none, `Invalid` when it is revoked.
    async fn rotate_device_secret(
        &self,
        id: String,
        secret: SecretHashes,
        audit: Option<NewAuditLine>,
    ) -> Result<Device, RegistryError>;

    /// The devices with id `id` and of patient `patient` (each `None`: any), by patient then id.
    async fn devices(
        &self,
        id: Option<String>,
        patient: Option<String>,
    ) -> Result<Vec<Device>, RegistryError>;

    /// Every device's credentials, revoked or not: what the registry's cache is loaded from.
    async fn device_credentials(&self) -> Result<Vec<StoredCredential>, RegistryError>;

    /// A number that moves whenever any device's credentials change, on a database several
    /// instances share (each reloads its cache when it moves); `None` where there is only one
    /// instance (SQLite), whose own changes update its cache directly.
    async fn credentials_version(&self) -> Result<Option<i64>, RegistryError>;

    /// Mosquitto password-file entries (`id`, `$7$…`) of every device that may connect, by id.
    async fn broker_passwords(&self) -> Result<Vec<(String, String)>, RegistryError>;

    /// Marks offline every online device whose connection is held by no instance of `live`
    /// (it was held by an instance that stopped or died, or by nobody known); how many.
    async fn mark_offline_unless_held_by(&self, live: Vec<String>) -> Result<u64, RegistryError>;

    /// Writes a batch of status changes (at most one per device) and the timeline entries they
    /// make ([`super::devices::device_events`]), all or nothing; the status of each known device
    /// as written (unknown ids are skipped). Online, a device is held by the reporting
    /// instance; a report that it went offline from an instance that no longer holds it (the
    /// device reconnected to another) leaves it online.
    async fn write_device_status(
        &self,
        batch: Vec<StatusChange>,
    ) -> Result<Vec<DeviceStatus>, RegistryError>;
}

/// The patients' CRM record: care plans, alerts, notes and the timeline.
#[async_trait::async_trait]
pub trait RecordStore: Send + Sync {
    /// Writes the engine's effects — alerts, their timeline entries and their outbox rows (one
    /// per sink of `sinks` that takes the event) — all or nothing; the events that resulted.
    /// Opening a rule that has an unresolved alert for the patient opens nothing (also when
    /// another instance opens it at the same moment); raising, escalating or resolving one that
    /// has none changes nothing. With a `fence`, only while that lease is held as it says
    /// (checked and locked in the same transaction); `Fenced` and nothing written otherwise.
    async fn apply_effects(
        &self,
        effects: Vec<Effect>,
        sinks: Vec<Sink>,
        fence: Option<Fence>,
    ) -> Result<Vec<Event>, RegistryError>;

    /// The [`Noticed`] changes of patients in alert partitions `parts` written by transactions
    /// in `[from, until)` (`until` a commit horizon, see [`crate::store::Store::commit_horizon`]),
    /// by transaction. PostgreSQL only: it writes one with each care-plan change and each
    /// person's acknowledgement or resolution of an alert. SQLite has one instance, whose
    /// engine hears of them directly, and answers none.
    async fn engine_notices(
        &self,
        parts: Vec<u16>,
        from: i64,
        until: i64,
    ) -> Result<Vec<Noticed>, RegistryError>;

    /// Forgets notices written before `before_ms`; how many.
    async fn prune_engine_notices(&self, before_ms: i64) -> Result<u64, RegistryError>;

    /// Every unresolved alert, for the engine at start-up (rows naming no valid patient are
    /// left out).
    async fn unresolved_alerts(&self) -> Result<Vec<OpenAlert>, RegistryError>;

    /// For each (patient, rule) whose latest alert a person resolved (not Vigil), that
    /// resolution.
    async fn clinician_resolutions(&self) -> Result<Vec<Resolution>, RegistryError>;

    /// The alerts `q` selects, newest first (then by id).
    async fn alerts(&self, q: AlertQuery) -> Result<Vec<Alert>, RegistryError>;

    /// The alert `id`, if there is one.
    async fn alert(&self, id: String) -> Result<Option<Alert>, RegistryError>;

    /// Acknowledges (`resolve` false) or resolves the alert `id` on behalf of `by`, with its
    /// timeline entry and outbox rows, and appends `audit`, all or nothing; the alert as it now
    /// is and the events written. Acknowledging an acknowledged alert changes nothing (and is
    /// still audited); `NotFound` or `AlreadyResolved` (nothing appended) otherwise.
    #[allow(clippy::too_many_arguments)]
    async fn act_on_alert(
        &self,
        id: String,
        resolve: bool,
        by: String,
        note: Option<String>,
        now_ms: i64,
        sinks: Vec<Sink>,
        audit: NewAuditLine,
    ) -> Result<(Alert, Vec<Event>), AlertActionError>;

    /// Assigns or snoozes the alert `id` on behalf of `by` ([`Triage`]), with its timeline
    /// entry, and appends `audit`, all or nothing; the alert as it now is and the events
    /// written (a snooze of an open alert acknowledges it, with the acknowledgement's events).
    /// `NotFound` or `AlreadyResolved` (nothing appended) otherwise.
    #[allow(clippy::too_many_arguments)]
    async fn triage_alert(
        &self,
        id: String,
        triage: Triage,
        by: String,
        now_ms: i64,
        sinks: Vec<Sink>,
        audit: NewAuditLine,
    ) -> Result<(Alert, Vec<Event>), AlertActionError>;

    /// The patient's own care plan, if one was set (a stored plan this build cannot read counts
    /// as none).
    async fn care_plan(&self, patient: PatientId) -> Result<Option<CarePlan>, RegistryError>;

    /// Every patient with the plan of their own (`None`: the default plan).
    async fn all_plans(&self) -> Result<Vec<(PatientId, Option<CarePlan>)>, RegistryError>;

    /// Sets the patient's care plan, notes it on the timeline (`care_plan.updated`) and
    /// appends `audit` (when given), all or nothing. `NotFound` if there is no such patient.
    async fn set_care_plan(
        &self,
        patient: PatientId,
        plan: CarePlan,
        by: String,
        now_ms: i64,
        audit: Option<NewAuditLine>,
    ) -> Result<(), RegistryError>;

    /// Adds a clinician's note to the timeline and appends `audit`, both or neither; the entry.
    /// `NotFound` if there is no such patient.
    async fn add_note(
        &self,
        patient: PatientId,
        by: String,
        text: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<TimelineRow, RegistryError>;

    /// Adds an entry of any kind to the timeline (`data` a JSON object, as text).
    async fn add_timeline(
        &self,
        patient: PatientId,
        kind: String,
        data: String,
        now_ms: i64,
    ) -> Result<(), RegistryError>;

    /// The patient's timeline, newest first (then by id, newest first), entries before
    /// `before_ms`.
    async fn timeline(
        &self,
        patient: PatientId,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<TimelineRow>, RegistryError>;
}

/// The outbox: events (written by [`RecordStore`] with their alert) and readings waiting for an
/// outward sink, their attempts and outcomes.
///
/// There is no claim step: a sink's worker reads pending rows, delivers them and settles the
/// outcomes, and one instance runs one worker per sink.
#[async_trait::async_trait]
pub trait OutboxStore: Send + Sync {
    /// The oldest pending rows of `sink` in `lane`, in id order, each with when it is due.
    async fn outbox_pending(
        &self,
        sink: &'static str,
        lane: Lane,
        limit: usize,
    ) -> Result<Vec<(OutboxRow, i64)>, RegistryError>;

    /// When the next pending reading of `sink` is due, if one is pending.
    async fn outbox_next_reading_ms(
        &self,
        sink: &'static str,
    ) -> Result<Option<i64>, RegistryError>;

    /// Records the outcomes of attempts at `now`, all or nothing. Only a pending row is
    /// settled: settling a row again (delivered, failed, or a delivered reading deleted)
    /// changes nothing.
    async fn outbox_settle(&self, outcomes: Vec<Settled>, now: i64) -> Result<(), RegistryError>;

    /// Queues readings for `sink` (one already queued is left as it is); how many were new.
    async fn queue_readings(
        &self,
        sink: &'static str,
        readings: Vec<QueuedReading>,
        now: i64,
    ) -> Result<usize, RegistryError>;

    /// Deliveries, newest first, filtered by status, sink and patient where given.
    async fn deliveries(
        &self,
        status: Option<String>,
        sink: Option<String>,
        patient_id: Option<String>,
        limit: usize,
    ) -> Result<Vec<Delivery>, RegistryError>;

    /// Puts the failed delivery `id` back in the queue, due `now` with a new delivery window;
    /// `false` when there is no failed delivery with that id.
    async fn retry_delivery(&self, id: i64, now: i64) -> Result<bool, RegistryError>;

    /// Puts every failed delivery of a patient (of one sink, if given) back in the queue as
    /// [`OutboxStore::retry_delivery`] does one; how many.
    async fn retry_deliveries(
        &self,
        patient_id: String,
        sink: Option<String>,
        now: i64,
    ) -> Result<usize, RegistryError>;

    /// Pending rows of `sink` (readings among them).
    async fn outbox_depth(&self, sink: &'static str) -> Result<i64, RegistryError>;

    /// Pending reading rows of `sink`.
    async fn outbox_waiting_readings(&self, sink: &'static str) -> Result<i64, RegistryError>;
}

/// Leases on named pieces of work, so that instances sharing a database do each once (see
/// [`super::lease`]).
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes lease `name` for `holder` until `now_ms + ttl_ms`: when nobody holds it (a new
    /// lease is at epoch 1), when its holding has expired (the next epoch, also for the same
    /// holder), or when `holder` holds it still (renewed, the same epoch). `None` when another
    /// holds it unexpired. One transaction; of several instances asking at once, one gets it.
    async fn acquire_lease(
        &self,
        name: String,
        holder: String,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<Lease>, RegistryError>;

    /// Gives lease `name` up if `holder` holds it at `epoch` (another may take it at once);
    /// whether it did.
    async fn release_lease(
        &self,
        name: String,
        holder: String,
        epoch: i64,
    ) -> Result<bool, RegistryError>;

    /// The lease `name` as stored, held or expired.
    async fn lease(&self, name: String) -> Result<Option<Lease>, RegistryError>;

    /// The leases whose name starts with `prefix` held at `now_ms`, by name.
    async fn live_leases(&self, prefix: String, now_ms: i64) -> Result<Vec<Lease>, RegistryError>;
}

/// Failed authentications counted across instances (see [`super::throttles`]).
#[async_trait::async_trait]
pub trait ThrottleStore: Send + Sync {
    /// Records each report in turn, in one transaction: a failure counts one more (from one
    /// when the key's last report is older than its `forget_ms`), a success sets the count to
    /// zero; the last report's time is kept, the later of the stored and the reported. Each
    /// key's count after its report, in the reports' order.
    async fn report_failures(
        &self,
        reports: Vec<FailureReport>,
    ) -> Result<Vec<FailureCount>, RegistryError>;

    /// The counts whose (`last_ms`, `key`) is after (`since_ms`, `after_key`), in that order,
    /// at most `limit`.
    async fn failures_after(
        &self,
        since_ms: i64,
        after_key: String,
        limit: usize,
    ) -> Result<Vec<FailureCount>, RegistryError>;

    /// Deletes the counts whose last report is before `before_ms`; how many.
    async fn prune_failures(&self, before_ms: i64) -> Result<u64, RegistryError>;
}

/// Who is on call for each care team (`crate::oncall`): its weekly rota and its shifts.
#[async_trait::async_trait]
pub trait CoverStore: Send + Sync {
    /// Sets `team`'s weekly rota and appends `audit`, both or neither; `NotFound` when there is
    /// no such team.
    async fn put_rota(
        &self,
        team: String,
        rota: Rota,
        by: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<(), RegistryError>;

    /// Replaces `team`'s shifts and appends `audit`, both or neither; `NotFound` when there is
    /// no such team.
    async fn put_shifts(
        &self,
        team: String,
        shifts: Vec<Shift>,
        by: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<(), RegistryError>;

    /// Sets `team`'s escalation policy and appends `audit`, both or neither; `NotFound` when
    /// there is no such team.
    async fn put_policy(
        &self,
        team: String,
        policy: Policy,
        by: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<(), RegistryError>;

    /// `team`'s cover ([`Cover::empty`] when nothing is set); `None` when there is no such team.
    async fn cover(&self, team: String) -> Result<Option<Cover>, RegistryError>;
}

/// How to reach each dashboard user ([`super::contacts`]).
#[async_trait::async_trait]
pub trait ContactStore: Send + Sync {
    /// Applies `change` to the contact details of the user stored as `user` (read and written
    /// in one transaction, so two changes of different fields both survive) and appends
    /// `audit`, all or nothing; the details as they now are. `NotFound` when there is no such
    /// user; `Invalid` when the result does not pass [`Contact::check`].
    async fn change_contact(
        &self,
        user: String,
        change: ContactChange,
        audit: NewAuditLine,
    ) -> Result<Contact, RegistryError>;

    /// Every user's contact details that have been set, by user.
    async fn contacts(&self) -> Result<Vec<(String, Contact)>, RegistryError>;
}

/// Notifications of people about alerts ([`super::notifications`]): escalation steps taken once
/// each, and the notifications' outbox.
#[async_trait::async_trait]
pub trait NotificationStore: Send + Sync {
    /// Takes `step` with its notifications and its timeline entry (`alert.notify_step`), and,
    /// for a step after the first, the alert's escalation (`alert.escalated`, queued for
    /// `sinks`) if it is still open, all in one transaction; the events to announce, or
    /// `None`, with nothing written, when the step was taken already.
    async fn take_step(
        &self,
        step: TakenStep,
        sinks: Vec<Sink>,
    ) -> Result<Option<Vec<Event>>, RegistryError>;

    /// The steps taken of each of `alerts` (those with none are absent).
    async fn steps_taken(
        &self,
        alerts: Vec<String>,
    ) -> Result<HashMap<String, Vec<u32>>, RegistryError>;

    /// Claims for `holder` until `now_ms + lease_ms` up to `limit` pending notifications due
    /// at `now_ms` and not claimed by anyone else (or whose claim lapsed), counting an attempt
    /// on each; those claimed, earliest due first. Two instances never claim one at once.
    async fn claim_notifications(
        &self,
        holder: String,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Notification>, RegistryError>;

    /// Settles the attempt on notification `id` with its timeline entry, both or neither;
    /// `false`, with nothing written, unless it is pending and claimed by `holder`.
    async fn settle_notification(
        &self,
        id: String,
        holder: String,
        settlement: Settlement,
        now_ms: i64,
    ) -> Result<bool, RegistryError>;

    /// An alert's notifications, in the order they were created.
    async fn notifications_of(&self, alert_id: String) -> Result<Vec<Notification>, RegistryError>;

    /// Notification `id`, if there is one.
    async fn notification(&self, id: String) -> Result<Option<Notification>, RegistryError>;

    /// How notification `id`'s acknowledgement link was used, if it was.
    async fn ack_link_use(&self, id: String) -> Result<Option<LinkUse>, RegistryError>;

    /// Records `username`'s use of notification `id`'s acknowledgement link at `now_ms` with
    /// `audit`, both or neither; when it was used already, the earlier use, and nothing is
    /// written. Of two uses at once, one is recorded.
    async fn use_ack_link(
        &self,
        id: String,
        username: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<Option<LinkUse>, RegistryError>;
}

/// Whether the database answers, for `/healthz`.
#[async_trait::async_trait]
pub trait HealthStore: Send + Sync {
    /// Answers once the database has: a shared database that cannot be reached is an error.
    /// An embedded one is always there (its file's problems show where they are met).
    async fn ping(&self) -> Result<(), RegistryError>;
}

/// Everything the registry stores.
pub trait Storage:
    AuditStore
    + VisitStore
    + TokenStore
    + AccessStore
    + PatientStore
    + DeviceStore
    + RecordStore
    + OutboxStore
    + LeaseStore
    + ThrottleStore
    + SecretStore
    + ProgrammeStore
    + CoverStore
    + ContactStore
    + NotificationStore
    + HealthStore
{
}

impl<T> Storage for T where
    T: AuditStore
        + VisitStore
        + TokenStore
        + AccessStore
        + PatientStore
        + DeviceStore
        + RecordStore
        + OutboxStore
        + LeaseStore
        + ThrottleStore
        + SecretStore
        + ProgrammeStore
        + CoverStore
        + ContactStore
        + NotificationStore
        + HealthStore
{
}

/// Recomputes the audit hash chain of `db`; the number of lines, or `Err` naming the first that
/// does not match. Reads in pages, so other work runs between them however long the trail is.
pub async fn verify_chain(db: &dyn AuditStore) -> Result<usize, RegistryError> {
    let (mut after, mut prev, mut total) = (0i64, GENESIS.to_vec(), 0usize);
    loop {
        let page = db
            .audit_page(after, i64::MIN, i64::MAX, VERIFY_PAGE)
            .await?;
        prev = verify_page(&prev, &page)?;
        total += page.len();
        match page.last() {
            Some(last) if page.len() == VERIFY_PAGE => after = last.id,
            _ => return Ok(total),
        }
    }
}
