//! The registry's calls on the failed-authentication counts ([`super::throttles`]).

use super::Registry;
use super::error::RegistryError;
use super::throttles::{FAILURES_PAGE, FailureCount, FailureReport};

impl Registry {
    /// Records `reports` in one transaction; each key's count as it stands after them.
    pub async fn report_failures(
        &self,
        reports: Vec<FailureReport>,
    ) -> Result<Vec<FailureCount>, RegistryError> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        self.db.report_failures(reports).await
    }

    /// The counts changed at or after `since_ms`, after the row (`since_ms`, `after_key`), in
    /// that order, at most [`FAILURES_PAGE`].
    pub async fn failures_after(
        &self,
        since_ms: i64,
        after_key: &str,
    ) -> Result<Vec<FailureCount>, RegistryError> {
        self.db
            .failures_after(since_ms, after_key.to_owned(), FAILURES_PAGE)
            .await
    }

    /// Deletes the counts unchanged since `before_ms`; how many.
    pub async fn prune_failures(&self, before_ms: i64) -> Result<u64, RegistryError> {
        self.db.prune_failures(before_ms).await
    }
}
