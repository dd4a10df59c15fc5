//! A metric's daily figures, as the `drift` and `macd` rules read them: readings are folded into
//! 5-minute buckets and the buckets into UTC days, and only the days are kept (a bounded number
//! of them), never the readings.
//!
//! A day's figure is either its **mean** (every reading of the day counts once) or its
//! **resting** figure, the lowest 5-minute mean of the day (heart rate: the lowest sustained rate
//! of the day, usually asleep; a 5-minute mean rather than a single reading, so one artefact
//! does not make the day). Buckets are the unit because a restart rebuilds the days before the
//! latest reading's day from the store's 5-minute buckets ([`Days::add_bucket`]) instead of
//! replaying every reading: the same figures (up to rounding) from a few hundred rows a day
//! instead of up to 86,400.
//!
//! It must never read a clock: days follow the readings' own times.

use std::collections::VecDeque;

/// One UTC day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
/// The width of the buckets a day's figures are built from.
pub const BUCKET_MS: i64 = 300_000;

/// The UTC day (days since 1970-01-01) of a time.
pub fn day_of(time_ms: i64) -> i64 {
    time_ms.div_euclid(DAY_MS)
}

/// Which figure stands for a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    /// The mean of the day's readings.
    Mean,
    /// The lowest 5-minute mean of the day.
    Resting,
}

/// A 5-minute bucket of readings, as the store aggregates them for a rebuild.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// The start of the bucket (a multiple of [`BUCKET_MS`]).
    pub start_ms: i64,
    pub mean: f64,
    pub count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Day {
    day: i64,
    /// The sum and number of the readings of the day's closed buckets.
    sum: f64,
    n: u64,
    /// The lowest mean among the day's closed buckets.
    lowest: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Open {
    slot: i64,
    sum: f64,
    n: u64,
}

/// The daily figures of one metric over the last `keep` days before the newest (and that day).
#[derive(Debug, Clone, PartialEq)]
pub struct Days {
    keep: i64,
    days: VecDeque<Day>,
    /// The bucket readings are going into (its day is in `days`, its readings not yet).
    open: Option<Open>,
    /// The newest reading (or rebuilt bucket's end) counted.
    newest_ms: Option<i64>,
}

impl Days {
    /// Keeps the newest day and the `keep` days before it.
    pub fn new(keep: u32) -> Days {
        Days {
            keep: i64::from(keep),
            days: VecDeque::new(),
            open: None,
            newest_ms: None,
        }
    }

    /// The time of the newest reading counted (for a rebuild's bucket: its last millisecond).
    pub fn newest_ms(&self) -> Option<i64> {
        self.newest_ms
    }

    /// Counts a reading. Readings come in time order (the engine drops older ones); one older
    /// than the bucket being filled is counted as a bucket of its own.
    pub fn add(&mut self, time_ms: i64, value: f64) {
        let slot = time_ms.div_euclid(BUCKET_MS);
        match self.open {
            Some(ref mut o) if o.slot == slot => {
                o.sum += value;
                o.n += 1;
            }
            Some(o) if slot < o.slot => self.close(slot, value, 1, value),
            _ => {
                if let Some(o) = self.open.take() {
                    self.close(o.slot, o.sum, o.n, o.sum / o.n as f64);
                }
                self.day_mut(day_of(slot * BUCKET_MS));
                self.open = Some(Open {
                    slot,
                    sum: value,
                    n: 1,
                });
            }
        }
        self.newest_ms = Some(self.newest_ms.map_or(time_ms, |t| t.max(time_ms)));
        self.prune();
    }

    /// Counts a closed 5-minute bucket (a rebuild, oldest first, before any reading).
    pub fn add_bucket(&mut self, b: Bucket) {
        if b.count == 0 || !b.mean.is_finite() {
            return;
        }
        let slot = b.start_ms.div_euclid(BUCKET_MS);
        self.close(slot, b.mean * b.count as f64, b.count, b.mean);
        let end = slot * BUCKET_MS + BUCKET_MS - 1;
        self.newest_ms = Some(self.newest_ms.map_or(end, |t| t.max(end)));
        self.prune();
    }

    /// Each day with readings, oldest first, with its figure.
    pub fn figures(&self, figure: Figure) -> impl Iterator<Item = (i64, f64)> + '_ {
        let open = self.open;
        self.days.iter().filter_map(move |d| {
            let (mut sum, mut n, mut lowest) = (d.sum, d.n, d.lowest);
            if let Some(o) = open.filter(|o| day_of(o.slot * BUCKET_MS) == d.day) {
                sum += o.sum;
                n += o.n;
                lowest = lowest.min(o.sum / o.n as f64);
            }
            (n > 0).then(|| {
                let v = match figure {
                    Figure::Mean => sum / n as f64,
                    Figure::Resting => lowest,
                };
                (d.day, v)
            })
        })
    }

    fn close(&mut self, slot: i64, sum: f64, n: u64, mean: f64) {
        let d = self.day_mut(day_of(slot * BUCKET_MS));
        if let Some(d) = d {
            d.sum += sum;
            d.n += n;
            d.lowest = d.lowest.min(mean);
        }
    }

    /// The entry of `day`, made if needed (`None` when it is too old to keep).
    fn day_mut(&mut self, day: i64) -> Option<&mut Day> {
        let fresh = Day {
            day,
            sum: 0.0,
            n: 0,
            lowest: f64::INFINITY,
        };
        let i = match self.days.iter().rposition(|d| d.day <= day) {
            Some(i) if self.days[i].day == day => i,
            Some(i) => {
                self.days.insert(i + 1, fresh);
                i + 1
            }
            None => {
                let newest = self.days.back().map_or(day, |d| d.day);
                if day < newest - self.keep {
                    return None;
                }
                self.days.push_front(fresh);
                0
            }
        };
        self.days.get_mut(i)
    }

    fn prune(&mut self) {
        let Some(newest) = self.days.back().map(|d| d.day) else {
            return;
        };
        while self
            .days
            .front()
            .is_some_and(|d| d.day < newest - self.keep)
        {
            self.days.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn a_day_is_the_mean_of_its_readings_or_its_lowest_five_minute_mean() {
        let mut d = Days::new(30);
        let day = 10 * DAY_MS;
        // 00:00–00:05: 60, 64 (mean 62); 00:05–00:10: 58 (mean 58); 01:00: 70, 80 (mean 75).
        for (t, v) in [
            (0, 60.0),
            (MIN, 64.0),
            (5 * MIN, 58.0),
            (60 * MIN, 70.0),
            (61 * MIN, 80.0),
        ] {
            d.add(day + t, v);
        }
        // Mean of the five readings: 332 / 5 = 66.4; lowest 5-minute mean: 58.
        assert_eq!(d.figures(Figure::Mean).collect::<Vec<_>>(), [(10, 66.4)]);
        assert_eq!(d.figures(Figure::Resting).collect::<Vec<_>>(), [(10, 58.0)]);
        // The next day starts a new entry; the open bucket of day 10 is closed into it.
        d.add(day + DAY_MS, 90.0);
        assert_eq!(
            d.figures(Figure::Mean).collect::<Vec<_>>(),
            [(10, 66.4), (11, 90.0)]
        );
    }

    #[test]
    fn only_the_newest_day_and_keep_days_before_it_are_kept() {
        let mut d = Days::new(3);
        for day in 0..10 {
            d.add(day * DAY_MS, day as f64);
        }
        let days: Vec<i64> = d.figures(Figure::Mean).map(|(day, _)| day).collect();
        assert_eq!(days, [6, 7, 8, 9]);
        // A reading for a day already dropped changes nothing.
        d.add(2 * DAY_MS, 100.0);
        let days: Vec<i64> = d.figures(Figure::Mean).map(|(day, _)| day).collect();
        assert_eq!(days, [6, 7, 8, 9]);
    }

    #[test]
    fn buckets_give_the_same_figures_as_the_readings_they_summarise() {
        let readings: Vec<(i64, f64)> = (0..2 * 24 * 60)
            .map(|m| (m * MIN, 60.0 + ((m * 7) % 13) as f64))
            .collect();
        let mut live = Days::new(30);
        for &(t, v) in &readings {
            live.add(t, v);
        }
        // The store's view: one row per 5-minute bucket with its mean and count.
        let mut rebuilt = Days::new(30);
        for chunk in readings.chunks(5) {
            let sum: f64 = chunk.iter().map(|(_, v)| v).sum();
            rebuilt.add_bucket(Bucket {
                start_ms: chunk[0].0,
                mean: sum / chunk.len() as f64,
                count: chunk.len() as u64,
            });
        }
        for figure in [Figure::Mean, Figure::Resting] {
            let a: Vec<_> = live.figures(figure).collect();
            let b: Vec<_> = rebuilt.figures(figure).collect();
            assert_eq!(a.len(), b.len());
            for ((da, va), (db, vb)) in a.iter().zip(&b) {
                assert_eq!(da, db);
                assert!((va - vb).abs() < 1e-9, "{figure:?}: {va} vs {vb}");
            }
        }
    }
}
