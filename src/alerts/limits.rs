//! Where a patient's care plan says a vital leaves its range: for the dashboard to mark a value
//! as high or low in words beside it (docs/dashboard.md, "Out of range").
//!
//! Only `threshold` rules draw a range; on each side the limit is the one met first (the
//! lowest of the upper limits, the highest of the lower ones), whatever its severity or
//! duration: a value past it is outside what the clinician set, even before an alert opens.

use std::collections::BTreeMap;

use serde::Serialize;

use super::rules::{CarePlan, Op, Rule, Severity};
use crate::domain::Metric;

/// One side's limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Limit {
    /// The rule's value, in the metric's canonical unit.
    pub value: f64,
    /// Whether the limit itself is outside the range (`>=`, `<=`).
    pub inclusive: bool,
    /// The severity of the rule that draws it.
    pub severity: Severity,
    pub rule_id: String,
}

impl Limit {
    fn beyond_above(&self, v: f64) -> bool {
        if self.inclusive {
            v >= self.value
        } else {
            v > self.value
        }
    }

    fn beyond_below(&self, v: f64) -> bool {
        if self.inclusive {
            v <= self.value
        } else {
            v < self.value
        }
    }
}

/// A metric's range in a plan: either side may be open.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Range {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub above: Option<Limit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub below: Option<Limit>,
}

/// Which side of its range a value is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    High,
    Low,
}

impl Range {
    /// Where `v` is, `None` inside the range.
    pub fn judge(&self, v: f64) -> Option<Side> {
        if self.above.as_ref().is_some_and(|l| l.beyond_above(v)) {
            Some(Side::High)
        } else if self.below.as_ref().is_some_and(|l| l.beyond_below(v)) {
            Some(Side::Low)
        } else {
            None
        }
    }
}

/// The ranges of every metric a plan's threshold rules watch, by the metric's name.
pub fn ranges(plan: &CarePlan) -> BTreeMap<&'static str, Range> {
    let mut out: BTreeMap<&'static str, Range> = BTreeMap::new();
    for rule in &plan.rules {
        let Rule::Threshold {
            id,
            severity,
            metric,
            op,
            value,
            ..
        } = rule
        else {
            continue;
        };
        let Some(m) = Metric::parse(metric) else {
            continue;
        };
        let limit = Limit {
            value: *value,
            inclusive: matches!(op, Op::Ge | Op::Le),
            severity: *severity,
            rule_id: id.clone(),
        };
        let range = out.entry(m.name()).or_default();
        match op {
            Op::Gt | Op::Ge => {
                // Met first: the lower value; at one value, `>=` before `>`.
                let first = range
                    .above
                    .as_ref()
                    .is_none_or(|l| (limit.value, !limit.inclusive) < (l.value, !l.inclusive));
                if first {
                    range.above = Some(limit);
                }
            }
            Op::Lt | Op::Le => {
                let first = range
                    .below
                    .as_ref()
                    .is_none_or(|l| (limit.value, limit.inclusive) > (l.value, l.inclusive));
                if first {
                    range.below = Some(limit);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(json: &str) -> CarePlan {
        CarePlan::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn each_side_is_the_limit_met_first() {
        let p = plan(
            r#"{"rules":[
            {"kind":"threshold","id":"g-vlow","metric":"glucose","op":"<","value":54,"severity":"high"},
            {"kind":"threshold","id":"g-low","metric":"glucose","op":"<","value":70,"severity":"medium"},
            {"kind":"threshold","id":"g-high","metric":"glucose","op":">","value":250,"severity":"medium","for_s":600},
            {"kind":"threshold","id":"sys","metric":"bp_systolic","op":">=","value":180,"severity":"high"},
            {"kind":"threshold","id":"sys2","metric":"bp_systolic","op":">","value":180,"severity":"medium"},
            {"kind":"news2","id":"n"}]}"#,
        );
        let r = ranges(&p);
        assert_eq!(
            r.keys().copied().collect::<Vec<_>>(),
            ["bp_systolic", "glucose"]
        );
        let g = &r["glucose"];
        assert_eq!(g.below.as_ref().unwrap().rule_id, "g-low");
        assert_eq!(g.above.as_ref().unwrap().rule_id, "g-high");
        assert_eq!(r["bp_systolic"].above.as_ref().unwrap().rule_id, "sys");
        assert!(r["bp_systolic"].below.is_none());
    }

    #[test]
    fn values_are_judged_at_and_past_the_limits() {
        let p = plan(
            r#"{"rules":[
            {"kind":"threshold","id":"lo","metric":"spo2","op":"<=","value":92,"severity":"medium"},
            {"kind":"threshold","id":"hi","metric":"heart_rate","op":">","value":120,"severity":"medium"}]}"#,
        );
        let r = ranges(&p);
        assert_eq!(r["spo2"].judge(92.0), Some(Side::Low));
        assert_eq!(r["spo2"].judge(92.5), None);
        assert_eq!(r["heart_rate"].judge(120.0), None);
        assert_eq!(r["heart_rate"].judge(121.0), Some(Side::High));
    }

    #[test]
    fn the_default_plan_draws_ranges() {
        let r = ranges(&CarePlan::default_plan());
        assert!(!r.is_empty());
        for (m, range) in &r {
            assert!(range.above.is_some() || range.below.is_some(), "{m}");
        }
    }
}
