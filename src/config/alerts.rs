//! `[alerts]`: the alert engine's timers (auto-resolve, escalation, the tick of time-driven
//! rules). What raises an alert is the patients' care plans' business, not this file's.

use serde::{Deserialize, Serialize};

/// The alert engine's timers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// An alert resolves by itself once its condition has been clear this long.
    pub auto_resolve_s: u32,
    /// An open alert nobody acknowledges escalates after this long (and again after as long).
    pub escalate_after_s: u32,
    /// How many times an unacknowledged alert escalates at most.
    pub max_escalations: u32,
    /// How often time-driven rules (missing readings, auto-resolve, escalation) are checked.
    pub tick_ms: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            auto_resolve_s: 900,
            escalate_after_s: 900,
            max_escalations: 3,
            tick_ms: 1000,
        }
    }
}
