//! A patient's care plan: the alert rules of the contract, parsed and validated.
//!
//! `PUT /patients/{id}/care-plan` takes `{"rules": [...]}`; every rule is checked here and a bad
//! one is refused with a sentence naming the rule and the problem. What a rule means when it
//! runs is the engine's business; this module only guarantees it is well-formed.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::news2::Spo2Scale;
use crate::domain::{Metric, PatientId};

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
}

/// A comparison of a threshold rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
}

impl Op {
    /// Whether `value op limit` holds.
    pub fn holds(self, value: f64, limit: f64) -> bool {
        match self {
            Op::Lt => value < limit,
            Op::Le => value <= limit,
            Op::Gt => value > limit,
            Op::Ge => value >= limit,
        }
    }
}

/// The metrics a `drift` rule may watch: those whose daily figure means something as a
/// personal baseline (docs/alerts.md, "Trend rules").
pub const DRIFT_METRICS: [Metric; 4] = [
    Metric::BodyWeight,
    Metric::BpSystolic,
    Metric::HeartRate,
    Metric::Spo2,
];

/// Which way a `drift` rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Up,
    Down,
}

/// One rule, as stored and returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Rule {
    /// Fires when every reading for `for_s` seconds meets `metric op value`; clears once a
    /// reading is `hysteresis` past the limit on the good side (so a value hovering at the
    /// limit does not flap).
    Threshold {
        id: String,
        severity: Severity,
        metric: String,
        op: Op,
        value: f64,
        #[serde(default)]
        for_s: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hysteresis: Option<f64>,
    },
    /// Fires when the value rises by at least `rise` (or falls by at least `fall`) within
    /// `window_h` hours.
    Rate {
        id: String,
        severity: Severity,
        metric: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rise: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fall: Option<f64>,
        window_h: f64,
    },
    /// NEWS2 from the latest readings no older than `freshness_s`; severity from the score
    /// (5–6 or any single 3: medium; 7+: high), unless `severity` caps it.
    News2 {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        severity: Option<Severity>,
        #[serde(default = "default_freshness")]
        freshness_s: u32,
        #[serde(default)]
        spo2_scale: Spo2Scale,
    },
    /// Fires when no reading of `metric` has arrived for `after_s` seconds.
    Missing {
        id: String,
        severity: Severity,
        metric: String,
        after_s: u32,
    },
    /// Fires when the metric's daily figures drift `direction` from the patient's own
    /// baseline: a one-sided CUSUM (`k`, `h`) over the last `window_days` days, standardised
    /// by the mean and SD of the `baseline_days` days before them, once the baseline has
    /// `min_days` days of data (docs/alerts.md, "Trend rules").
    Drift {
        id: String,
        #[serde(default = "default_trend_severity")]
        severity: Severity,
        metric: String,
        direction: Direction,
        #[serde(default = "default_baseline_days")]
        baseline_days: u32,
        #[serde(default = "default_window_days")]
        window_days: u32,
        #[serde(default = "default_drift_min_days")]
        min_days: u32,
        #[serde(default = "default_k")]
        k: f64,
        #[serde(default = "default_h")]
        h: f64,
        /// The smallest baseline SD; absent: the metric's floor (`trend::default_min_sd`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_sd: Option<f64>,
    },
    /// Fires when the MACD of daily weights (EMA spans `fast_days`, `slow_days`, signal
    /// `signal_days`) is positive and crosses above its signal by at least `margin` kg.
    Macd {
        id: String,
        #[serde(default = "default_trend_severity")]
        severity: Severity,
        #[serde(default = "default_fast_days")]
        fast_days: u32,
        #[serde(default = "default_slow_days")]
        slow_days: u32,
        #[serde(default = "default_signal_days")]
        signal_days: u32,
        #[serde(default = "default_margin")]
        margin: f64,
        #[serde(default = "default_macd_min_days")]
        min_days: u32,
    },
    /// Fires when Nightscout's AR2 forecast of glucose falls below `low` or rises above `high`
    /// within `horizon_min` minutes (`null` turns a side off).
    Forecast {
        id: String,
        #[serde(default = "default_trend_severity")]
        severity: Severity,
        #[serde(default = "default_horizon_min")]
        horizon_min: u32,
        #[serde(default = "default_low")]
        low: Option<f64>,
        #[serde(default = "default_high")]
        high: Option<f64>,
    },
}

fn default_freshness() -> u32 {
    4 * 3600
}

// Trend rules' defaults: docs/alerts.md, "Trend rules", gives each one's source.
fn default_trend_severity() -> Severity {
    Severity::Medium
}
fn default_baseline_days() -> u32 {
    14
}
fn default_window_days() -> u32 {
    3
}
fn default_drift_min_days() -> u32 {
    10
}
fn default_k() -> f64 {
    0.5
}
fn default_h() -> f64 {
    4.0
}
fn default_fast_days() -> u32 {
    3
}
fn default_slow_days() -> u32 {
    14
}
fn default_signal_days() -> u32 {
    9
}
fn default_margin() -> f64 {
    0.5
}
fn default_macd_min_days() -> u32 {
    14
}
fn default_horizon_min() -> u32 {
    30
}
fn default_low() -> Option<f64> {
    Some(70.0)
}
fn default_high() -> Option<f64> {
    Some(250.0)
}

/// A care plan as `PUT` and `GET` carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarePlan {
    pub rules: Vec<Rule>,
}

/// Why a care plan was refused: a sentence, and where it was (the rule's index in the plan and
/// the field of that rule, when one is to blame), so that a form can say it beside the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PlanError {
    pub message: String,
    pub rule: Option<usize>,
    pub field: Option<&'static str>,
}

impl PlanError {
    fn whole(message: String) -> PlanError {
        PlanError {
            message,
            rule: None,
            field: None,
        }
    }
}

/// Every field a rule has, to name the one a problem is about.
const FIELDS: &[&str] = &[
    "id",
    "severity",
    "metric",
    "op",
    "value",
    "for_s",
    "hysteresis",
    "rise",
    "fall",
    "window_h",
    "freshness_s",
    "after_s",
    "direction",
    "baseline_days",
    "window_days",
    "min_days",
    "k",
    "h",
    "min_sd",
    "fast_days",
    "slow_days",
    "signal_days",
    "margin",
    "horizon_min",
    "low",
    "high",
];

/// The field a rule's problem is about: the sentence's first word when it is one ("value 900 is
/// outside…", "for_s must be…"), else the field the wording implies.
fn field_of(problem: &str) -> Option<&'static str> {
    let first = problem.split_whitespace().next()?;
    if let Some(f) = FIELDS.iter().find(|f| **f == first) {
        return Some(f);
    }
    if problem.starts_with("unknown metric") || problem.starts_with("drift watches") {
        return Some("metric");
    }
    if problem.starts_with("give rise or fall") {
        return Some("rise");
    }
    None
}

const MAX_RULES: usize = 100;
const MAX_FOR_S: u32 = 7 * 86_400;
const MAX_WINDOW_H: f64 = 90.0 * 24.0;

impl Rule {
    pub fn id(&self) -> &str {
        match self {
            Rule::Threshold { id, .. }
            | Rule::Rate { id, .. }
            | Rule::News2 { id, .. }
            | Rule::Missing { id, .. }
            | Rule::Drift { id, .. }
            | Rule::Macd { id, .. }
            | Rule::Forecast { id, .. } => id,
        }
    }

    fn check(&self) -> Result<(), String> {
        let id = self.id();
        if PatientId::parse(id).is_err() {
            return Err("id must be 1 to 64 characters of A-Z a-z 0-9 . _ -".into());
        }
        let metric =
            |name: &str| Metric::parse(name).ok_or_else(|| format!("unknown metric {name:?}"));
        match self {
            Rule::Threshold {
                metric: m,
                value,
                for_s,
                hysteresis,
                ..
            } => {
                let m = metric(m)?;
                if !value.is_finite() {
                    return Err("value must be a number".into());
                }
                let (lo, hi) = m.plausible_range();
                if *value < lo || *value > hi {
                    return Err(format!(
                        "value {value} is outside what a {m} reading can be ({lo} to {hi} {})",
                        m.unit()
                    ));
                }
                if *for_s > MAX_FOR_S {
                    return Err(format!("for_s must be at most {MAX_FOR_S} (7 days)"));
                }
                if let Some(h) = hysteresis
                    && !(h.is_finite() && *h >= 0.0 && *h <= (hi - lo))
                {
                    return Err(
                        "hysteresis must be a non-negative number within the metric's range".into(),
                    );
                }
            }
            Rule::Rate {
                metric: m,
                rise,
                fall,
                window_h,
                ..
            } => {
                metric(m)?;
                match (rise, fall) {
                    (Some(x), None) | (None, Some(x)) if x.is_finite() && *x > 0.0 => {}
                    (Some(_), Some(_)) => return Err("give rise or fall, not both".into()),
                    (None, None) => return Err("give rise or fall".into()),
                    _ => return Err("rise or fall must be a positive number".into()),
                }
                if !(window_h.is_finite() && *window_h > 0.0 && *window_h <= MAX_WINDOW_H) {
                    return Err(format!(
                        "window_h must be more than 0 and at most {MAX_WINDOW_H} (90 days)"
                    ));
                }
            }
            Rule::News2 { freshness_s, .. } => {
                if !(60..=86_400).contains(freshness_s) {
                    return Err("freshness_s must be 60 to 86400".into());
                }
            }
            Rule::Missing {
                metric: m, after_s, ..
            } => {
                metric(m)?;
                if !(5..=30 * 86_400).contains(after_s) {
                    return Err("after_s must be 5 to 2592000 (30 days)".into());
                }
            }
            Rule::Drift {
                metric: m,
                baseline_days,
                window_days,
                min_days,
                k,
                h,
                min_sd,
                ..
            } => {
                let m = metric(m)?;
                if !DRIFT_METRICS.contains(&m) {
                    return Err(format!(
                        "drift watches body_weight, bp_systolic, heart_rate or spo2, not {m}"
                    ));
                }
                if !(7..=28).contains(baseline_days) {
                    return Err("baseline_days must be 7 to 28".into());
                }
                if !(1..=7).contains(window_days) {
                    return Err("window_days must be 1 to 7".into());
                }
                if !(5..=*baseline_days).contains(min_days) {
                    return Err(format!(
                        "min_days must be 5 to baseline_days ({baseline_days}): a baseline of \
                         fewer days says too little about the patient"
                    ));
                }
                if !(k.is_finite() && (0.0..=3.0).contains(k)) {
                    return Err("k must be 0 to 3 (standard deviations)".into());
                }
                if !(h.is_finite() && *h > 0.0 && *h <= 20.0) {
                    return Err("h must be more than 0 and at most 20".into());
                }
                let (lo, hi) = m.plausible_range();
                if let Some(sd) = min_sd
                    && !(sd.is_finite() && *sd > 0.0 && *sd <= hi - lo)
                {
                    return Err("min_sd must be a positive number within the metric's range".into());
                }
            }
            Rule::Macd {
                fast_days,
                slow_days,
                signal_days,
                margin,
                min_days,
                ..
            } => {
                if !(2..=7).contains(fast_days) {
                    return Err("fast_days must be 2 to 7".into());
                }
                if !(fast_days + 1..=14).contains(slow_days) {
                    return Err(format!(
                        "slow_days must be more than fast_days ({fast_days}) and at most 14"
                    ));
                }
                if !(2..=14).contains(signal_days) {
                    return Err("signal_days must be 2 to 14".into());
                }
                if !(margin.is_finite() && *margin > 0.0 && *margin <= 5.0) {
                    return Err("margin must be more than 0 and at most 5 (kg)".into());
                }
                if !(*slow_days..=28).contains(min_days) {
                    return Err(format!(
                        "min_days must be slow_days ({slow_days}) to 28: the slow average needs \
                         that many days of weights"
                    ));
                }
            }
            Rule::Forecast {
                horizon_min,
                low,
                high,
                ..
            } => {
                if !(5..=60).contains(horizon_min) || horizon_min % 5 != 0 {
                    return Err("horizon_min must be 5 to 60, in steps of 5 minutes".into());
                }
                let within = |v: f64| v.is_finite() && (40.0..=400.0).contains(&v);
                match (low, high) {
                    (None, None) => return Err("give low, high or both".into()),
                    (Some(l), _) if !within(*l) => {
                        return Err(format!(
                            "low {l} must be 40 to 400 mg/dL (the forecast's range is 36 to 400)"
                        ));
                    }
                    (_, Some(h)) if !within(*h) => {
                        return Err(format!(
                            "high {h} must be 40 to 400 mg/dL (the forecast's range is 36 to 400)"
                        ));
                    }
                    (Some(l), Some(h)) if l >= h => {
                        return Err(format!("low ({l}) must be below high ({h})"));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// The plan of every patient who has none of their own (README, "Default care plan").
/// Thresholds follow common home-monitoring practice: NEWS2 for the deteriorating patient,
/// SpO2 below 88 % sustained for a minute, a hypertensive crisis (180/120 mmHg), level 1 and
/// level 2 hypoglycaemia (70 and 54 mg/dL, ADA), marked hyperglycaemia (300 mg/dL), and a
/// heart-failure weight gain of 2 kg within 3 days (ESC).
pub const DEFAULT_PLAN: &str = r#"{"rules": [
  {"id": "news2", "kind": "news2", "freshness_s": 14400},
  {"id": "spo2-critical", "kind": "threshold", "metric": "spo2", "op": "<", "value": 88, "for_s": 60, "hysteresis": 2, "severity": "high"},
  {"id": "bp-crisis-systolic", "kind": "threshold", "metric": "bp_systolic", "op": ">=", "value": 180, "hysteresis": 10, "severity": "high"},
  {"id": "bp-crisis-diastolic", "kind": "threshold", "metric": "bp_diastolic", "op": ">=", "value": 120, "hysteresis": 10, "severity": "high"},
  {"id": "glucose-low", "kind": "threshold", "metric": "glucose", "op": "<", "value": 70, "hysteresis": 10, "severity": "medium"},
  {"id": "glucose-very-low", "kind": "threshold", "metric": "glucose", "op": "<", "value": 54, "hysteresis": 10, "severity": "high"},
  {"id": "glucose-high", "kind": "threshold", "metric": "glucose", "op": ">", "value": 300, "hysteresis": 20, "severity": "medium"},
  {"id": "weight-gain", "kind": "rate", "metric": "body_weight", "rise": 2.0, "window_h": 72, "severity": "medium"}
]}"#;

impl CarePlan {
    /// The documented default plan ([`DEFAULT_PLAN`]).
    pub fn default_plan() -> CarePlan {
        CarePlan::parse(DEFAULT_PLAN.as_bytes()).expect("the default plan is valid")
    }

    /// Parses and validates a care plan body; the error names the rule and the problem.
    pub fn parse(json: &[u8]) -> Result<CarePlan, PlanError> {
        let plan: CarePlan = serde_json::from_slice(json)
            .map_err(|e| PlanError::whole(format!("invalid care plan: {e}")))?;
        plan.validate()?;
        Ok(plan)
    }

    pub fn validate(&self) -> Result<(), PlanError> {
        if self.rules.len() > MAX_RULES {
            return Err(PlanError::whole(format!(
                "a care plan has at most {MAX_RULES} rules"
            )));
        }
        let mut ids = HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            rule.check().map_err(|e| PlanError {
                field: field_of(&e),
                message: format!("rule {i} ({:?}): {e}", rule.id()),
                rule: Some(i),
            })?;
            if !ids.insert(rule.id()) {
                return Err(PlanError {
                    message: format!("rule {i}: id {:?} is used twice", rule.id()),
                    rule: Some(i),
                    field: Some("id"),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_examples_parse() {
        let plan = CarePlan::parse(
            br#"{"rules":[
                {"kind":"threshold","id":"low-spo2","severity":"high","metric":"spo2","op":"<","value":90,"for_s":60},
                {"kind":"rate","id":"hf-weight","severity":"medium","metric":"body_weight","rise":2.0,"window_h":72},
                {"kind":"news2","id":"news2"},
                {"kind":"missing","id":"no-hr","severity":"low","metric":"heart_rate","after_s":3600}
            ]}"#,
        )
        .unwrap();
        assert_eq!(plan.rules.len(), 4);
        assert!(matches!(
            &plan.rules[0],
            Rule::Threshold {
                op: Op::Lt,
                for_s: 60,
                ..
            }
        ));
        assert!(matches!(
            &plan.rules[2],
            Rule::News2 {
                freshness_s: 14_400,
                spo2_scale: Spo2Scale::One,
                ..
            }
        ));
        // What goes in comes back out the same.
        let again = CarePlan::parse(serde_json::to_string(&plan).unwrap().as_bytes()).unwrap();
        assert_eq!(again, plan);
    }

    #[test]
    fn a_refusal_names_the_rule_and_the_field_to_blame() {
        let good = r#"{"kind":"news2","id":"n"}"#;
        for (rule, field) in [
            (
                r#"{"kind":"threshold","id":"a","severity":"high","metric":"spo2","op":"<","value":900}"#,
                Some("value"),
            ),
            (
                r#"{"kind":"threshold","id":"a","severity":"high","metric":"pulse","op":"<","value":40}"#,
                Some("metric"),
            ),
            (
                r#"{"kind":"threshold","id":"a","severity":"high","metric":"spo2","op":"<","value":90,"for_s":999999999}"#,
                Some("for_s"),
            ),
            (
                r#"{"kind":"rate","id":"a","severity":"low","metric":"body_weight","window_h":72}"#,
                Some("rise"),
            ),
            (
                r#"{"kind":"rate","id":"a","severity":"low","metric":"body_weight","rise":2,"window_h":0}"#,
                Some("window_h"),
            ),
            (
                r#"{"kind":"missing","id":"a","severity":"low","metric":"heart_rate","after_s":2}"#,
                Some("after_s"),
            ),
            (r#"{"kind":"news2","id":"a b"}"#, Some("id")),
            (
                r#"{"kind":"forecast","id":"a","low":300,"high":200}"#,
                Some("low"),
            ),
        ] {
            let body = format!(r#"{{"rules":[{good},{rule}]}}"#);
            let e = CarePlan::parse(body.as_bytes()).unwrap_err();
            assert_eq!((e.rule, e.field), (Some(1), field), "{rule}: {}", e.message);
            assert!(e.message.starts_with("rule 1 (\"a"), "{}", e.message);
        }
        // A body that is not a plan at all names no rule.
        let e = CarePlan::parse(b"{").unwrap_err();
        assert_eq!((e.rule, e.field), (None, None));
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"kind":"threshold","id":"a","severity":"high","metric":"pulse","op":"<","value":40}"#,
                "unknown metric \"pulse\"",
            ),
            (
                r#"{"kind":"threshold","id":"a","severity":"high","metric":"spo2","op":"=","value":90}"#,
                "invalid care plan",
            ),
            (
                r#"{"kind":"threshold","id":"a","severity":"high","metric":"spo2","op":"<","value":900}"#,
                "outside what a spo2 reading can be",
            ),
            (
                r#"{"kind":"threshold","id":"a","severity":"urgent","metric":"spo2","op":"<","value":90}"#,
                "invalid care plan",
            ),
            (
                r#"{"kind":"rate","id":"a","severity":"low","metric":"body_weight","window_h":72}"#,
                "give rise or fall",
            ),
            (
                r#"{"kind":"rate","id":"a","severity":"low","metric":"body_weight","rise":2,"fall":2,"window_h":72}"#,
                "not both",
            ),
            (
                r#"{"kind":"rate","id":"a","severity":"low","metric":"body_weight","rise":-2,"window_h":72}"#,
                "positive",
            ),
            (
                r#"{"kind":"rate","id":"a","severity":"low","metric":"body_weight","rise":2,"window_h":0}"#,
                "window_h",
            ),
            (
                r#"{"kind":"missing","id":"a","severity":"low","metric":"heart_rate","after_s":2}"#,
                "after_s",
            ),
            (
                r#"{"kind":"news2","id":"a","freshness_s":1}"#,
                "freshness_s",
            ),
            (r#"{"kind":"news2","id":"a b"}"#, "id must be"),
            (r#"{"kind":"magic","id":"a"}"#, "invalid care plan"),
            (
                r#"{"kind":"missing","id":"a","severity":"low","metric":"heart_rate","after_s":600,"extra":1}"#,
                "invalid care plan",
            ),
        ];
        for (rule, needle) in cases {
            let body = format!(r#"{{"rules":[{rule}]}}"#);
            let e = CarePlan::parse(body.as_bytes()).unwrap_err().message;
            assert!(e.contains(needle), "{rule}: {e}");
        }
        let twice = br#"{"rules":[{"kind":"news2","id":"x"},{"kind":"news2","id":"x"}]}"#;
        let e = CarePlan::parse(twice).unwrap_err();
        assert!(e.message.contains("used twice"));
        assert_eq!((e.rule, e.field), (Some(1), Some("id")));
    }

    #[test]
    fn trend_rules_parse_with_their_defaults_and_round_trip() {
        let plan = CarePlan::parse(
            br#"{"rules":[
                {"kind":"drift","id":"w","metric":"body_weight","direction":"up"},
                {"kind":"macd","id":"m"},
                {"kind":"forecast","id":"f","high":null}
            ]}"#,
        )
        .unwrap();
        assert_eq!(
            plan.rules[0],
            Rule::Drift {
                id: "w".into(),
                severity: Severity::Medium,
                metric: "body_weight".into(),
                direction: Direction::Up,
                baseline_days: 14,
                window_days: 3,
                min_days: 10,
                k: 0.5,
                h: 4.0,
                min_sd: None,
            }
        );
        assert_eq!(
            plan.rules[1],
            Rule::Macd {
                id: "m".into(),
                severity: Severity::Medium,
                fast_days: 3,
                slow_days: 14,
                signal_days: 9,
                margin: 0.5,
                min_days: 14,
            }
        );
        assert_eq!(
            plan.rules[2],
            Rule::Forecast {
                id: "f".into(),
                severity: Severity::Medium,
                horizon_min: 30,
                low: Some(70.0),
                high: None,
            }
        );
        // A side turned off stays off through a round trip (`null`, not the default).
        let json = serde_json::to_string(&plan).unwrap();
        assert!(json.contains(r#""high":null"#), "{json}");
        assert_eq!(CarePlan::parse(json.as_bytes()).unwrap(), plan);
    }

    #[test]
    fn bad_trend_rules_are_refused_naming_the_rule_and_the_problem() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"kind":"drift","id":"d","metric":"glucose","direction":"up"}"#,
                r#"rule 0 ("d"): drift watches body_weight, bp_systolic, heart_rate or spo2, not glucose"#,
            ),
            (
                r#"{"kind":"drift","id":"d","metric":"body_weight"}"#,
                "invalid care plan",
            ),
            (
                r#"{"kind":"drift","id":"d","metric":"body_weight","direction":"sideways"}"#,
                "invalid care plan",
            ),
            (
                r#"{"kind":"drift","id":"d","metric":"body_weight","direction":"up","baseline_days":60}"#,
                r#"rule 0 ("d"): baseline_days must be 7 to 28"#,
            ),
            (
                r#"{"kind":"drift","id":"d","metric":"body_weight","direction":"up","window_days":0}"#,
                "window_days must be 1 to 7",
            ),
            (
                r#"{"kind":"drift","id":"d","metric":"spo2","direction":"down","baseline_days":7,"min_days":10}"#,
                "min_days must be 5 to baseline_days (7)",
            ),
            (
                r#"{"kind":"drift","id":"d","metric":"spo2","direction":"down","min_days":2}"#,
                "min_days must be 5 to baseline_days (14)",
            ),
            (
                r#"{"kind":"drift","id":"d","metric":"heart_rate","direction":"up","k":-1}"#,
                "k must be 0 to 3",
            ),
            (
                r#"{"kind":"drift","id":"d","metric":"heart_rate","direction":"up","h":0}"#,
                "h must be more than 0",
            ),
            (
                r#"{"kind":"drift","id":"d","metric":"heart_rate","direction":"up","min_sd":0}"#,
                "min_sd must be a positive number",
            ),
            (
                r#"{"kind":"macd","id":"m","slow_days":3}"#,
                r#"rule 0 ("m"): slow_days must be more than fast_days (3) and at most 14"#,
            ),
            (
                r#"{"kind":"macd","id":"m","fast_days":1}"#,
                "fast_days must be 2 to 7",
            ),
            (
                r#"{"kind":"macd","id":"m","signal_days":30}"#,
                "signal_days must be 2 to 14",
            ),
            (
                r#"{"kind":"macd","id":"m","margin":0}"#,
                "margin must be more than 0",
            ),
            (
                r#"{"kind":"macd","id":"m","min_days":7}"#,
                "min_days must be slow_days (14) to 28",
            ),
            (
                r#"{"kind":"macd","id":"m","metric":"spo2"}"#,
                "invalid care plan",
            ),
            (
                r#"{"kind":"forecast","id":"f","horizon_min":90}"#,
                r#"rule 0 ("f"): horizon_min must be 5 to 60, in steps of 5 minutes"#,
            ),
            (
                r#"{"kind":"forecast","id":"f","horizon_min":12}"#,
                "in steps of 5",
            ),
            (
                r#"{"kind":"forecast","id":"f","low":null,"high":null}"#,
                "give low, high or both",
            ),
            (
                r#"{"kind":"forecast","id":"f","low":20}"#,
                "low 20 must be 40 to 400 mg/dL",
            ),
            (
                r#"{"kind":"forecast","id":"f","high":500}"#,
                "high 500 must be 40 to 400 mg/dL",
            ),
            (
                r#"{"kind":"forecast","id":"f","low":180,"high":150}"#,
                "low (180) must be below high (150)",
            ),
        ];
        for (rule, needle) in cases {
            let body = format!(r#"{{"rules":[{rule}]}}"#);
            let e = CarePlan::parse(body.as_bytes()).unwrap_err().message;
            assert!(e.contains(needle), "{rule}: {e}");
        }
    }

    /// `care-plans/*.json`: each programme's plan is the default plan's rules, as they are,
    /// followed by the programme's trend rules.
    #[test]
    fn the_programme_plans_parse_and_extend_the_default_plan() {
        let default = CarePlan::default_plan();
        let plans: [(&str, &str, &[&str]); 4] = [
            (
                "heart-failure",
                include_str!("../../care-plans/heart-failure.json"),
                &["weight-macd", "resting-hr-drift"],
            ),
            (
                "hypertension",
                include_str!("../../care-plans/hypertension.json"),
                &["bp-systolic-drift"],
            ),
            (
                "diabetes",
                include_str!("../../care-plans/diabetes.json"),
                &["glucose-forecast"],
            ),
            (
                "copd",
                include_str!("../../care-plans/copd.json"),
                &["spo2-drift", "resting-hr-drift"],
            ),
        ];
        for (name, json, trend) in plans {
            let plan = CarePlan::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
            let (base, extra) = plan.rules.split_at(default.rules.len());
            assert_eq!(base, &default.rules[..], "{name}");
            let ids: Vec<&str> = extra.iter().map(Rule::id).collect();
            assert_eq!(ids, trend, "{name}");
            assert!(
                extra.iter().all(|r| matches!(
                    r,
                    Rule::Drift { .. } | Rule::Macd { .. } | Rule::Forecast { .. }
                )),
                "{name}"
            );
        }
    }

    #[test]
    fn the_default_plan_is_valid() {
        assert_eq!(CarePlan::default_plan().rules.len(), 8);
    }

    #[test]
    fn ops_compare_as_written() {
        assert!(Op::Lt.holds(89.0, 90.0) && !Op::Lt.holds(90.0, 90.0));
        assert!(Op::Le.holds(90.0, 90.0) && Op::Ge.holds(90.0, 90.0));
        assert!(Op::Gt.holds(131.0, 130.0) && !Op::Gt.holds(130.0, 130.0));
    }
}
