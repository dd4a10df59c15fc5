//! Alert messages in the words a nurse uses: "Blood pressure 208/124 mmHg — at or above
//! 180/120", "Glucose 52 mg/dL — below 54", "No SpO2 reading for 2 h". Values are written in
//! the clinic's display units ([`DisplayUnits`]; stored values stay canonical).
//!
//! Pure functions of numbers to sentences: no clock, no I/O. docs/alerts.md ("Messages") has a
//! table of what each rule kind says, which the engine's tests check line by line.

use super::news2::{PARAMETERS, Score};
use super::rules::Op;
use crate::domain::{DisplayUnits, Metric};

/// What a nurse calls a metric, at the start of a sentence.
pub fn metric_name(m: Metric) -> &'static str {
    match m {
        Metric::HeartRate => "Heart rate",
        Metric::Spo2 => "SpO2",
        Metric::RespiratoryRate => "Respiratory rate",
        Metric::BpSystolic => "Systolic blood pressure",
        Metric::BpDiastolic => "Diastolic blood pressure",
        Metric::BpMean => "Mean arterial pressure",
        Metric::BodyTemperature => "Temperature",
        Metric::BodyWeight => "Weight",
        Metric::Glucose => "Glucose",
        Metric::Steps => "Steps",
        Metric::Consciousness => "Consciousness",
        Metric::OnOxygen => "Supplemental oxygen",
    }
}

/// The metric's name inside a sentence ("no SpO2 reading", "weight up").
fn lower_name(m: Metric) -> String {
    let n = metric_name(m);
    if n.starts_with("SpO2") {
        n.to_owned()
    } else {
        n.to_lowercase()
    }
}

/// A comparison in words.
pub fn relation(op: Op) -> &'static str {
    match op {
        Op::Lt => "below",
        Op::Le => "at or below",
        Op::Gt => "above",
        Op::Ge => "at or above",
    }
}

/// A length of time as people say it: "45 s", "5 min", "1 h 30 min".
pub fn duration(s: i64) -> String {
    match s {
        ..60 => format!("{s} s"),
        60..3600 if s % 60 == 0 => format!("{} min", s / 60),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ if s % 3600 == 0 => format!("{} h", s / 3600),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// A threshold rule holding: "Glucose 52 mg/dL — below 54"; with `lasted_s`, how long the
/// readings have met it: "SpO2 86% — below 88 for 1 min".
pub fn threshold(
    units: DisplayUnits,
    metric: Metric,
    op: Op,
    limit: f64,
    value: f64,
    lasted_s: Option<i64>,
) -> String {
    let lasted = lasted_s
        .map(|s| format!(" for {}", duration(s)))
        .unwrap_or_default();
    format!(
        "{} {} — {} {}{lasted}",
        metric_name(metric),
        units.value(metric, value),
        relation(op),
        units.number(metric, limit),
    )
}

/// One side of a blood-pressure limit that holds: its comparison and value.
pub type BpLimit = Option<(Op, f64)>;

/// A blood-pressure episode: the measurement's two values (either may be unknown) and the
/// limits they are past. Both past with one comparison: "Blood pressure 208/124 mmHg — at or
/// above 180/120"; one: "Blood pressure 208/96 mmHg — systolic at or above 180".
pub fn blood_pressure(
    systolic: Option<f64>,
    diastolic: Option<f64>,
    systolic_limit: BpLimit,
    diastolic_limit: BpLimit,
) -> String {
    let n = |v: Option<f64>| {
        v.map_or_else(
            || "–".to_owned(),
            |v| DisplayUnits::default().number(Metric::BpSystolic, v),
        )
    };
    let num = |v: f64| DisplayUnits::default().number(Metric::BpSystolic, v);
    let past = match (systolic_limit, diastolic_limit) {
        (Some((so, s)), Some((d_op, d))) if so == d_op => {
            format!("{} {}/{}", relation(so), num(s), num(d))
        }
        (Some((so, s)), Some((d_op, d))) => format!(
            "systolic {} {}, diastolic {} {}",
            relation(so),
            num(s),
            relation(d_op),
            num(d)
        ),
        (Some((so, s)), None) => format!("systolic {} {}", relation(so), num(s)),
        (None, Some((d_op, d))) => format!("diastolic {} {}", relation(d_op), num(d)),
        (None, None) => "past its limit".to_owned(),
    };
    format!(
        "Blood pressure {}/{} mmHg — {past}",
        n(systolic),
        n(diastolic)
    )
}

/// A rate rule holding: "Weight up 2.4 kg within 72 h (80.1 → 82.5 kg)".
pub fn rate(
    units: DisplayUnits,
    metric: Metric,
    rose: bool,
    from: f64,
    to: f64,
    window_h: f64,
) -> String {
    let (_, unit, _) = units.show(metric, to);
    let change = (to - from).abs();
    let change = match metric {
        // A difference of temperatures is not a temperature: scale without the offset.
        Metric::BodyTemperature if unit == "°F" => {
            format!("{:.1} {unit}", change * 9.0 / 5.0)
        }
        _ => units.value(metric, change),
    };
    format!(
        "{} {} {change} within {} h ({} → {})",
        metric_name(metric),
        if rose { "up" } else { "down" },
        trim(format!("{window_h:.2}")),
        units.number(metric, from),
        units.value(metric, to),
    )
}

/// A missing rule holding: "No SpO2 reading for 2 h".
pub fn missing(metric: Metric, silent_s: i64) -> String {
    format!(
        "No {} reading for {}",
        lower_name(metric),
        duration(silent_s)
    )
}

/// A missing alert described without its timing (an alert found on restart).
pub fn missing_unknown(metric: Metric) -> String {
    format!("No recent {} reading", lower_name(metric))
}

/// A NEWS2 score with the parameters that scored: "NEWS2 7 — respiratory rate 3, SpO2 2,
/// pulse 1, temperature 1". Notes an SpO2 scale 2 score and parameters without a recent reading.
pub fn news2(score: &Score, scale_two: bool) -> String {
    let parts: Vec<String> = PARAMETERS
        .iter()
        .zip(score.parts)
        .filter_map(|(name, p)| p.filter(|p| *p > 0).map(|p| format!("{name} {p}")))
        .collect();
    let mut s = format!("NEWS2 {}", score.total);
    if !parts.is_empty() {
        s.push_str(" — ");
        s.push_str(&parts.join(", "));
    }
    if score.any_three && score.total < 7 {
        s.push_str(" (one parameter scores 3)");
    }
    if scale_two {
        s.push_str("; SpO2 scale 2");
    }
    if score.missing > 0 {
        s.push_str(&format!(
            "; {} of 7 parameters without a recent reading",
            score.missing
        ));
    }
    s
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests;
