//! Population figures for a programme and a month (docs/population.md): patients enrolled,
//! the share of device periods reaching 16 days, alert rates per 100 patient-days by rule,
//! time from alert to acknowledgement, patients by risk tier, minutes per patient. Pure: each
//! patient's month goes in, the figures come out.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::alerts::rules::Severity;

/// One alert of the month, as the figures need it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertFact {
    pub rule_id: String,
    pub severity: Severity,
    pub opened_ms: i64,
    /// When it was acknowledged, if it was.
    pub acknowledged_ms: Option<i64>,
}

/// One enrolled patient's month.
#[derive(Debug, Clone, PartialEq)]
pub struct PatientMonth {
    pub patient_id: String,
    /// Days of the month the patient was enrolled, up to today.
    pub enrolled_days: u32,
    /// Days of data of each device period ending this month.
    pub period_days: Vec<u16>,
    pub minutes: u32,
    pub interactive: bool,
    /// Alerts opened in the month.
    pub alerts: Vec<AlertFact>,
}

/// The figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    pub patients: usize,
    pub patient_days: u64,
    /// Device periods ending in the month, and how many reached 16 days.
    pub periods: usize,
    pub periods_16: usize,
    /// `periods_16 / periods`, `null` without periods.
    pub share_16: Option<f64>,
    pub alerts: usize,
    /// Alerts per 100 patient-days, by rule, most frequent first.
    pub alert_rates: Vec<RuleRate>,
    /// Minutes from an alert's opening to its acknowledgement, over the acknowledged ones.
    pub ack_minutes: Percentiles,
    /// Alerts of the month not acknowledged (yet).
    pub unacknowledged: usize,
    /// Patients by the most severe alert opened for them in the month.
    pub risk_tiers: RiskTiers,
    pub minutes_total: u64,
    /// Mean minutes per patient, `null` without patients.
    pub minutes_per_patient: Option<f64>,
    /// Patients by the month's minutes: under 10, 10–19, 20–39, 40 or more.
    pub minutes_bands: MinutesBands,
    /// Patients with an interactive communication in the month.
    pub interactive_patients: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleRate {
    pub rule_id: String,
    pub alerts: usize,
    pub per_100_patient_days: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RiskTiers {
    pub high: usize,
    pub medium: usize,
    pub low: usize,
    pub none: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MinutesBands {
    pub under_10: usize,
    pub from_10_to_19: usize,
    pub from_20_to_39: usize,
    pub from_40: usize,
}

/// The nearest-rank percentile `q` (0 to 1) of sorted `v`.
fn percentile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let n = v.len();
    // Nearest rank: the smallest value with at least q of the values at or below it.
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    Some(v[rank - 1])
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The figures of `months`.
pub fn figures(months: &[PatientMonth]) -> Figures {
    let patients = months.len();
    let patient_days: u64 = months.iter().map(|m| u64::from(m.enrolled_days)).sum();
    let periods: usize = months.iter().map(|m| m.period_days.len()).sum();
    let periods_16 = months
        .iter()
        .flat_map(|m| &m.period_days)
        .filter(|d| **d >= 16)
        .count();
    let mut by_rule: BTreeMap<&str, usize> = BTreeMap::new();
    let mut acks = Vec::new();
    let mut unacknowledged = 0;
    let mut tiers = RiskTiers::default();
    let mut bands = MinutesBands::default();
    for m in months {
        for a in &m.alerts {
            *by_rule.entry(a.rule_id.as_str()).or_default() += 1;
            match a.acknowledged_ms {
                Some(t) => acks.push((t - a.opened_ms).max(0) as f64 / 60_000.0),
                None => unacknowledged += 1,
            }
        }
        match m.alerts.iter().map(|a| a.severity).max() {
            Some(Severity::High) => tiers.high += 1,
            Some(Severity::Medium) => tiers.medium += 1,
            Some(Severity::Low) => tiers.low += 1,
            None => tiers.none += 1,
        }
        match m.minutes {
            0..=9 => bands.under_10 += 1,
            10..=19 => bands.from_10_to_19 += 1,
            20..=39 => bands.from_20_to_39 += 1,
            _ => bands.from_40 += 1,
        }
    }
    acks.sort_by(f64::total_cmp);
    let mut alert_rates: Vec<RuleRate> = by_rule
        .into_iter()
        .map(|(rule, n)| RuleRate {
            rule_id: rule.to_owned(),
            alerts: n,
            per_100_patient_days: if patient_days == 0 {
                0.0
            } else {
                round1(n as f64 * 100.0 / patient_days as f64)
            },
        })
        .collect();
    alert_rates.sort_by(|a, b| b.alerts.cmp(&a.alerts).then(a.rule_id.cmp(&b.rule_id)));
    let minutes_total: u64 = months.iter().map(|m| u64::from(m.minutes)).sum();
    Figures {
        patients,
        patient_days,
        periods,
        periods_16,
        share_16: (periods > 0).then(|| round3(periods_16 as f64 / periods as f64)),
        alerts: alert_rates.iter().map(|r| r.alerts).sum(),
        alert_rates,
        ack_minutes: Percentiles {
            count: acks.len(),
            p50: percentile(&acks, 0.5).map(round1),
            p90: percentile(&acks, 0.9).map(round1),
        },
        unacknowledged,
        risk_tiers: tiers,
        minutes_total,
        minutes_per_patient: (patients > 0).then(|| round1(minutes_total as f64 / patients as f64)),
        minutes_bands: bands,
        interactive_patients: months.iter().filter(|m| m.interactive).count(),
    }
}
