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
}

fn default_freshness() -> u32 {
    4 * 3600
}

/// A care plan as `PUT` and `GET` carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarePlan {
    pub rules: Vec<Rule>,
}

/// Why a care plan was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

const MAX_RULES: usize = 100;
const MAX_FOR_S: u32 = 7 * 86_400;
const MAX_WINDOW_H: f64 = 90.0 * 24.0;

impl Rule {
    pub fn id(&self) -> &str {
        match self {
            Rule::Threshold { id, .. }
            | Rule::Rate { id, .. }
            | Rule::News2 { id, .. }
            | Rule::Missing { id, .. } => id,
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
            .map_err(|e| PlanError(format!("invalid care plan: {e}")))?;
        plan.validate()?;
        Ok(plan)
    }

    pub fn validate(&self) -> Result<(), PlanError> {
        if self.rules.len() > MAX_RULES {
            return Err(PlanError(format!(
                "a care plan has at most {MAX_RULES} rules"
            )));
        }
        let mut ids = HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            rule.check()
                .map_err(|e| PlanError(format!("rule {i} ({:?}): {e}", rule.id())))?;
            if !ids.insert(rule.id()) {
                return Err(PlanError(format!(
                    "rule {i}: id {:?} is used twice",
                    rule.id()
                )));
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
            let e = CarePlan::parse(body.as_bytes()).unwrap_err().0;
            assert!(e.contains(needle), "{rule}: {e}");
        }
        let twice = br#"{"rules":[{"kind":"news2","id":"x"},{"kind":"news2","id":"x"}]}"#;
        assert!(CarePlan::parse(twice).unwrap_err().0.contains("used twice"));
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
