//! The registry's calls on the care programme ([`super::enrollment`]).

use super::Registry;
use super::audit::NewAuditLine;
use super::enrollment::{Enrollment, Programme};
use super::error::RegistryError;
use super::time_log::TimeEntry;
use crate::domain::PatientId;

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
}
