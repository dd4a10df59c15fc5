//! The registry's calls on the care programme ([`super::enrollment`]).

use super::Registry;
use super::audit::NewAuditLine;
use super::enrollment::{Enrollment, Programme};
use super::error::RegistryError;
use super::setups::Setup;
use super::time_log::{TimeChange, TimeEntry};
use super::timer::{Timer, TimerStop};
use crate::domain::PatientId;
use crate::domain::zone::Zone;

impl Registry {
    /// Every programme, by id.
    pub async fn programmes(&self) -> Result<Vec<Programme>, RegistryError> {
        self.db.programmes().await
    }

    /// Adds a programme made by `by` at `now_ms`, with its audit line.
    pub async fn add_programme(
        &self,
        programme: Programme,
        by: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<Programme, RegistryError> {
        self.db.add_programme(programme, by, now_ms, audit).await
    }

    /// Puts a patient's enrollment episode, with its timeline entry and audit line.
    pub async fn put_enrollment(
        &self,
        enrollment: Enrollment,
        audit: NewAuditLine,
    ) -> Result<Enrollment, RegistryError> {
        self.db.put_enrollment(enrollment, audit).await
    }

    /// A patient's enrollment episodes, latest start first.
    pub async fn enrollments(&self, patient: &PatientId) -> Result<Vec<Enrollment>, RegistryError> {
        self.db.enrollments(patient.clone()).await
    }

    /// Logs a time entry with its audit line.
    pub async fn add_time(
        &self,
        entry: TimeEntry,
        audit: NewAuditLine,
    ) -> Result<TimeEntry, RegistryError> {
        self.db.add_time(entry, audit).await
    }

    /// Records a device set-up, with its timeline entry and audit line.
    pub async fn add_setup(
        &self,
        setup: Setup,
        audit: NewAuditLine,
    ) -> Result<Setup, RegistryError> {
        self.db.add_setup(setup, audit).await
    }

    /// Starts the user's timer on a patient, with its audit line.
    pub async fn start_timer(
        &self,
        timer: Timer,
        audit: NewAuditLine,
    ) -> Result<Timer, RegistryError> {
        self.db.start_timer(timer, audit).await
    }

    /// The user's running timer.
    pub async fn timer(&self, user: &str) -> Result<Option<Timer>, RegistryError> {
        self.db.timer(user.to_owned()).await
    }

    /// Stops the user's timer and logs its entry (dated in `zone`) with `audit` (made about
    /// the entry there); `None` when none runs.
    pub async fn stop_timer(
        &self,
        user: &str,
        now_ms: i64,
        stop: TimerStop,
        zone: &Zone,
        audit: NewAuditLine,
    ) -> Result<Option<TimeEntry>, RegistryError> {
        self.db
            .stop_timer(user.to_owned(), now_ms, stop, zone.clone(), audit)
            .await
    }

    /// A patient's device set-ups, by date.
    pub async fn setups(&self, patient: &PatientId) -> Result<Vec<Setup>, RegistryError> {
        self.db.setups(patient.clone()).await
    }

    /// A patient's time entries dated `from` to `to` (both included).
    pub async fn time_entries(
        &self,
        patient: &PatientId,
        from: &str,
        to: &str,
    ) -> Result<Vec<TimeEntry>, RegistryError> {
        self.db
            .time_entries(patient.clone(), from.to_owned(), to.to_owned())
            .await
    }

    /// The patient's time entry `id`, unless deleted.
    pub async fn time_entry(
        &self,
        patient: &PatientId,
        id: &str,
    ) -> Result<Option<TimeEntry>, RegistryError> {
        self.db.time_entry(patient.clone(), id.to_owned()).await
    }

    /// Changes a time entry by `by`, with its audit line (whose time is the change's), once
    /// `allowed` accepts the entry as it stands. Read, checked and written again if another
    /// change came in between (each change's time is after the one it replaces, so the two are
    /// told apart).
    pub async fn change_time(
        &self,
        patient: &PatientId,
        id: &str,
        change: TimeChange,
        by: &str,
        audit: NewAuditLine,
        allowed: impl Fn(&TimeEntry) -> Result<(), RegistryError>,
    ) -> Result<TimeEntry, RegistryError> {
        let now_ms = audit.time_ms;
        for _ in 0..8 {
            let Some(current) = self.time_entry(patient, id).await? else {
                return Err(RegistryError::NotFound(format!("time entry {id}")));
            };
            allowed(&current)?;
            let at = now_ms.max(current.version_ms() + 1);
            let changed = current.changed(change.clone(), by, at)?;
            if let Some(done) = self
                .db
                .update_time(changed, current.version_ms(), audit.clone())
                .await?
            {
                return Ok(done);
            }
        }
        Err(RegistryError::Db(format!(
            "time entry {id} kept changing; try again"
        )))
    }

    /// Deletes a time entry (kept, no longer listed or billed), with its audit line.
    pub async fn delete_time(
        &self,
        patient: &PatientId,
        id: &str,
        by: &str,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<(), RegistryError> {
        self.db
            .delete_time(patient.clone(), id.to_owned(), by.to_owned(), now_ms, audit)
            .await
    }
}
