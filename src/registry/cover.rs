//! Who covers each care team ([`super::storage::CoverStore`]): the team's weekly on-call rota and
//! its shifts for particular dates, as `crate::oncall` reads them. Each change names who made
//! it and when, and is audited with it. The people a rota or shift names must be clinicians of
//! the team (checked by the registry's calls, `super::rotas`): someone who cannot see the
//! team's patients cannot act on their alerts.

use serde::Serialize;

use crate::domain::format_rfc3339;
use crate::oncall::policy::Policy;
use crate::oncall::{Rota, Shift};

/// A care team's cover as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cover {
    pub team: String,
    /// `null` until a rota is set.
    pub rota: Option<Rota>,
    pub shifts: Vec<Shift>,
    /// The team's escalation policy; `null` until one is set (then [`Policy::default`]).
    pub policy: Option<Policy>,
    /// Who last changed it, and when (RFC 3339); absent while never set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

impl Cover {
    /// A team with nothing set.
    pub fn empty(team: &str) -> Cover {
        Cover {
            team: team.to_owned(),
            rota: None,
            shifts: Vec::new(),
            policy: None,
            updated_by: None,
            updated_at: None,
        }
    }

    /// The policy in force: the team's, else the default.
    pub fn policy_in_force(&self) -> Policy {
        self.policy.clone().unwrap_or_default()
    }

    /// As a backend reads it back: the rota, shifts and policy as stored JSON.
    pub fn from_stored(
        team: String,
        rota: Option<&str>,
        shifts: &str,
        policy: Option<&str>,
        updated_by: Option<String>,
        updated_ms: Option<i64>,
    ) -> Cover {
        Cover {
            team,
            rota: rota.and_then(|r| serde_json::from_str(r).ok()),
            shifts: serde_json::from_str(shifts).unwrap_or_default(),
            policy: policy.and_then(|p| serde_json::from_str(p).ok()),
            updated_by,
            updated_at: updated_ms.map(format_rfc3339),
        }
    }
}
