//! `drift`: a one-sided CUSUM of a metric's daily figures against the patient's own baseline.
//!
//! For the day being judged (`E`), the **recent window** is the `window_days` days ending with
//! `E`, and the **baseline** the `baseline_days` days before the window. Each window day with a
//! figure `x` is standardised against the baseline's mean `μ` and sample standard deviation `σ`
//! (never below `min_sd`): `z = (x − μ) / σ` for `up`, `(μ − x) / σ` for `down`; the tabular
//! CUSUM `S = max(0, S + z − k)` runs over the window's days from `S = 0`, and the condition
//! holds when `S ≥ h` at the window's end. A baseline with fewer than `min_days` days of data
//! says nothing (a new patient, or one back from a gap).
//!
//! The window is a guard band: a drift under way is not yet part of the baseline it is measured
//! against. Once a new level persists, it enters the baseline and the condition clears — the
//! rule flags a change, not a level (a level is a threshold rule's job).
//!
//! Pure arithmetic over the figures it is given; it keeps nothing.

/// A drift rule's parameters, as checked by the care plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub baseline_days: u32,
    pub window_days: u32,
    pub min_days: u32,
    pub k: f64,
    pub h: f64,
    pub min_sd: f64,
    /// Watching for a rise (`true`) or a fall.
    pub up: bool,
}

impl Params {
    /// How many days before the newest reading's day the rule reads: the window and the
    /// baseline, for a resting figure (judged the day after it, so its window ends the day
    /// before the newest); a mean's window ends on the newest day and needs one day fewer.
    pub fn days_kept(&self) -> u32 {
        self.window_days + self.baseline_days
    }
}

/// The CUSUM of one judgement and what it was measured against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cusum {
    pub baseline_mean: f64,
    /// After the `min_sd` floor.
    pub baseline_sd: f64,
    pub baseline_days: u32,
    /// The mean of the window's figures.
    pub window_mean: f64,
    pub window_days: u32,
    /// `S` at the window's end.
    pub s: f64,
}

/// What a judgement found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Fewer than `min_days` days of data in the baseline (`have` of them).
    TooFewDays {
        have: u32,
    },
    /// No figure in the recent window.
    NoRecentDays,
    Judged(Cusum),
}

impl Outcome {
    /// Whether the condition holds.
    pub fn holds(&self, p: &Params) -> bool {
        // A tolerance so that a sum landing exactly on h counts, whatever the rounding.
        matches!(self, Outcome::Judged(c) if c.s >= p.h - 1e-9)
    }
}

/// Judges day `judged` from the daily figures (day, value), oldest first.
pub fn judge(figures: impl IntoIterator<Item = (i64, f64)>, judged: i64, p: &Params) -> Outcome {
    let window_from = judged - i64::from(p.window_days) + 1;
    let baseline_from = window_from - i64::from(p.baseline_days);
    let mut base: Vec<f64> = Vec::with_capacity(p.baseline_days as usize);
    let mut recent: Vec<f64> = Vec::with_capacity(p.window_days as usize);
    for (day, v) in figures {
        if (baseline_from..window_from).contains(&day) {
            base.push(v);
        } else if (window_from..=judged).contains(&day) {
            recent.push(v);
        }
    }
    let n = base.len() as u32;
    if n < p.min_days.max(2) {
        return Outcome::TooFewDays { have: n };
    }
    if recent.is_empty() {
        return Outcome::NoRecentDays;
    }
    let mean = base.iter().sum::<f64>() / f64::from(n);
    let var = base.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / f64::from(n - 1);
    let sd = var.sqrt().max(p.min_sd);
    let sign = if p.up { 1.0 } else { -1.0 };
    let s = recent
        .iter()
        .fold(0.0_f64, |s, x| (s + sign * (x - mean) / sd - p.k).max(0.0));
    Outcome::Judged(Cusum {
        baseline_mean: mean,
        baseline_sd: sd,
        baseline_days: n,
        window_mean: recent.iter().sum::<f64>() / recent.len() as f64,
        window_days: recent.len() as u32,
        s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stable week that repeats: any 7 consecutive days hold each value once, so every
    /// 7-day baseline has mean 560 / 7 = 80.0 and sample SD √(6 × 0.3² / 6) = 0.3.
    const WEEK: [f64; 7] = [79.7, 80.3, 79.7, 80.3, 79.7, 80.3, 80.0];

    fn params() -> Params {
        Params {
            baseline_days: 7,
            window_days: 3,
            min_days: 7,
            k: 0.5,
            h: 4.0,
            min_sd: 0.1,
            up: true,
        }
    }

    /// Days 0–13 stable, then a rise: 80.3, 81.1, 82.0 on days 14–16, then 80.0 again.
    fn series() -> Vec<(i64, f64)> {
        let mut s: Vec<(i64, f64)> = (0..14).map(|d| (d, WEEK[d as usize % 7])).collect();
        s.extend([(14, 80.3), (15, 81.1), (16, 82.0)]);
        s.extend((17..24).map(|d| (d, 80.0)));
        s
    }

    fn s_on(day: i64) -> f64 {
        match judge(series(), day, &params()) {
            Outcome::Judged(c) => c.s,
            other => panic!("day {day}: {other:?}"),
        }
    }

    #[test]
    fn fires_on_the_day_the_sum_reaches_h_and_not_before() {
        // Baseline mean 80.0, SD 0.3 for days 13–16 (their baselines are whole weeks).
        // Day 13: window 79.7, 80.3, 80.0 → z −1, 1, 0 → S 0, 0.5, 0.
        assert!((s_on(13) - 0.0).abs() < 1e-9);
        // Day 14: window 80.3, 80.0, 80.3 → z 1, 0, 1 → S 0.5, 0, 0.5.
        assert!((s_on(14) - 0.5).abs() < 1e-9);
        // Day 15: window 80.0, 80.3, 81.1 → z 0, 1, 3.667 → S 0, 0.5, 3.667 < 4.
        assert!((s_on(15) - (0.5 + 1.1 / 0.3 - 0.5)).abs() < 1e-9);
        assert!(!judge(series(), 15, &params()).holds(&params()));
        // Day 16: window 80.3, 81.1, 82.0 → z 1, 3.667, 6.667 → S 0.5, 3.667, 9.833 ≥ 4.
        let o = judge(series(), 16, &params());
        let Outcome::Judged(c) = o else {
            panic!("{o:?}")
        };
        assert!((c.s - (0.5 + (1.1 / 0.3 - 0.5) + (2.0 / 0.3 - 0.5))).abs() < 1e-9);
        assert!((c.baseline_mean - 80.0).abs() < 1e-9);
        assert!((c.baseline_sd - 0.3).abs() < 1e-9);
        // The window's mean: (80.3 + 81.1 + 82.0) / 3 = 81.1333.
        assert!((c.window_mean - 243.4 / 3.0).abs() < 1e-9);
        assert!(o.holds(&params()));
    }

    #[test]
    fn clears_once_the_window_is_back_to_baseline() {
        // Day 19: window 80.0 × 3, baseline days 9–15 (mean above 80 by then): z ≤ 0, S 0.
        assert_eq!(s_on(19), 0.0);
        assert!(!judge(series(), 19, &params()).holds(&params()));
    }

    #[test]
    fn a_new_patient_below_min_days_is_not_judged() {
        // Only days 7–16 known: day 16's baseline (days 7–13) has 7 days; day 15's (6–12) 6.
        let late: Vec<(i64, f64)> = series().into_iter().filter(|(d, _)| *d >= 7).collect();
        assert_eq!(
            judge(late.clone(), 15, &params()),
            Outcome::TooFewDays { have: 6 }
        );
        assert!(judge(late, 16, &params()).holds(&params()));
    }

    #[test]
    fn a_fall_is_watched_the_other_way_and_a_flat_baseline_uses_the_floor() {
        // SpO2: a baseline of 96 every day has SD 0; the floor 0.5 stands in.
        let mut s: Vec<(i64, f64)> = (0..7).map(|d| (d, 96.0)).collect();
        s.extend([(7, 95.0), (8, 94.0), (9, 94.0)]);
        let p = Params {
            min_sd: 0.5,
            up: false,
            ..params()
        };
        // z = (96 − x) / 0.5: 2, 4, 4 → S 1.5, 5.0, 8.5.
        let Outcome::Judged(c) = judge(s, 9, &p) else {
            panic!()
        };
        assert_eq!(c.baseline_sd, 0.5);
        assert!((c.s - 8.5).abs() < 1e-9);
    }

    #[test]
    fn days_without_data_are_left_out_not_counted_as_zero() {
        // Baseline days 0–6 with days 2 and 4 missing (5 days), window days 7–9 with day 8
        // missing: S runs over days 7 and 9 only.
        let s = vec![
            (0, 80.0),
            (1, 80.6),
            (3, 80.0),
            (5, 80.6),
            (6, 80.3),
            (7, 81.0),
            (9, 81.5),
        ];
        let p = Params {
            min_days: 5,
            ..params()
        };
        // Mean 401.5 / 5 = 80.3; squares 0.09 × 4 + 0 = 0.36, / 4 = 0.09: SD 0.3.
        // z: 0.7 / 0.3 = 2.333, 1.2 / 0.3 = 4 → S 1.833, 5.333.
        let Outcome::Judged(c) = judge(s, 9, &p) else {
            panic!()
        };
        assert_eq!((c.baseline_days, c.window_days), (5, 2));
        assert!((c.s - (0.7 / 0.3 - 0.5 + 1.2 / 0.3 - 0.5)).abs() < 1e-9);
    }
}
