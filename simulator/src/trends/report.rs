//! The trend report's arithmetic: from the simulated patients ([`Subject`]s, with their ground
//! truth) and the alerts a rule engine opened for them, per rule:
//!
//! - **sensitivity**: scenario patients whose condition the rule caught — an alert opened between
//!   the onset and the scenario's end — over scenario patients;
//! - **false alerts per patient-month**: alerts the rule opened for the stable fleet in the
//!   counted days, over the counted time in months of 30.4375 days;
//! - **detection**: how long after the onset the first such alert opened, and how long before
//!   the condition became clinically significant (negative: after);
//! - **lead time** of a trend rule against the fixed-threshold rule for the same condition,
//!   over the scenario patients both caught: the fixed rule's first alert minus the trend
//!   rule's (positive: the trend rule was earlier); median and range.
//!
//! It evaluates no rule and reads no clock; the Markdown and JSON are rendered from [`Report`].

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::cases::{DAY_MS, MIN_MS, MONTH_MS, Programme, Subject};

/// An alert a rule opened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub patient: String,
    pub rule_id: String,
    /// When it opened (Unix ms of the simulated clock).
    pub opened_ms: i64,
    pub message: String,
}

/// Whether a rule judges a trend or a fixed limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Trend,
    Fixed,
}

/// A rule of a programme's care plan to report on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleSpec {
    pub programme: Programme,
    pub rule_id: &'static str,
    pub kind: Kind,
    /// A trend rule's fixed-threshold counterpart for the same condition.
    pub versus: Option<&'static str>,
}

/// The rules reported, by their ids in `care-plans/*.json`: each programme's trend rule for the
/// simulated condition, and the default plan's fixed rule for the same condition.
pub const RULES: [RuleSpec; 6] = [
    RuleSpec {
        programme: Programme::HeartFailure,
        rule_id: "weight-macd",
        kind: Kind::Trend,
        versus: Some("weight-gain"),
    },
    RuleSpec {
        programme: Programme::HeartFailure,
        rule_id: "weight-gain",
        kind: Kind::Fixed,
        versus: None,
    },
    RuleSpec {
        programme: Programme::Hypertension,
        rule_id: "bp-systolic-drift",
        kind: Kind::Trend,
        versus: Some("bp-crisis-systolic"),
    },
    RuleSpec {
        programme: Programme::Hypertension,
        rule_id: "bp-crisis-systolic",
        kind: Kind::Fixed,
        versus: None,
    },
    RuleSpec {
        programme: Programme::Diabetes,
        rule_id: "glucose-forecast",
        kind: Kind::Trend,
        versus: Some("glucose-low"),
    },
    RuleSpec {
        programme: Programme::Diabetes,
        rule_id: "glucose-low",
        kind: Kind::Fixed,
        versus: None,
    },
];

/// Median and range of some durations (ms).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub median_ms: f64,
    pub min_ms: i64,
    pub max_ms: i64,
}

impl Summary {
    /// `None` for no values; the median of an even count is the mean of the middle two.
    pub fn of(values: &[i64]) -> Option<Summary> {
        let mut v = values.to_vec();
        v.sort_unstable();
        let n = v.len();
        let (first, last) = (*v.first()?, *v.last()?);
        let median_ms = if n % 2 == 1 {
            v[n / 2] as f64
        } else {
            (v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0
        };
        Some(Summary {
            n,
            median_ms,
            min_ms: first,
            max_ms: last,
        })
    }
}

/// One rule's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub programme: Programme,
    pub condition: &'static str,
    pub rule_id: &'static str,
    pub kind: Kind,
    pub versus: Option<&'static str>,
    pub scenarios: usize,
    pub caught: usize,
    /// `caught / scenarios` (0 when there are none).
    pub sensitivity: f64,
    /// Alerts on scenario patients before their onset (not counted as false alerts).
    pub alerts_before_onset: usize,
    pub stable_patients: usize,
    pub false_alerts: usize,
    pub patient_months: f64,
    /// `false_alerts / patient_months` (0 when no time was counted).
    pub false_per_patient_month: f64,
    /// First alert after the onset, over the scenarios caught.
    pub detection_after_onset: Option<Summary>,
    /// Clinically significant minus first alert (positive: before it was significant).
    pub before_significant: Option<Summary>,
    /// A trend rule: the fixed rule's first alert minus this rule's, over the scenarios both caught.
    pub lead_vs_fixed: Option<Summary>,
    /// A trend rule: scenarios it caught that the fixed rule did not, and the other way round.
    pub caught_only_by_this: usize,
    pub caught_only_by_fixed: usize,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// When it was made (RFC 3339, UTC; given by the caller).
    pub generated_at: String,
    pub seed: u64,
    pub cases: usize,
    pub stable: usize,
    pub days: u32,
    /// What judged the rules, in words.
    pub engine: String,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

/// The first alert of `rule_id` for `patient` opened within `from..=to`.
fn first(
    by_key: &HashMap<(&str, &str), Vec<i64>>,
    patient: &str,
    rule_id: &str,
    from: i64,
    to: i64,
) -> Option<i64> {
    by_key
        .get(&(patient, rule_id))?
        .iter()
        .copied()
        .filter(|t| (from..=to).contains(t))
        .min()
}

/// The figures of each rule in `rules` from the subjects and the alerts opened for them.
pub fn rows(rules: &[RuleSpec], subjects: &[Subject], alerts: &[Alert]) -> Vec<Row> {
    let mut by_key: HashMap<(&str, &str), Vec<i64>> = HashMap::new();
    for a in alerts {
        by_key
            .entry((a.patient.as_str(), a.rule_id.as_str()))
            .or_default()
            .push(a.opened_ms);
    }
    rules
        .iter()
        .map(|spec| {
            let mine = subjects.iter().filter(|s| s.programme == spec.programme);
            let mut row = Row {
                programme: spec.programme,
                condition: spec.programme.condition(),
                rule_id: spec.rule_id,
                kind: spec.kind,
                versus: spec.versus,
                scenarios: 0,
                caught: 0,
                sensitivity: 0.0,
                alerts_before_onset: 0,
                stable_patients: 0,
                false_alerts: 0,
                patient_months: 0.0,
                false_per_patient_month: 0.0,
                detection_after_onset: None,
                before_significant: None,
                lead_vs_fixed: None,
                caught_only_by_this: 0,
                caught_only_by_fixed: 0,
            };
            let (mut after_onset, mut before_sig, mut lead) = (Vec::new(), Vec::new(), Vec::new());
            let mut counted_ms = 0_i64;
            for s in mine {
                let alerts_in = |from: i64, to: i64| {
                    by_key
                        .get(&(s.patient.as_str(), spec.rule_id))
                        .map_or(0, |v| v.iter().filter(|t| (from..=to).contains(*t)).count())
                };
                let Some(truth) = s.truth else {
                    row.stable_patients += 1;
                    row.false_alerts += alerts_in(s.count_from_ms, s.end_ms);
                    counted_ms += (s.end_ms - s.count_from_ms).max(0);
                    continue;
                };
                row.scenarios += 1;
                row.alerts_before_onset += alerts_in(s.count_from_ms, truth.onset_ms - 1);
                let this = first(
                    &by_key,
                    &s.patient,
                    spec.rule_id,
                    truth.onset_ms,
                    truth.end_ms,
                );
                let fixed = spec
                    .versus
                    .and_then(|f| first(&by_key, &s.patient, f, truth.onset_ms, truth.end_ms));
                if let Some(t) = this {
                    row.caught += 1;
                    after_onset.push(t - truth.onset_ms);
                    before_sig.push(truth.significant_ms - t);
                }
                match (this, fixed) {
                    (Some(t), Some(f)) => lead.push(f - t),
                    (Some(_), None) if spec.versus.is_some() => row.caught_only_by_this += 1,
                    (None, Some(_)) => row.caught_only_by_fixed += 1,
                    _ => {}
                }
            }
            if row.scenarios > 0 {
                row.sensitivity = row.caught as f64 / row.scenarios as f64;
            }
            row.patient_months = counted_ms as f64 / MONTH_MS;
            if row.patient_months > 0.0 {
                row.false_per_patient_month = row.false_alerts as f64 / row.patient_months;
            }
            row.detection_after_onset = Summary::of(&after_onset);
            row.before_significant = Summary::of(&before_sig);
            row.lead_vs_fixed = Summary::of(&lead);
            row
        })
        .collect()
}

/// Durations in the unit that suits the condition: days for weight and pressure, minutes for
/// glucose.
fn unit(p: Programme) -> (f64, &'static str, usize) {
    match p {
        Programme::HeartFailure | Programme::Hypertension => (DAY_MS as f64, "d", 1),
        Programme::Diabetes => (MIN_MS as f64, "min", 0),
    }
}

fn fmt_summary(s: Option<&Summary>, p: Programme, with_n: bool) -> String {
    let Some(s) = s else {
        return "–".into();
    };
    let (div, u, dp) = unit(p);
    let f = |x: f64| format!("{:.*}", dp, x / div);
    let n = if with_n {
        format!(", n = {}", s.n)
    } else {
        String::new()
    };
    format!(
        "{} {u} ({} to {}{n})",
        f(s.median_ms),
        f(s.min_ms as f64),
        f(s.max_ms as f64)
    )
}

impl Report {
    /// The report as Markdown: a heading, what was run, the table, the notes.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "## Trend rules on the simulator — {}\n",
            self.generated_at
        );
        let _ = writeln!(
            out,
            "seed {}; {} scenario patients per condition; a stable fleet of {} patients per \
             programme, each counted for {} days after a 35-day warm-up. {}\n",
            self.seed, self.cases, self.stable, self.days, self.engine
        );
        out.push_str(
            "| programme (condition) | rule | kind | caught / scenarios | false alerts / \
             patient-month (alerts / months) | first alert after onset, median (range) | \
             before clinically significant, median (range) | lead vs fixed rule, median \
             (range, n) | caught only by this / only by fixed |\n",
        );
        out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
        for r in &self.rows {
            let kind = match r.kind {
                Kind::Trend => "trend",
                Kind::Fixed => "fixed",
            };
            let lead = match r.versus {
                Some(f) => format!(
                    "{} vs `{f}`",
                    fmt_summary(r.lead_vs_fixed.as_ref(), r.programme, true)
                ),
                None => "–".into(),
            };
            let only = match r.versus {
                Some(_) => format!("{} / {}", r.caught_only_by_this, r.caught_only_by_fixed),
                None => "–".into(),
            };
            let _ = writeln!(
                out,
                "| {} ({}) | `{}` | {kind} | {} / {} ({:.0} %) | {:.2} ({} / {:.1}) | {} | {} | {lead} | {only} |",
                r.programme.name(),
                r.condition,
                r.rule_id,
                r.caught,
                r.scenarios,
                100.0 * r.sensitivity,
                r.false_per_patient_month,
                r.false_alerts,
                r.patient_months,
                fmt_summary(r.detection_after_onset.as_ref(), r.programme, false),
                fmt_summary(r.before_significant.as_ref(), r.programme, false),
            );
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let s = Summary::of(&[4, 1, 3, 2]).unwrap();
        assert_eq!((s.n, s.median_ms, s.min_ms, s.max_ms), (4, 2.5, 1, 4));
        assert_eq!(Summary::of(&[7]).unwrap().median_ms, 7.0);
        assert!(Summary::of(&[]).is_none());
    }
}
