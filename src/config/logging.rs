//! `[log]`: the format of log lines and the `tracing` filter, with the check that refuses a
//! filter `tracing` would quietly read as something else (for `log.level` and `RUST_LOG` alike).
//!
//! It never sets up logging itself: `telemetry` does, from these settings.

use serde::{Deserialize, Serialize};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `vigil=debug,info`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// The level names a log filter may use.
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// A log filter: a level, or comma-separated `target=level` directives with at most one bare
/// level for everything else (`vigil=debug,info`). `tracing` itself would take any other bare
/// word as the name of a target to log at every level (`verbose`: log nothing but that), so such
/// a word is refused here, naming the levels.
pub(super) fn check_log_filter(filter: &str) -> Result<(), String> {
    let is_level = |l: &str| LOG_LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    let directives: Vec<&str> = filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Err("is empty; use a level such as info".into());
    }
    for d in &directives {
        let ok = match d.rsplit_once('=') {
            Some((target, level)) => !target.trim().is_empty() && is_level(level),
            None => is_level(d),
        };
        if !ok {
            return Err(format!(
                "{d:?} is neither a level (off, error, warn, info, debug, trace) nor \
                 target=level (as in vigil=debug,info)"
            ));
        }
    }
    if directives.iter().filter(|d| !d.contains('=')).count() > 1 {
        return Err(
            "names more than one level for everything; give one, and target=level for \
                    the rest"
                .into(),
        );
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .map(|_| ())
        .map_err(|e| format!("{filter:?} is not a log filter: {e}"))
}
