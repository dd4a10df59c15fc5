//! A patient's NEWS2 over time, for the patient page's card (`GET /patients/{id}/news2`,
//! docs/alerts.md "The NEWS2 card"): the score at each step of a time grid, from each
//! parameter's charted series.
//!
//! At each step, each parameter contributes its latest point at or before the step that is no
//! older than the rule's freshness; a parameter with none counts as missing, as it does in the
//! engine. A trend point scores each bucket's **mean** — a settled, charted value — so a
//! minute-by-minute oximeter does not make the line jitter, and a month of a 1 Hz stream is
//! never read reading by reading. The current score beside it is not taken from here: it uses
//! the latest reading of each parameter exactly as the alert engine does
//! ([`super::engine`]), so the number at the top of the card is the one an alert would carry.
//!
//! Pure: no I/O, no clock. The shell (`web/news2.rs`) reads the series and chooses the grid.

use super::news2::{self, Inputs, Score, Spo2Scale};

/// One parameter's charted points, `(time ms, value)`, oldest first (the time a point stands
/// for: a reading's own time, or the end of a bucket, so a step never sees a later reading).
pub type Points<'a> = &'a [(i64, f64)];

/// The score at each time of `grid` (ascending): `None` where no parameter has a point at or
/// before that time within `freshness_ms`.
///
/// `series` holds one series per NEWS2 parameter, in the order of [`news2::PARAMETERS`].
pub fn trend(
    series: &[Points<'_>; 7],
    grid: &[i64],
    freshness_ms: i64,
    scale: Spo2Scale,
) -> Vec<(i64, Option<Score>)> {
    // One cursor per parameter: the index of the first point after the current step, so the
    // walk is linear in points plus steps.
    let mut next = [0usize; 7];
    grid.iter()
        .map(|&t| {
            let values: [Option<f64>; 7] = std::array::from_fn(|k| {
                let s = series[k];
                while next[k] < s.len() && s[next[k]].0 <= t {
                    next[k] += 1;
                }
                let (at, v) = *s.get(next[k].checked_sub(1)?)?;
                (t - at <= freshness_ms).then_some(v)
            });
            if values.iter().all(Option::is_none) {
                return (t, None);
            }
            (t, Some(news2::score(&Inputs::from_values(values), scale)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const HOUR: i64 = 3_600_000;

    /// RR 25 (3), SpO2 93 on air (2), air (0), systolic 120 (0), pulse 95 (1), alert (0),
    /// 38.5 °C (1): 7, in the order of the RCP chart.
    fn unwell_at(t: i64) -> [Vec<(i64, f64)>; 7] {
        [25.0, 93.0, 0.0, 120.0, 95.0, 0.0, 38.5].map(|v| vec![(t, v)])
    }

    fn view(s: &[Vec<(i64, f64)>; 7]) -> [Points<'_>; 7] {
        std::array::from_fn(|k| s[k].as_slice())
    }

    #[test]
    fn a_hand_worked_chart_scores_seven() {
        let s = unwell_at(10 * MIN);
        let out = trend(&view(&s), &[10 * MIN], 4 * HOUR, Spo2Scale::One);
        let score = out[0].1.expect("a score");
        assert_eq!(score.total, 7);
        assert_eq!(score.missing, 0);
        assert_eq!(
            score.parts,
            [
                Some(3),
                Some(2),
                Some(0),
                Some(0),
                Some(1),
                Some(0),
                Some(1)
            ]
        );
        assert_eq!(score.risk(), news2::Risk::High);
    }

    #[test]
    fn a_step_before_any_reading_has_no_score() {
        let s = unwell_at(10 * MIN);
        let out = trend(&view(&s), &[0, 9 * MIN, 10 * MIN], 4 * HOUR, Spo2Scale::One);
        assert_eq!(out[0], (0, None));
        assert_eq!(out[1], (9 * MIN, None));
        assert_eq!(out[2].1.map(|s| s.total), Some(7));
    }

    #[test]
    fn stale_parameters_drop_out_and_the_score_is_then_incomplete() {
        let mut s = unwell_at(0);
        // The temperature is read again at 3 h: 37.0 (0).
        s[6].push((3 * HOUR, 37.0));
        let grid = [0, 4 * HOUR, 4 * HOUR + 1, 7 * HOUR + 1];
        let out = trend(&view(&s), &grid, 4 * HOUR, Spo2Scale::One);
        let totals: Vec<_> = out
            .iter()
            .map(|(_, s)| s.map(|s| (s.total, s.missing)))
            .collect();
        assert_eq!(
            totals,
            [
                // Everything fresh: 7.
                Some((7, 0)),
                // Exactly 4 h old is still fresh (as in the engine); the new temperature
                // scores 0: 6.
                Some((6, 0)),
                // A millisecond later only the temperature is fresh.
                Some((0, 6)),
                // And then nothing is.
                None,
            ]
        );
        let third = out[2].1.unwrap();
        assert_eq!(third.parts[6], Some(0));
        assert_eq!(third.parts[0], None);
    }

    #[test]
    fn each_step_takes_the_latest_point_at_or_before_it() {
        let mut s: [Vec<(i64, f64)>; 7] = Default::default();
        // Respiratory rate charted as bucket means: 18 (0), 22 (2), 26 (3).
        s[0] = vec![(HOUR, 18.0), (2 * HOUR, 22.0), (3 * HOUR, 26.0)];
        let grid = [HOUR, 2 * HOUR - 1, 2 * HOUR, 3 * HOUR + 30 * MIN];
        let out = trend(&view(&s), &grid, 4 * HOUR, Spo2Scale::One);
        let totals: Vec<_> = out.iter().map(|(_, s)| s.map(|s| s.total)).collect();
        assert_eq!(totals, [Some(0), Some(0), Some(2), Some(3)]);
        assert!(out.iter().all(|(_, s)| s.is_none_or(|s| s.missing == 6)));
    }

    #[test]
    fn categorical_means_read_as_the_engine_reads_them() {
        let mut s: [Vec<(i64, f64)>; 7] = Default::default();
        // A bucket where oxygen was on most of the time (mean 0.75), and SpO2 95 on scale 2:
        // 95 on oxygen scores 2, oxygen 2. A consciousness mean of 0.4 rounds to alert (0).
        s[1] = vec![(0, 95.0)];
        s[2] = vec![(0, 0.75)];
        s[5] = vec![(0, 0.4)];
        let out = trend(&view(&s), &[0], HOUR, Spo2Scale::Two);
        let score = out[0].1.unwrap();
        assert_eq!(score.parts[1..3], [Some(2), Some(2)]);
        assert_eq!(score.parts[5], Some(0));
        assert_eq!(score.total, 4);
    }
}
