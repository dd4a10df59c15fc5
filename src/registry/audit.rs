//! The audit trail: who read or changed what, when, from where — as a hash chain, so that a
//! changed or removed line is found ([`verify_chain`]).
//!
//! `hash` = SHA-256 over `prev_hash`, `time_ms` as 8 bytes big-endian, then `actor`, `action`,
//! `patient_id` (a single NUL when absent), `target` and `remote`, each preceded by its length in
//! bytes as 8 bytes big-endian. The first line of the trail has a `prev_hash` of 32 zero bytes.
//!
//! This module holds the chain's rules; each backend ([`super::storage::AuditStore`]) appends
//! lines one at a time under its database's lock, so the chain never forks however many tasks
//! or processes append at once.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::error::RegistryError;
use crate::domain::{PatientId, format_rfc3339};

/// One line of the audit trail, as written.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub patient_id: Option<&'a PatientId>,
    pub target: &'a str,
    pub remote: &'a str,
}

/// A line to append, owned, as it crosses the storage seam.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditLine {
    pub time_ms: i64,
    pub actor: String,
    pub action: String,
    pub patient_id: Option<String>,
    pub target: String,
    pub remote: String,
}

impl NewAuditLine {
    pub fn of(entry: &AuditEntry<'_>, time_ms: i64) -> NewAuditLine {
        NewAuditLine {
            time_ms,
            actor: entry.actor.to_owned(),
            action: entry.action.to_owned(),
            patient_id: entry.patient_id.map(|p| p.as_str().to_owned()),
            target: entry.target.to_owned(),
            remote: entry.remote.to_owned(),
        }
    }

    /// Its hash after the line whose hash is `prev`.
    /// This line about the time entry `entry` of `patient` (for a change whose patient is known
    /// only inside its transaction, such as a stopped timer's entry).
    pub fn for_patient(&self, patient: &str, entry: &str) -> NewAuditLine {
        NewAuditLine {
            patient_id: Some(patient.to_owned()),
            target: format!("patient/{patient}/time/{entry}"),
            ..self.clone()
        }
    }

    pub fn hash_after(&self, prev: &[u8]) -> [u8; 32] {
        chain_hash(
            prev,
            self.time_ms,
            &self.actor,
            &self.action,
            self.patient_id.as_deref(),
            &self.target,
            &self.remote,
        )
    }
}

/// The `prev_hash` of the first line.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// One stored line with its chain fields, as the backends return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAuditLine {
    pub id: i64,
    pub line: NewAuditLine,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// What to read of the trail ([`super::storage::AuditStore::audit_records`]).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub patient_id: Option<String>,
    /// A user: their own lines and those of their API tokens ([`super::token_actor`]).
    pub actor: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub limit: usize,
    /// The last `limit` lines, newest first (else the first `limit`, oldest first).
    pub newest_first: bool,
}

/// One line of the audit trail, as read back.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub time: String,
    pub actor: String,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    pub target: String,
    pub remote: String,
    pub hash: String,
}

impl From<StoredAuditLine> for AuditRecord {
    fn from(s: StoredAuditLine) -> AuditRecord {
        AuditRecord {
            id: s.id,
            time: format_rfc3339(s.line.time_ms),
            actor: s.line.actor,
            action: s.line.action,
            patient_id: s.line.patient_id,
            target: s.line.target,
            remote: s.line.remote,
            hash: hex::encode(s.hash),
        }
    }
}

/// One line of an audit export (`GET /audit/export`): the stored line with its chain fields
/// (see the module's documentation for how `hash` is computed).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditExportLine {
    pub id: i64,
    pub time: String,
    pub time_ms: i64,
    pub actor: String,
    pub action: String,
    pub patient_id: Option<String>,
    pub target: String,
    pub remote: String,
    pub prev_hash: String,
    pub hash: String,
}

impl From<StoredAuditLine> for AuditExportLine {
    fn from(s: StoredAuditLine) -> AuditExportLine {
        AuditExportLine {
            id: s.id,
            time: format_rfc3339(s.line.time_ms),
            time_ms: s.line.time_ms,
            actor: s.line.actor,
            action: s.line.action,
            patient_id: s.line.patient_id,
            target: s.line.target,
            remote: s.line.remote,
            prev_hash: hex::encode(s.prev_hash),
            hash: hex::encode(s.hash),
        }
    }
}

/// Lines read per page when the chain is verified: other work runs between pages.
pub const VERIFY_PAGE: usize = 5000;

/// Checks one page of the chain after the line whose hash is `prev`; the last line's hash, or
/// `Err` naming the first line that does not match.
pub fn verify_page(prev: &[u8], page: &[StoredAuditLine]) -> Result<Vec<u8>, RegistryError> {
    let mut prev = prev.to_vec();
    for s in page {
        let h = s.line.hash_after(&prev);
        if s.prev_hash != prev || s.hash != h {
            return Err(RegistryError::Invalid(format!(
                "audit line {} does not match the chain",
                s.id
            )));
        }
        prev = s.hash.clone();
    }
    Ok(prev)
}

fn chain_hash(
    prev: &[u8],
    time_ms: i64,
    actor: &str,
    action: &str,
    patient: Option<&str>,
    target: &str,
    remote: &str,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(time_ms.to_be_bytes());
    for field in [actor, action, patient.unwrap_or("\u{0}"), target, remote] {
        // Length-prefixed so that field boundaries cannot be shifted.
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().into()
}
