//! Trend rules: alerts on where a patient's readings are heading rather than where they are.
//!
//! - [`drift`]: a CUSUM of daily figures against the patient's own baseline (body weight,
//!   systolic blood pressure, resting heart rate, SpO2).
//! - [`macd`]: Moving-Average-Convergence-Divergence of daily weights (heart failure).
//! - [`forecast`]: Nightscout's AR2 glucose forecast, 5-minute steps.
//! - [`days`]: the daily figures `drift` and `macd` read, built from 5-minute buckets.
//!
//! This module is what the engine dispatches a trend rule to: what a rule keeps between readings
//! ([`State`]), how a reading or a rebuild's buckets move it, and the sentence a nurse reads when
//! the condition holds. The engine's own machinery (one alert per episode, auto-resolve,
//! escalation, replay) is the same as for every rule. It must never do I/O or read a clock:
//! days and steps follow the readings' own times.

pub mod days;
pub mod drift;
pub mod forecast;
pub mod macd;

use self::days::{Bucket, Days, Figure, day_of};
use self::forecast::Recent;
use super::rules::{Direction, Rule};
use crate::domain::{DisplayUnits, Metric};

/// The smallest standard deviation a `drift` baseline is taken to have unless the rule says
/// (`min_sd`): a baseline that happens to be flat — a scale that rounds to 0.5 kg, a wearable
/// whose night-time minimum repeats — would otherwise make any small change look enormous.
/// About half the day-to-day variation of stable patients (COPD heart rate ~5 /min and SpO2
/// ~1 %, Hurst et al. 2010; weight and home systolic pressure taken as ~0.5 kg and ~6 mmHg).
pub fn default_min_sd(metric: Metric) -> f64 {
    match metric {
        Metric::BodyWeight => 0.3,
        Metric::BpSystolic => 3.0,
        Metric::HeartRate => 2.0,
        Metric::Spo2 => 0.5,
        _ => 1.0,
    }
}

/// Which figure stands for a day of `metric`: heart rate's is its resting figure (the lowest
/// 5-minute mean), judged once the day is over; the others' the day's mean, judged as it fills.
pub fn figure(metric: Metric) -> Figure {
    match metric {
        Metric::HeartRate => Figure::Resting,
        _ => Figure::Mean,
    }
}

/// What a trend rule keeps between readings.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// `drift`, `macd`: daily figures. Readings taken before `counted_before` are already in
    /// them (a rebuild counted them from the store's buckets).
    Days { days: Days, counted_before: i64 },
    /// `forecast`: the last few glucose readings.
    Recent(Recent),
}

/// A trend rule's judgement.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The condition holds, and why.
    Holds(String),
    Clear,
    /// Nothing can be said (a forecast over a gap): the condition stays as it was; the
    /// sentence is for an alert that goes on.
    Unknown(String),
}

/// Whether a rule is one of the trend kinds.
pub fn is_trend(rule: &Rule) -> bool {
    matches!(
        rule,
        Rule::Drift { .. } | Rule::Macd { .. } | Rule::Forecast { .. }
    )
}

/// The metric a trend rule builds daily figures of, and how many days before the newest
/// reading's day it keeps (what a rebuild must supply as buckets).
pub fn days_kept(rule: &Rule) -> Option<(Metric, u32)> {
    match rule {
        Rule::Drift { metric, .. } => {
            Some((Metric::parse(metric)?, drift_params(rule)?.days_kept()))
        }
        Rule::Macd { .. } => Some((Metric::BodyWeight, macd::HISTORY_DAYS)),
        _ => None,
    }
}

fn fresh(rule: &Rule) -> Option<State> {
    match rule {
        Rule::Forecast { .. } => Some(State::Recent(Recent::default())),
        _ => days_kept(rule).map(|(_, keep)| State::Days {
            days: Days::new(keep),
            counted_before: i64::MIN,
        }),
    }
}

/// Counts a reading of the rule's metric and judges the rule; `None` when the reading is not
/// the rule's to count: already counted by a rebuild, or not newer than the last it counted
/// (a reading the store fed again after a rebuild had read it).
pub fn observe(
    rule: &Rule,
    state: &mut Option<State>,
    time_ms: i64,
    value: f64,
    units: DisplayUnits,
) -> Option<Verdict> {
    if state.is_none() {
        *state = fresh(rule);
    }
    match state.as_mut()? {
        State::Days {
            days,
            counted_before,
        } => {
            if time_ms < *counted_before || days.newest_ms().is_some_and(|t| time_ms <= t) {
                return None;
            }
            days.add(time_ms, value);
        }
        State::Recent(recent) => {
            if recent.latest().is_some_and(|(t, _)| time_ms <= t) {
                return None;
            }
            recent.add(time_ms, value);
        }
    }
    Some(evaluate(rule, state.as_ref()?, units))
}

/// Counts a rebuild's 5-minute buckets of readings taken before `before_ms` (oldest first) and
/// judges the rule as of the newest of them; `None` when the rule keeps no days.
pub fn add_buckets(
    rule: &Rule,
    state: &mut Option<State>,
    before_ms: i64,
    buckets: &[Bucket],
    units: DisplayUnits,
) -> Option<Verdict> {
    if state.is_none() {
        *state = fresh(rule);
    }
    let State::Days {
        days,
        counted_before,
    } = state.as_mut()?
    else {
        return None;
    };
    for b in buckets.iter().filter(|b| b.start_ms < before_ms) {
        days.add_bucket(*b);
    }
    *counted_before = before_ms;
    days.newest_ms()?;
    Some(evaluate(rule, state.as_ref()?, units))
}

/// Judges a rule on what it has counted, as of its newest reading.
pub fn evaluate(rule: &Rule, state: &State, units: DisplayUnits) -> Verdict {
    match (rule, state) {
        (Rule::Drift { metric, .. }, State::Days { days, .. }) => {
            let (Some(m), Some(p), Some(newest)) =
                (Metric::parse(metric), drift_params(rule), days.newest_ms())
            else {
                return Verdict::Clear;
            };
            let f = figure(m);
            // A resting figure is judged once its day is over: the day before the newest.
            let judged = day_of(newest) - i64::from(f == Figure::Resting);
            let o = drift::judge(days.figures(f), judged, &p);
            match o {
                drift::Outcome::Judged(c) if o.holds(&p) => {
                    Verdict::Holds(drift_sentence(m, &p, &c))
                }
                _ => Verdict::Clear,
            }
        }
        (Rule::Macd { .. }, State::Days { days, .. }) => {
            let (Some(p), Some(newest)) = (macd_params(rule), days.newest_ms()) else {
                return Verdict::Clear;
            };
            let o = macd::judge(days.figures(Figure::Mean), day_of(newest), &p);
            match o {
                macd::Outcome::Judged(x) if o.holds(&p) => Verdict::Holds(macd_sentence(&p, &x)),
                _ => Verdict::Clear,
            }
        }
        (Rule::Forecast { .. }, State::Recent(recent)) => {
            let Some(p) = forecast_params(rule) else {
                return Verdict::Clear;
            };
            match forecast::judge(recent, &p) {
                forecast::Outcome::Judged(f) => match f.crossing {
                    Some(c) => Verdict::Holds(forecast_sentence(&f, &c, units)),
                    None => Verdict::Clear,
                },
                forecast::Outcome::Unavailable(why) => {
                    Verdict::Unknown(format!("Glucose forecast unavailable: {why}"))
                }
            }
        }
        _ => Verdict::Clear,
    }
}

/// The sentence for a trend rule as it stands (an alert found on restart).
pub fn describe(rule: &Rule, state: Option<&State>, units: DisplayUnits) -> String {
    match state.map(|s| evaluate(rule, s, units)) {
        Some(Verdict::Holds(s) | Verdict::Unknown(s)) => s,
        _ => match rule {
            Rule::Drift {
                metric, direction, ..
            } => format!(
                "{} drifting {}",
                capitalised(words(metric).0),
                direction_word(*direction)
            ),
            Rule::Macd { .. } => "Weight trending up".into(),
            _ => "Glucose forecast past its limit".into(),
        },
    }
}

fn drift_params(rule: &Rule) -> Option<drift::Params> {
    let Rule::Drift {
        metric,
        direction,
        baseline_days,
        window_days,
        min_days,
        k,
        h,
        min_sd,
        ..
    } = rule
    else {
        return None;
    };
    let m = Metric::parse(metric)?;
    Some(drift::Params {
        baseline_days: *baseline_days,
        window_days: *window_days,
        min_days: *min_days,
        k: *k,
        h: *h,
        min_sd: min_sd.unwrap_or_else(|| default_min_sd(m)),
        up: *direction == Direction::Up,
    })
}

fn macd_params(rule: &Rule) -> Option<macd::Params> {
    let Rule::Macd {
        fast_days,
        slow_days,
        signal_days,
        margin,
        min_days,
        ..
    } = rule
    else {
        return None;
    };
    Some(macd::Params {
        fast_days: *fast_days,
        slow_days: *slow_days,
        signal_days: *signal_days,
        margin: *margin,
        min_days: *min_days,
    })
}

fn forecast_params(rule: &Rule) -> Option<forecast::Params> {
    let Rule::Forecast {
        horizon_min,
        low,
        high,
        ..
    } = rule
    else {
        return None;
    };
    Some(forecast::Params {
        horizon_min: *horizon_min,
        low: *low,
        high: *high,
    })
}

/// What a nurse calls the metric, its unit, and the decimals worth showing.
fn words(metric: &str) -> (&'static str, &'static str, usize) {
    match Metric::parse(metric) {
        Some(Metric::BodyWeight) => ("weight", "kg", 1),
        Some(Metric::BpSystolic) => ("systolic blood pressure", "mmHg", 0),
        Some(Metric::HeartRate) => ("resting heart rate", "bpm", 0),
        Some(Metric::Spo2) => ("SpO2", "%", 1),
        _ => ("value", "", 1),
    }
}

/// "weight" → "Weight"; "SpO2" stays as it is.
fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn direction_word(d: Direction) -> &'static str {
    match d {
        Direction::Up => "up",
        Direction::Down => "down",
    }
}

fn plural(n: u32, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// "Weight up 2.3 kg over 3 days against a 14-day baseline of 81.2 kg": the recent window's
/// mean against the baseline's.
fn drift_sentence(m: Metric, p: &drift::Params, c: &drift::Cusum) -> String {
    let (what, unit, d) = words(m.name());
    let change = (c.window_mean - c.baseline_mean).abs();
    format!(
        "{} {} {change:.d$} {unit} over {} against a {}-day baseline of {:.d$} {unit}",
        capitalised(what),
        if p.up { "up" } else { "down" },
        plural(p.window_days, "day"),
        p.baseline_days,
        c.baseline_mean,
    )
}

fn macd_sentence(p: &macd::Params, x: &macd::Point) -> String {
    format!(
        "Weight trending up: {}-day average {:.1} kg is {:.1} kg above the {}-day average of \
         {:.1} kg and the gap is widening (MACD {:.2} kg over its signal {:.2} kg)",
        p.fast_days, x.fast, x.macd, p.slow_days, x.slow, x.macd, x.signal
    )
}

/// "Glucose 92 mg/dL and falling: forecast 64 mg/dL within 25 min" (in the clinic's unit).
fn forecast_sentence(
    f: &forecast::Forecast,
    c: &forecast::Crossing,
    units: DisplayUnits,
) -> String {
    let trend = if f.now - f.before >= 1.0 {
        "rising"
    } else if f.before - f.now >= 1.0 {
        "falling"
    } else {
        "steady"
    };
    format!(
        "Glucose {} and {trend}: forecast {} within {} min",
        units.value(Metric::Glucose, f.now.round()),
        units.value(Metric::Glucose, c.value.round()),
        c.minutes
    )
}

#[cfg(test)]
mod engine_tests;
