//! `macd`: Moving Average Convergence/Divergence of daily weights (Appel's indicator, compared
//! with simple weight-gain rules for heart failure by Zhang et al., Eur J Heart Fail 2009).
//!
//! Over the last [`HISTORY_DAYS`] days up to the day judged, the day's mean weight is smoothed by
//! two exponential moving averages, `fast` and `slow` (span `N`: `α = 2 / (N + 1)`), both seeded
//! with the first day's weight; `MACD = fast − slow` (positive while the weight rises), and the
//! `signal` is an EMA of the MACD (seeded with the first day's MACD, 0). A day without a weight
//! carries the previous day's forward. The condition holds when the weight is rising
//! (`MACD > 0`) and the MACD has crossed above its signal by at least `margin` kg: the gain is
//! accelerating, not merely continuing.
//!
//! Computed afresh from the days on every judgement, over a fixed number of days, so that a
//! restart that rebuilds the same days finds the same values (an EMA carried from the first
//! day ever would depend on how far back the rebuild reached).

/// How many days before the judged day the averages run over. The seed's weight in the slow
/// average after that many days is at most `(13/15)^28 ≈ 2 %` (slow span 14).
pub const HISTORY_DAYS: u32 = 28;

/// A MACD rule's parameters, as checked by the care plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub fast_days: u32,
    pub slow_days: u32,
    pub signal_days: u32,
    pub margin: f64,
    pub min_days: u32,
}

/// The averages on the judged day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub fast: f64,
    pub slow: f64,
    pub macd: f64,
    pub signal: f64,
}

impl Point {
    /// How far the MACD is above its signal.
    pub fn histogram(&self) -> f64 {
        self.macd - self.signal
    }
}

/// What a judgement found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Fewer than `min_days` days with a weight in the history (`have` of them).
    TooFewDays {
        have: u32,
    },
    Judged(Point),
}

impl Outcome {
    /// Whether the condition holds.
    pub fn holds(&self, p: &Params) -> bool {
        matches!(self, Outcome::Judged(x) if x.macd > 0.0 && x.histogram() >= p.margin - 1e-9)
    }
}

fn alpha(span: u32) -> f64 {
    2.0 / (f64::from(span) + 1.0)
}

/// Judges day `judged` from the daily weights (day, value), oldest first.
pub fn judge(figures: impl IntoIterator<Item = (i64, f64)>, judged: i64, p: &Params) -> Outcome {
    let from = judged - i64::from(HISTORY_DAYS);
    let days: Vec<(i64, f64)> = figures
        .into_iter()
        .filter(|(d, _)| (from..=judged).contains(d))
        .collect();
    let have = days.len() as u32;
    if have < p.min_days.max(1) {
        return Outcome::TooFewDays { have };
    }
    let (af, as_, ag) = (alpha(p.fast_days), alpha(p.slow_days), alpha(p.signal_days));
    let (first_day, first) = days[0];
    let mut x = Point {
        fast: first,
        slow: first,
        macd: 0.0,
        signal: 0.0,
    };
    let mut next = days.iter().skip(1).peekable();
    let mut weight = first;
    for day in first_day + 1..=judged {
        if let Some((_, w)) = next.next_if(|(d, _)| *d == day) {
            weight = *w;
        }
        x.fast = af * weight + (1.0 - af) * x.fast;
        x.slow = as_ * weight + (1.0 - as_) * x.slow;
        x.macd = x.fast - x.slow;
        x.signal = ag * x.macd + (1.0 - ag) * x.signal;
    }
    Outcome::Judged(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spans 3, 7 and 3: α = 2/4 = 0.5, 2/8 = 0.25 and 0.5, so every value below is exact in
    /// binary and was worked out by hand.
    fn params() -> Params {
        Params {
            fast_days: 3,
            slow_days: 7,
            signal_days: 3,
            margin: 0.3,
            min_days: 5,
        }
    }

    /// 80 kg for five days (days 0–4), then 81, 82, 83.5, 83.5.
    const WEIGHTS: [f64; 9] = [80.0, 80.0, 80.0, 80.0, 80.0, 81.0, 82.0, 83.5, 83.5];

    fn series() -> Vec<(i64, f64)> {
        WEIGHTS
            .iter()
            .enumerate()
            .map(|(d, w)| (d as i64, *w))
            .collect()
    }

    fn point(day: i64, p: &Params) -> Point {
        match judge(series(), day, p) {
            Outcome::Judged(x) => x,
            other => panic!("day {day}: {other:?}"),
        }
    }

    #[test]
    fn fires_on_the_day_the_macd_clears_its_signal_by_the_margin() {
        let p = params();
        // Days 0–4 at 80: fast = slow = 80, MACD 0, signal 0.
        assert_eq!(point(4, &p).macd, 0.0);
        // Day 5 (81): fast .5·81 + .5·80 = 80.5; slow .25·81 + .75·80 = 80.25;
        // MACD .25; signal .5·.25 = .125; histogram .125 < .3.
        assert_eq!(
            point(5, &p),
            Point {
                fast: 80.5,
                slow: 80.25,
                macd: 0.25,
                signal: 0.125
            }
        );
        assert!(!judge(series(), 5, &p).holds(&p));
        // Day 6 (82): fast 81.25; slow 20.5 + 60.1875 = 80.6875; MACD .5625;
        // signal .28125 + .0625 = .34375; histogram .21875 < .3.
        let x = point(6, &p);
        assert_eq!((x.fast, x.slow, x.signal), (81.25, 80.6875, 0.34375));
        assert!(!judge(series(), 6, &p).holds(&p));
        // Day 7 (83.5): fast 82.375; slow 20.875 + 60.515625 = 81.390625; MACD .984375;
        // signal .4921875 + .171875 = .6640625; histogram .3203125 ≥ .3: fires.
        let x = point(7, &p);
        assert_eq!((x.fast, x.slow, x.macd), (82.375, 81.390625, 0.984375));
        assert_eq!(x.signal, 0.6640625);
        assert!(judge(series(), 7, &p).holds(&p));
        // Day 8 (83.5 again): fast 82.9375; slow 20.875 + 61.04296875 = 81.91796875;
        // MACD 1.01953125; signal .841796875; histogram .177734375: clears, though the weight
        // stays up (the fixed `rate` rule is what watches the level).
        let x = point(8, &p);
        assert_eq!((x.macd, x.signal), (1.01953125, 0.841796875));
        assert!(!judge(series(), 8, &p).holds(&p));
    }

    #[test]
    fn a_new_patient_below_min_days_is_not_judged() {
        // From day 2 only: day 7 has 6 days of weights.
        let late: Vec<(i64, f64)> = series().into_iter().filter(|(d, _)| *d >= 2).collect();
        let p = Params {
            min_days: 7,
            ..params()
        };
        assert_eq!(judge(late, 7, &p), Outcome::TooFewDays { have: 6 });
    }

    #[test]
    fn a_missing_day_carries_the_previous_weight_forward() {
        // Day 6 missing: it counts as 81 (day 5's), then day 7 is 83.5.
        let gappy: Vec<(i64, f64)> = series().into_iter().filter(|(d, _)| *d != 6).collect();
        let x = match judge(gappy, 7, &params()) {
            Outcome::Judged(x) => x,
            other => panic!("{other:?}"),
        };
        // Day 6 as 81: fast 80.75, slow .25·81 + .75·80.25 = 80.4375.
        // Day 7: fast .5·83.5 + .5·80.75 = 82.125; slow 20.875 + 60.328125 = 81.203125.
        assert_eq!((x.fast, x.slow), (82.125, 81.203125));
    }

    #[test]
    fn a_falling_weight_crossing_up_is_not_a_gain() {
        // A loss (84 → 78) that turns: day 8's MACD is −.6484375, its signal −.97265625, so
        // the histogram .32421875 clears the margin while the weight is still below its trend.
        let falling: Vec<(i64, f64)> = [84.0, 84.0, 84.0, 84.0, 84.0, 78.0, 78.0, 80.0, 81.0]
            .iter()
            .enumerate()
            .map(|(d, w)| (d as i64, *w))
            .collect();
        let o = judge(falling, 8, &params());
        let Outcome::Judged(x) = o else { panic!() };
        assert_eq!((x.macd, x.signal), (-0.6484375, -0.97265625));
        assert!(!o.holds(&params()));
    }

    #[test]
    fn only_the_history_window_counts() {
        // A weight 40 days back is outside the 28-day history: the same point as without it.
        let mut old = vec![(-40, 120.0)];
        old.extend(series());
        assert_eq!(judge(old, 7, &params()), judge(series(), 7, &params()));
    }
}
