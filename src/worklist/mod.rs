//! The caseload worklist (docs/worklist.md): one row per enrolled patient, ranked by what needs
//! a person first, each saying in words why it is where it is. Pure: the facts about each
//! patient go in (their unacknowledged alerts, silent devices, the current device period's
//! days, the month's minutes and contacts), the ranked rows come out.
//!
//! The order, most urgent first:
//! 1. unacknowledged alerts, high before medium before low, the oldest first;
//! 2. silence: a device quiet for longer than twice its reporting interval, the longest
//!    overdue (as a multiple of its interval) first;
//! 3. adherence at risk: the period has not reached 16 days of data and has at most 3 days
//!    to spare (the fewest to spare first), then periods that can no longer reach 16;
//! 4. no interactive contact yet this month, once half the month is gone;
//! 5. everyone else (stable), by name.

#[cfg(test)]
mod tests;

use serde::Serialize;

use crate::alerts::rules::Severity;

/// Days of device data the 16-day codes need (docs/billing.md).
pub const TARGET_DAYS: u16 = 16;
/// Days to spare at or under which a period is at risk.
pub const AT_RISK_SLACK: i64 = 3;

/// An alert nobody has acknowledged yet.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAlert {
    pub id: String,
    pub severity: Severity,
    pub opened_ms: i64,
    pub message: String,
}

/// A device quiet for longer than it should be.
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    pub device_id: String,
    /// When its latest reading was measured.
    pub last_ms: i64,
    /// How often it is expected to (its profile's reporting interval).
    pub interval_s: u64,
    /// It has never sent a reading: `last_ms` is when it was issued.
    pub never: bool,
}

/// The current device period's data so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Adherence {
    pub period_start: String,
    pub period_end: String,
    /// Days with device data so far.
    pub days: u16,
    /// Days left in the period on which data may still come, today included unless today
    /// already has data.
    pub days_left: i64,
}

impl Adherence {
    pub fn needed(&self) -> i64 {
        i64::from(TARGET_DAYS.saturating_sub(self.days))
    }

    /// Days to spare: those left minus those still needed (negative: 16 is out of reach).
    pub fn slack(&self) -> i64 {
        self.days_left - self.needed()
    }

    pub fn reached(&self) -> bool {
        self.days >= TARGET_DAYS
    }
}

/// What is known about one enrolled patient.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub patient_id: String,
    pub name: String,
    pub care_team: Option<String>,
    pub program: String,
    pub alerts: Vec<OpenAlert>,
    pub silent: Vec<Silence>,
    pub adherence: Option<Adherence>,
    /// Management minutes this month.
    pub minutes: u32,
    /// Whether an interactive communication took place this month.
    pub interactive_this_month: bool,
    /// The day of the latest interactive communication, if any (`YYYY-MM-DD`).
    pub last_interactive: Option<String>,
}

/// Where a patient's most urgent fact puts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    HighAlert,
    MediumAlert,
    LowAlert,
    Silent,
    AtRisk,
    NoContact,
    Stable,
}

/// One row of the worklist.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub patient_id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub care_team: Option<String>,
    pub program: String,
    /// 1 for the most urgent.
    pub rank: usize,
    pub tier: Tier,
    /// Why the row is where it is, the reason that placed it first.
    pub reasons: Vec<String>,
    pub open_alerts: usize,
    /// How many of the patient's devices are silent (a reading from one may change the row).
    pub silent_devices: usize,
    /// The id of the oldest of the most severe unacknowledged alerts (to acknowledge).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_alert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_needed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
    pub minutes: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_interactive: Option<String>,
}

fn severity_tier(s: Severity) -> Tier {
    match s {
        Severity::High => Tier::HighAlert,
        Severity::Medium => Tier::MediumAlert,
        Severity::Low => Tier::LowAlert,
    }
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::High => "high",
        Severity::Medium => "medium",
        Severity::Low => "low",
    }
}

/// A span in words: "under a minute", "45 min", "5 h", "3 days".
pub fn span(ms: i64) -> String {
    let min = ms.max(0) / 60_000;
    if min == 0 {
        "under a minute".into()
    } else if min < 60 {
        format!("{min} min")
    } else if min < 48 * 60 {
        format!("{} h", min / 60)
    } else {
        format!("{} days", min / (24 * 60))
    }
}

fn plural(n: i64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// The month's minutes against the management codes' thresholds (docs/billing.md): 10 for
/// 99470, 20 for 99457.
fn minutes_words(m: u32) -> String {
    match m {
        0 => "No minutes logged this month".into(),
        1..10 => format!("{m} min this month, {} short of 10", 10 - m),
        10..20 => format!("{m} min this month, {} short of 20", 20 - m),
        _ => format!("{m} min this month, 20 reached"),
    }
}

/// The key rows sort by within the tier: smaller is more urgent.
fn key(f: &Facts, tier: Tier, now_ms: i64) -> (Tier, i64) {
    let k = match tier {
        Tier::HighAlert | Tier::MediumAlert | Tier::LowAlert => f
            .alerts
            .iter()
            .filter(|a| severity_tier(a.severity) == tier)
            .map(|a| a.opened_ms)
            .min()
            .unwrap_or(i64::MAX),
        // The most overdue, as thousandths of its interval, first.
        Tier::Silent => -f
            .silent
            .iter()
            .map(|s| {
                let interval = i64::try_from(s.interval_s.max(1)).unwrap_or(i64::MAX);
                (now_ms - s.last_ms).max(0) / interval
            })
            .max()
            .unwrap_or(0),
        // Reachable ones by slack; the unreachable after them.
        Tier::AtRisk => f.adherence.as_ref().map_or(i64::MAX, |a| {
            if a.slack() >= 0 {
                a.slack()
            } else {
                1_000 - a.slack()
            }
        }),
        Tier::NoContact | Tier::Stable => 0,
    };
    (tier, k)
}

/// The tier and the reasons for one patient at `now_ms`, on day `month_day` of a month of
/// `month_days` days.
fn assess(f: &Facts, now_ms: i64, month_day: u8, month_days: u8) -> (Tier, Vec<String>) {
    // Each reason with the tier it would put the patient in (`Stable`: for information).
    let mut found: Vec<(Tier, String)> = Vec::new();
    if let Some(worst) = f.alerts.iter().map(|a| a.severity).max() {
        let oldest = f
            .alerts
            .iter()
            .filter(|a| a.severity == worst)
            .min_by_key(|a| a.opened_ms);
        if let Some(a) = oldest {
            let more = f.alerts.len() - 1;
            found.push((
                severity_tier(worst),
                format!(
                    "Unacknowledged {} alert for {}: {}{}",
                    severity_word(worst),
                    span(now_ms - a.opened_ms),
                    a.message,
                    if more > 0 {
                        format!(
                            " (and {})",
                            plural(i64::try_from(more).unwrap_or(0), "more")
                        )
                    } else {
                        String::new()
                    }
                ),
            ));
        }
    }
    // One reason per silent device, or one for them all when there are more than two.
    if f.silent.len() > 2 {
        let longest = f
            .silent
            .iter()
            .map(|s| now_ms - s.last_ms)
            .max()
            .unwrap_or(0);
        let shortest = f
            .silent
            .iter()
            .map(|s| now_ms - s.last_ms)
            .min()
            .unwrap_or(0);
        let names: Vec<&str> = f.silent.iter().map(|s| s.device_id.as_str()).collect();
        found.push((
            Tier::Silent,
            format!(
                "No reading from {} devices for {} to {} ({})",
                f.silent.len(),
                span(shortest),
                span(longest),
                names.join(", ")
            ),
        ));
    }
    for s in f.silent.iter().filter(|_| f.silent.len() <= 2) {
        let every = span(
            i64::try_from(s.interval_s)
                .unwrap_or(0)
                .saturating_mul(1000),
        );
        let quiet = span(now_ms - s.last_ms);
        found.push((
            Tier::Silent,
            if s.never {
                format!(
                    "No reading from {} since it was issued {quiet} ago (expected every {every})",
                    s.device_id
                )
            } else {
                format!(
                    "No reading from {} for {quiet} (expected every {every})",
                    s.device_id
                )
            },
        ));
    }
    if let Some(a) = &f.adherence {
        found.push(if a.reached() {
            (
                Tier::Stable,
                format!("{} days of data this period: 16 reached", a.days),
            )
        } else if a.slack() < 0 {
            (
                Tier::AtRisk,
                format!(
                    "{} of 16 days this period ({} to {}); 16 can no longer be reached",
                    a.days, a.period_start, a.period_end
                ),
            )
        } else if a.slack() <= AT_RISK_SLACK {
            (
                Tier::AtRisk,
                format!(
                    "{} of 16 days this period; needs {} more in the {} left (ends {})",
                    a.days,
                    a.needed(),
                    plural(a.days_left, "day"),
                    a.period_end
                ),
            )
        } else {
            (
                Tier::Stable,
                format!(
                    "{} of 16 days this period; needs {} more in {}",
                    a.days,
                    a.needed(),
                    plural(a.days_left, "day")
                ),
            )
        });
    }
    let past_half = u16::from(month_day) * 2 > u16::from(month_days);
    let contact_tier = if !f.interactive_this_month && past_half {
        Tier::NoContact
    } else {
        Tier::Stable
    };
    let minutes = minutes_words(f.minutes);
    found.push((
        contact_tier,
        match (f.interactive_this_month, &f.last_interactive) {
            (true, Some(d)) => format!("{minutes}; last spoke with the patient on {d}"),
            (_, Some(d)) => {
                format!("{minutes}; no interactive contact this month (last on {d})")
            }
            (_, None) => format!("{minutes}; no interactive contact yet"),
        },
    ));
    // The reason that placed the row first; the rest in order of urgency.
    found.sort_by_key(|(t, _)| *t);
    let tier = found.first().map_or(Tier::Stable, |(t, _)| *t);
    let mut reasons: Vec<String> = found.into_iter().map(|(_, r)| r).collect();
    if tier == Tier::Stable {
        reasons.insert(0, "Stable: nothing needs action".into());
    }
    (tier, reasons)
}

/// The worklist of `facts` at `now_ms`, `month_day` of a month of `month_days` days: most
/// urgent first, ranked from 1.
pub fn rank(facts: &[Facts], now_ms: i64, month_day: u8, month_days: u8) -> Vec<Row> {
    let mut rows: Vec<((Tier, i64), String, Row)> = facts
        .iter()
        .map(|f| {
            let (tier, reasons) = assess(f, now_ms, month_day, month_days);
            let worst = f.alerts.iter().map(|a| a.severity).max();
            let top_alert = f
                .alerts
                .iter()
                .filter(|a| Some(a.severity) == worst)
                .min_by_key(|a| a.opened_ms)
                .map(|a| a.id.clone());
            let row = Row {
                patient_id: f.patient_id.clone(),
                name: f.name.clone(),
                care_team: f.care_team.clone(),
                program: f.program.clone(),
                rank: 0,
                tier,
                reasons,
                open_alerts: f.alerts.len(),
                silent_devices: f.silent.len(),
                top_alert,
                days: f.adherence.as_ref().map(|a| a.days),
                days_needed: f.adherence.as_ref().map(Adherence::needed),
                reachable: f.adherence.as_ref().map(|a| a.slack() >= 0),
                minutes: f.minutes,
                last_interactive: f.last_interactive.clone(),
            };
            (key(f, tier, now_ms), f.name.to_lowercase(), row)
        })
        .collect();
    rows.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| a.1.cmp(&b.1))
            .then_with(|| a.2.patient_id.cmp(&b.2.patient_id))
    });
    rows.into_iter()
        .enumerate()
        .map(|(i, (_, _, mut row))| {
            row.rank = i + 1;
            row
        })
        .collect()
}
