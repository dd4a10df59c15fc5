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
//! Moving the registry behind this seam goes aggregate by aggregate; so far: the audit trail,
//! video visits and API tokens.

use super::audit::{AuditQuery, GENESIS, NewAuditLine, StoredAuditLine, VERIFY_PAGE, verify_page};
use super::error::RegistryError;
use super::tokens::{LiveBy, NewApiToken, StoredToken};
use super::visits::{NewVisit, StoredVisit};

/// The audit trail.
#[async_trait::async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends `line` at the chain's end; its id.
    async fn append_audit(&self, line: NewAuditLine) -> Result<i64, RegistryError>;

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
    /// both or neither; an ended visit is left as it is. `audit`, when given, is appended in
    /// the same transaction whether or not the visit had ended (the request is audited either
    /// way). The visit as it is after; `NotFound` when there is none.
    async fn end_visit(
        &self,
        id: String,
        by: String,
        now_ms: i64,
        audit: Option<NewAuditLine>,
    ) -> Result<StoredVisit, RegistryError>;
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

/// Everything the registry stores.
pub trait Storage: AuditStore + VisitStore + TokenStore {}

impl<T: AuditStore + VisitStore + TokenStore> Storage for T {}

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
