//! The billing rules as data: `billing/cms-rpm-2026.toml`, compiled in and checked (ranges that
//! could put two exclusive codes on one period or month are refused). docs/billing.md explains
//! each rule and its source.

use serde::Deserialize;

/// The rules Vigil applies: Medicare's remote physiologic monitoring codes for 2026.
pub const BUILT_IN: &str = include_str!("../../billing/cms-rpm-2026.toml");

/// A set of billing rules, checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    pub name: String,
    pub year: i16,
    pub source: String,
    /// Device data is counted in periods of this many days from an episode's start.
    pub period_days: u16,
    pub setup: SetupRule,
    pub device: Vec<DeviceRule>,
    pub management: ManagementRules,
}

/// The once-per-episode set-up code.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupRule {
    pub code: String,
    pub name: String,
    /// Days of device data the period must reach.
    pub min_days: u16,
    pub source: String,
}

/// A device-supply code for a period with `min_days..=max_days` days of data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRule {
    pub code: String,
    pub name: String,
    pub min_days: u16,
    pub max_days: u16,
    pub source: String,
}

/// The month's treatment-management codes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementRules {
    /// No management code without a real-time interactive communication in the month.
    pub interactive_required: bool,
    pub source: String,
    /// Exclusive first codes, by the month's minutes.
    pub first: Vec<FirstRule>,
    pub add_on: AddOnRule,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirstRule {
    pub code: String,
    pub name: String,
    pub min_minutes: u32,
    /// Absent: no upper bound.
    pub max_minutes: Option<u32>,
}

/// A code billed once per further full `each_minutes` after the first code `after`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddOnRule {
    pub code: String,
    pub name: String,
    pub after: String,
    pub each_minutes: u32,
}

/// Why a rules file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("billing rules: {0}")]
pub struct RulesError(pub String);

impl Rules {
    /// The rules compiled in.
    pub fn built_in() -> Rules {
        // Checked by a unit test; a broken file cannot ship.
        Rules::parse(BUILT_IN).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Parses and checks a rules file.
    pub fn parse(text: &str) -> Result<Rules, RulesError> {
        let rules: Rules = toml::from_str(text).map_err(|e| RulesError(e.message().into()))?;
        rules.check()?;
        Ok(rules)
    }

    fn check(&self) -> Result<(), RulesError> {
        let bad = |m: String| Err(RulesError(m));
        if !(1..=31).contains(&self.period_days) {
            return bad(format!("period_days {} must be 1 to 31", self.period_days));
        }
        let p = self.period_days;
        if self.setup.min_days == 0 || self.setup.min_days > p {
            return bad(format!("setup.min_days must be 1 to {p}"));
        }
        let mut device: Vec<&DeviceRule> = self.device.iter().collect();
        device.sort_by_key(|d| d.min_days);
        for d in &device {
            if d.min_days == 0 || d.min_days > d.max_days || d.max_days > p {
                return bad(format!(
                    "{}: days {}..={} must lie within 1..={p}",
                    d.code, d.min_days, d.max_days
                ));
            }
        }
        for w in device.windows(2) {
            if w[1].min_days <= w[0].max_days {
                return bad(format!(
                    "{} and {} overlap: a period could support both",
                    w[0].code, w[1].code
                ));
            }
        }
        let mut first: Vec<&FirstRule> = self.management.first.iter().collect();
        first.sort_by_key(|f| f.min_minutes);
        for w in first.windows(2) {
            match w[0].max_minutes {
                Some(max) if max < w[1].min_minutes => {}
                _ => {
                    return bad(format!(
                        "{} and {} overlap: a month could support both",
                        w[0].code, w[1].code
                    ));
                }
            }
        }
        if first.iter().any(|f| f.min_minutes == 0) {
            return bad("a management code needs at least 1 minute".into());
        }
        let add_on = &self.management.add_on;
        let Some(base) = first.iter().find(|f| f.code == add_on.after) else {
            return bad(format!(
                "{} is billed after {}, which is not a first management code",
                add_on.code, add_on.after
            ));
        };
        if base.max_minutes.is_some() || add_on.each_minutes == 0 {
            return bad(format!(
                "{} must follow an open-ended first code, per 1 or more minutes",
                add_on.code
            ));
        }
        Ok(())
    }

    /// The device-supply code a period with `days` days of data supports.
    pub fn device_code(&self, days: u16) -> Option<&DeviceRule> {
        self.device
            .iter()
            .find(|d| (d.min_days..=d.max_days).contains(&days))
    }

    /// The first management code `minutes` in a month support.
    pub fn first_code(&self, minutes: u32) -> Option<&FirstRule> {
        self.management
            .first
            .iter()
            .find(|f| minutes >= f.min_minutes && f.max_minutes.is_none_or(|max| minutes <= max))
    }

    /// Units of the add-on code `minutes` support once `first` is billed.
    pub fn add_on_units(&self, first: &FirstRule, minutes: u32) -> u32 {
        let a = &self.management.add_on;
        if first.code != a.after {
            return 0;
        }
        minutes.saturating_sub(first.min_minutes) / a.each_minutes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_rules_parse_and_name_their_source_and_year() {
        let r = Rules::parse(BUILT_IN).unwrap();
        assert_eq!(r.year, 2026);
        assert!(r.source.contains("2026"), "{}", r.source);
        assert_eq!(r.period_days, 30);
        assert!(r.device.iter().all(|d| d.source.contains("2026")));
    }

    #[test]
    fn device_days_choose_one_code_or_none() {
        let r = Rules::built_in();
        let code = |d| r.device_code(d).map(|x| x.code.as_str());
        assert_eq!(code(0), None);
        assert_eq!(code(1), None);
        assert_eq!(code(2), Some("99445"));
        assert_eq!(code(15), Some("99445"));
        assert_eq!(code(16), Some("99454"));
        assert_eq!(code(30), Some("99454"));
    }

    #[test]
    fn minutes_choose_one_first_code_and_whole_add_ons() {
        let r = Rules::built_in();
        let bill = |m| {
            r.first_code(m)
                .map(|f| (f.code.as_str(), r.add_on_units(f, m)))
        };
        assert_eq!(bill(9), None);
        assert_eq!(bill(10), Some(("99470", 0)));
        assert_eq!(bill(19), Some(("99470", 0)));
        assert_eq!(bill(20), Some(("99457", 0)));
        assert_eq!(bill(39), Some(("99457", 0)));
        assert_eq!(bill(40), Some(("99457", 1)));
        assert_eq!(bill(60), Some(("99457", 2)));
    }

    #[test]
    fn overlapping_or_dangling_rules_are_refused_with_the_codes() {
        let overlap = BUILT_IN.replace("max_days = 15", "max_days = 16");
        let e = Rules::parse(&overlap).unwrap_err().to_string();
        assert!(e.contains("99445 and 99454 overlap"), "{e}");
        let first = BUILT_IN.replace("max_minutes = 19", "max_minutes = 20");
        let e = Rules::parse(&first).unwrap_err().to_string();
        assert!(e.contains("99470 and 99457 overlap"), "{e}");
        let dangling = BUILT_IN.replace("after = \"99457\"", "after = \"99999\"");
        let e = Rules::parse(&dangling).unwrap_err().to_string();
        assert!(e.contains("99999"), "{e}");
        let unknown = format!("{BUILT_IN}\nsurprise = 1\n");
        assert!(Rules::parse(&unknown).is_err());
    }
}
