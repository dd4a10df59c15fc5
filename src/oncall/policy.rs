//! A care team's escalation policy (docs/oncall.md): per severity, the steps of notifying
//! people about an alert nobody has acknowledged — who (the people on call at a level) and
//! after how many minutes. Pure: which steps of an alert are due at a moment follows from the
//! policy, when the alert opened and the steps already taken, so that the scheduler that acts
//! on it can run on any instance and take each step exactly once.

use serde::{Deserialize, Serialize};

use super::{MAX_LEVEL, RotaError};
use crate::alerts::rules::Severity;

/// The most steps a severity has.
pub const MAX_STEPS: usize = 10;
/// The latest a step may come: a day after the alert opened.
pub const MAX_AFTER_MIN: u32 = 24 * 60;

/// One step: notify the people on call at `level`, `after_min` minutes after the alert opened
/// if it is still unacknowledged then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub after_min: u32,
    pub level: u8,
}

/// A team's policy: the steps for each severity, earliest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub high: Vec<Step>,
    #[serde(default)]
    pub medium: Vec<Step>,
    #[serde(default)]
    pub low: Vec<Step>,
}

impl Default for Policy {
    /// Without a policy of its own, a team gets the contract's default: a high alert notifies
    /// whoever is on call at once and the second level after 15 minutes unacknowledged; a
    /// medium alert notifies whoever is on call at once (held through their quiet hours); a
    /// low alert notifies nobody (it waits on the dashboard).
    fn default() -> Policy {
        Policy {
            high: vec![
                Step {
                    after_min: 0,
                    level: 1,
                },
                Step {
                    after_min: 15,
                    level: 2,
                },
            ],
            medium: vec![Step {
                after_min: 0,
                level: 1,
            }],
            low: Vec::new(),
        }
    }
}

impl Policy {
    /// The steps for `severity`.
    pub fn steps(&self, severity: Severity) -> &[Step] {
        match severity {
            Severity::High => &self.high,
            Severity::Medium => &self.medium,
            Severity::Low => &self.low,
        }
    }

    /// Checks each severity's steps: at most [`MAX_STEPS`], levels 1 to 5, minutes up to a day,
    /// strictly later one after the other.
    pub fn check(&self) -> Result<(), RotaError> {
        for (name, steps) in [
            ("high", &self.high),
            ("medium", &self.medium),
            ("low", &self.low),
        ] {
            if steps.len() > MAX_STEPS {
                return Err(RotaError(format!("{name}: at most {MAX_STEPS} steps")));
            }
            for (i, s) in steps.iter().enumerate() {
                let what = format!("{name} step {}", i + 1);
                if !(1..=MAX_LEVEL).contains(&s.level) {
                    return Err(RotaError(format!("{what}: level must be 1 to {MAX_LEVEL}")));
                }
                if s.after_min > MAX_AFTER_MIN {
                    return Err(RotaError(format!(
                        "{what}: after_min must be at most {MAX_AFTER_MIN} (a day)"
                    )));
                }
                if i > 0 && s.after_min <= steps[i - 1].after_min {
                    return Err(RotaError(format!(
                        "{what}: after_min must be later than the step before's ({})",
                        steps[i - 1].after_min
                    )));
                }
            }
        }
        Ok(())
    }

    /// The steps of an alert of `severity` opened at `opened_ms` that are due at `now_ms` and
    /// not among `taken` (step indices), with when each fell due: `(index, due_ms)`, earliest
    /// first. An acknowledged alert has none: acknowledging stops the escalation.
    pub fn due(
        &self,
        severity: Severity,
        opened_ms: i64,
        acknowledged: bool,
        taken: &[u32],
        now_ms: i64,
    ) -> Vec<(u32, i64)> {
        if acknowledged {
            return Vec::new();
        }
        self.steps(severity)
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let i = u32::try_from(i).ok()?;
                let due = opened_ms.saturating_add(i64::from(s.after_min) * 60_000);
                (due <= now_ms && !taken.contains(&i)).then_some((i, due))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENED: i64 = 1_796_263_200_000;
    const MIN: i64 = 60_000;

    #[test]
    fn the_default_notifies_at_once_then_the_second_level_after_fifteen_minutes() {
        let p = Policy::default();
        p.check().unwrap();
        assert_eq!(
            p.due(Severity::High, OPENED, false, &[], OPENED),
            [(0, OPENED)]
        );
        assert_eq!(
            p.due(Severity::High, OPENED, false, &[0], OPENED + 15 * MIN - 1),
            [],
            "nothing new before 15 minutes"
        );
        assert_eq!(
            p.due(Severity::High, OPENED, false, &[0], OPENED + 15 * MIN),
            [(1, OPENED + 15 * MIN)]
        );
        // A scheduler that was down catches up on every step it missed, each once.
        assert_eq!(
            p.due(Severity::High, OPENED, false, &[], OPENED + 60 * MIN),
            [(0, OPENED), (1, OPENED + 15 * MIN)]
        );
        assert_eq!(
            p.due(Severity::High, OPENED, false, &[0, 1], OPENED + 60 * MIN),
            []
        );
        assert_eq!(
            p.due(Severity::Medium, OPENED, false, &[], OPENED),
            [(0, OPENED)]
        );
        assert_eq!(
            p.due(Severity::Low, OPENED, false, &[], OPENED + 600 * MIN),
            []
        );
    }

    #[test]
    fn acknowledging_stops_the_escalation() {
        let p = Policy::default();
        assert_eq!(
            p.due(Severity::High, OPENED, true, &[0], OPENED + 60 * MIN),
            []
        );
    }

    #[test]
    fn bad_policies_are_refused_with_reasons() {
        let step = |after_min, level| Step { after_min, level };
        for (high, why) in [
            (vec![step(0, 0)], "high step 1: level must be 1 to 5"),
            (
                vec![step(0, 1), step(0, 2)],
                "high step 2: after_min must be later",
            ),
            (vec![step(0, 1), step(2000, 2)], "at most 1440"),
            (vec![step(0, 1); 11], "at most 10 steps"),
        ] {
            let p = Policy {
                high,
                ..Policy::default()
            };
            let e = p.check().unwrap_err().0;
            assert!(e.contains(why), "{e}");
        }
    }
}
