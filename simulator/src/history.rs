//! `vigil-sim backfill`'s plan: a month (or any number of days) of one patient's past, pure and
//! deterministic for a seed — how adherent the patient is (a [`Persona`]), on which days they
//! measured, every reading with its device's own time, and the care team's time with them
//! ([`Care`]). The shell, [`crate::backfill`], sends it through the API and MQTT.
//!
//! This module must never do I/O or read a clock: the current time is an input ([`Window`]),
//! and no reading is planned after it.
//!
//! Readings are taken at the patient's local hours (the gateway counts a day of data in the
//! patient's zone, docs/billing.md), on the schedules of [`crate::device`] — spot checks at
//! their hours ±20 minutes, not every one taken — except that streams are kept to one reading
//! an hour (a watch while worn, 07:00–22:00; a CGM all day), so that a month stays a sane volume
//! (about 1,500 readings per watch, 750 per CGM, a few dozen per spot-check device).
//! Values come from [`Physiology`] (the stable story), so they are plausible for the patient and
//! inside every metric's accepted range.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

use crate::device::{self, Schedule};
use crate::payload::Reading;
use crate::physio::Physiology;
use crate::provision::SimPatient;
use crate::rng::{Rng, hash};
use crate::scenario::Scenario;

/// How a patient keeps up with their devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Persona {
    /// A reading most days: misses at most one day in six.
    Adherent,
    /// Adherent at first, then stops for good after a day in the first two thirds.
    Dropout,
    /// Measures on 2 to 15 days, scattered.
    Sporadic,
    /// Measures on no day or on one.
    Barely,
}

impl Persona {
    pub const ALL: [Persona; 4] = [
        Persona::Adherent,
        Persona::Dropout,
        Persona::Sporadic,
        Persona::Barely,
    ];

    /// The share of a fleet living this persona.
    pub fn share(self) -> f64 {
        match self {
            Persona::Adherent => 0.5,
            Persona::Dropout | Persona::Sporadic => 0.2,
            Persona::Barely => 0.1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Persona::Adherent => "adherent",
            Persona::Dropout => "dropout",
            Persona::Sporadic => "sporadic",
            Persona::Barely => "barely",
        }
    }
}

/// The personas of a fleet of `n` patients, in patient order: each persona's share of `n`,
/// rounded so that they add up to `n` (largest remainder; ties to the larger share), dealt in
/// an order shuffled by `seed`. Eight patients are 4 adherent, 2 dropping out, 1 sporadic and
/// 1 barely measuring, whatever the seed; only who is which changes.
pub fn personas(seed: u64, n: usize) -> Vec<Persona> {
    let exact: Vec<f64> = Persona::ALL.iter().map(|p| p.share() * n as f64).collect();
    let mut counts: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut order: Vec<usize> = (0..Persona::ALL.len()).collect();
    // Largest remainder first; equal remainders keep the order of `ALL` (a stable sort).
    order.sort_by(|a, b| {
        let rem = |i: usize| exact[i] - exact[i].floor();
        rem(*b).total_cmp(&rem(*a))
    });
    let missing = n - counts.iter().sum::<usize>();
    for i in order.into_iter().take(missing) {
        counts[i] += 1;
    }
    let mut out: Vec<Persona> = Persona::ALL
        .iter()
        .zip(counts)
        .flat_map(|(p, c)| std::iter::repeat_n(*p, c))
        .collect();
    let mut rng = Rng::derive(seed, hash("personas"));
    for i in (1..out.len()).rev() {
        out.swap(i, rng.between(0, i as u32) as usize);
    }
    out
}

/// How much of the care team's time a patient gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Care {
    /// One data review of 5–9 minutes: below the 10 minutes of any management code.
    Light,
    /// A review of 5–8 minutes and a phone call of 5–10 (interactive): 10 to 18 minutes.
    Moderate,
    /// A review of 5–15 minutes every week, a call of 10–20 minutes, and half of them some care
    /// coordination.
    Full,
    /// As `Full`, and a video visit of 15–30 minutes.
    Video,
}

impl Care {
    pub fn name(self) -> &'static str {
        match self {
            Care::Light => "light",
            Care::Moderate => "moderate",
            Care::Full => "full",
            Care::Video => "video",
        }
    }
}

/// The days being filled in: from `start` (today, UTC, minus `days`) to today, `days + 1`
/// dates, the last one only up to now.
#[derive(Debug, Clone)]
pub struct Window {
    /// The first day, the enrollment's start.
    pub start: Date,
    pub days: u32,
    /// The real clock when the backfill began (Unix ms): nothing is planned after it.
    pub now_ms: i64,
    /// Where the patient lives: their readings are taken at local hours.
    pub tz: TimeZone,
}

/// A window is too far from the years Vigil accepts.
#[derive(Debug, thiserror::Error)]
#[error("the clock ({0} ms) or the number of days is out of range")]
pub struct OutOfRange(i64);

impl Window {
    /// The `days` before today (UTC) and today, in zone `tz`, as of `now_ms`.
    pub fn ending_now(now_ms: i64, days: u32, tz: TimeZone) -> Result<Window, OutOfRange> {
        let today = Timestamp::from_millisecond(now_ms)
            .map_err(|_| OutOfRange(now_ms))?
            .to_zoned(TimeZone::UTC)
            .date();
        let start = today
            .checked_sub(Span::new().days(i64::from(days)))
            .map_err(|_| OutOfRange(now_ms))?;
        Ok(Window {
            start,
            days,
            now_ms,
            tz,
        })
    }

    /// The date of day `day` (0 is the start; `days` is today).
    pub fn date(&self, day: u32) -> Date {
        self.start
            .checked_add(Span::new().days(i64::from(day)))
            .unwrap_or(self.start)
    }

    /// The instant of `minute` (0..1440) and `second` of day `day`, at home (a time that a
    /// change of clocks skips is read as after the change).
    fn at(&self, day: u32, minute: u32, second: u32) -> Option<i64> {
        let m = minute.min(24 * 60 - 1);
        let dt = self
            .date(day)
            .at((m / 60) as i8, (m % 60) as i8, second.min(59) as i8, 0);
        self.tz.to_timestamp(dt).ok().map(Timestamp::as_millisecond)
    }

    /// The latest time a reading may have: a minute before now, so that a device clock a little
    /// behind the gateway's never makes it "in the future".
    pub fn latest_ms(&self) -> i64 {
        self.now_ms - 60_000
    }
}

/// The readings one device sends for one day, in one publish (an array of vigil-json objects),
/// as a phone app uploading the day's measurements does.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Index into the patient's devices.
    pub device: usize,
    pub day: u32,
    /// In time order.
    pub readings: Vec<Reading>,
}

/// A time entry to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub day: u32,
    pub minutes: u32,
    /// `review`, `call`, `video` or `coordination`.
    pub activity: &'static str,
    pub interactive: bool,
    pub note: &'static str,
}

/// The note on a video visit: the API cannot hold a visit in the past, so a past visit is its
/// time.
pub const VIDEO_NOTE: &str = "video visit (vigil-sim backfill: a past visit is logged as its time; only a held visit logs its own)";

/// One patient's planned past.
#[derive(Debug, Clone)]
pub struct History {
    pub persona: Persona,
    pub care: Care,
    /// Days (0 = the start) on which the patient measured, ascending.
    pub active_days: Vec<u32>,
    /// By day, then device.
    pub batches: Vec<Batch>,
    /// By day.
    pub entries: Vec<Entry>,
}

impl History {
    pub fn readings(&self) -> usize {
        self.batches.iter().map(|b| b.readings.len()).sum()
    }

    pub fn minutes(&self) -> u32 {
        self.entries.iter().map(|e| e.minutes).sum()
    }
}

/// Devices whose readings are typed in by hand rather than transmitted (their profile says
/// `manual_entry`): they never make a day of data, so the plan does not count on them.
const TYPED_IN: [&str; 1] = ["patient-app"];

/// Plans `patient`'s past over `w`, living `persona`, for the backfill's `seed`.
pub fn plan(seed: u64, patient: &SimPatient, persona: Persona, w: &Window) -> History {
    let base = Rng::derive(seed, hash(&patient.id)).next_u64();
    let active_days = active_days(&mut Rng::derive(base, hash("days")), persona, w.days);
    let physio = Physiology::new(patient.seed, Scenario::Stable, 0);
    let mut batches = Vec::new();
    for &day in &active_days {
        for (d, dev) in patient.devices.iter().enumerate() {
            let mut rng = Rng::derive(base ^ hash(&dev.id), u64::from(day));
            let readings = day_readings(&mut rng, &dev.profile, &physio, w, day);
            if !readings.is_empty() {
                batches.push(Batch {
                    device: d,
                    day,
                    readings,
                });
            }
        }
    }
    let mut rng = Rng::derive(base, hash("care"));
    let care = match rng.f64() {
        x if x < 0.2 => Care::Light,
        x if x < 0.5 => Care::Moderate,
        x if x < 0.9 => Care::Full,
        _ => Care::Video,
    };
    let entries = entries(&mut rng, care, persona, &active_days, w.days);
    History {
        persona,
        care,
        active_days,
        batches,
        entries,
    }
}

/// `k` distinct numbers of `0..n` (all of them when `k >= n`), ascending.
fn sample(rng: &mut Rng, n: u32, k: u32) -> Vec<u32> {
    let mut all: Vec<u32> = (0..n).collect();
    let k = k.min(n) as usize;
    for i in 0..k {
        let j = rng.between(i as u32, n - 1) as usize;
        all.swap(i, j);
    }
    let mut out = all[..k].to_vec();
    out.sort_unstable();
    out
}

/// The days on which a patient living `persona` measures, among `0..=days` (today included
/// for those who measure most days; the scattered days of the others are all in the past, so
/// their number is exact).
fn active_days(rng: &mut Rng, persona: Persona, days: u32) -> Vec<u32> {
    let most = |rng: &mut Rng, n: u32| {
        let k = rng.between(0, n / 6);
        let missed = sample(rng, n, k);
        (0..n).filter(|d| !missed.contains(d)).collect::<Vec<_>>()
    };
    match persona {
        Persona::Adherent => most(rng, days + 1),
        Persona::Dropout => {
            let stop = rng.between((days / 5).max(1), (days * 2 / 3).max(1));
            most(rng, stop)
        }
        Persona::Sporadic => {
            let k = rng.between(2, 15);
            sample(rng, days, k)
        }
        Persona::Barely => {
            let k = rng.between(0, 1);
            sample(rng, days, k)
        }
    }
}

/// One device's readings on a day its patient measures: each slot of its schedule taken or
/// not, at least one for a device that transmits, none after [`Window::latest_ms`].
fn day_readings(
    rng: &mut Rng,
    profile: &str,
    physio: &Physiology,
    w: &Window,
    day: u32,
) -> Vec<Reading> {
    let Some(kind) = device::kind(profile) else {
        return Vec::new();
    };
    let typed_in = TYPED_IN.contains(&profile);
    let mut times: Vec<(i64, usize)> = Vec::new();
    for (g, group) in kind.groups.iter().enumerate() {
        // (minute of the day, ± jitter in minutes) of each slot, and the chance it is taken.
        let (slots, chance): (Vec<(f64, f64)>, f64) = match group.schedule {
            Schedule::Daily(hours) => (
                hours.iter().map(|h| (h * 60.0, 20.0)).collect(),
                if typed_in { 0.4 } else { 0.75 },
            ),
            // A stream, kept to a reading an hour: a watch while worn, a CGM all day.
            Schedule::Every(_) if profile == "smartwatch" => (
                (7..=22u32)
                    .map(|h| (f64::from(h) * 60.0 + 30.0, 30.0))
                    .collect(),
                0.85,
            ),
            Schedule::Every(_) => (
                (0..24u32)
                    .map(|h| (f64::from(h) * 60.0 + 30.0, 30.0))
                    .collect(),
                0.9,
            ),
        };
        let mut taken: Vec<(f64, f64)> = slots
            .iter()
            .copied()
            .filter(|_| rng.chance(chance))
            .collect();
        if taken.is_empty() && !typed_in && !slots.is_empty() {
            taken.push(slots[rng.between(0, slots.len() as u32 - 1) as usize]);
        }
        for (minute, jitter) in taken {
            let m = (minute + rng.range(-jitter, jitter)).clamp(0.0, 1439.0) as u32;
            let Some(t) = w.at(day, m, rng.between(0, 59)) else {
                continue;
            };
            if t <= w.latest_ms() {
                times.push((t, g));
            }
        }
    }
    times.sort_unstable();
    times
        .into_iter()
        .flat_map(|(t, g)| kind.groups[g].metrics.iter().map(move |m| (*m, t)))
        .filter_map(|(metric, t)| {
            Some(Reading {
                metric,
                value: physio.measure(metric, t)?,
                time_ms: t,
            })
        })
        .collect()
}

/// The care team's time with a patient over days `0..=days`.
fn entries(rng: &mut Rng, care: Care, persona: Persona, active: &[u32], days: u32) -> Vec<Entry> {
    let review = |day, minutes| Entry {
        day,
        minutes,
        activity: "review",
        interactive: false,
        note: "reviewed the readings (vigil-sim backfill)",
    };
    let call = |day, minutes| Entry {
        day,
        minutes,
        activity: "call",
        interactive: true,
        note: "phone call with the patient (vigil-sim backfill)",
    };
    let mut out = Vec::new();
    match care {
        Care::Light => out.push(review(rng.between(1, days), rng.between(5, 9))),
        Care::Moderate => {
            out.push(review(rng.between(1, days), rng.between(5, 8)));
            out.push(call(rng.between(1, days), rng.between(5, 10)));
        }
        Care::Full | Care::Video => {
            for week in 0..=days / 7 {
                let day = (week * 7 + rng.between(0, 6)).min(days);
                out.push(review(day, rng.between(5, 15)));
            }
            out.push(call(rng.between(1, days), rng.between(10, 20)));
            if rng.chance(0.5) {
                out.push(Entry {
                    day: rng.between(1, days),
                    minutes: rng.between(5, 15),
                    activity: "coordination",
                    interactive: false,
                    note: "coordinated care with the practice (vigil-sim backfill)",
                });
            }
            if care == Care::Video {
                out.push(Entry {
                    day: rng.between(1, days),
                    minutes: rng.between(15, 30),
                    activity: "video",
                    interactive: true,
                    note: VIDEO_NOTE,
                });
            }
        }
    }
    // A patient who stopped measuring, or barely started, gets a call about it.
    if matches!(persona, Persona::Dropout | Persona::Barely) {
        let quiet_since = active.last().map_or(days / 3, |d| d + 2);
        out.push(Entry {
            day: rng.between(quiet_since.min(days), days),
            minutes: rng.between(5, 10),
            activity: "call",
            interactive: true,
            note: "called the patient about missing readings (vigil-sim backfill)",
        });
    }
    out.sort_by_key(|e| e.day);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::SimDevice;

    /// 2026-11-25T15:20:00Z.
    const NOW: i64 = 1_795_620_000_000;

    fn patient(i: usize) -> SimPatient {
        let id = format!("sim-{i:04}");
        let devices = [
            "smartwatch",
            "pulse-oximeter",
            "bp-cuff",
            "thermometer",
            "scale",
            "patient-app",
            "glucose-meter",
        ]
        .iter()
        .map(|p| SimDevice {
            id: format!("{id}-{p}"),
            profile: (*p).to_owned(),
            password: String::new(),
        })
        .collect();
        SimPatient {
            id,
            seed: 1000 + i as u64,
            devices,
        }
    }

    fn window(tz: &str) -> Window {
        Window::ending_now(NOW, 30, TimeZone::get(tz).unwrap()).unwrap()
    }

    /// Distinct local dates on which a transmitting device sent a reading (what billing counts).
    fn device_days(h: &History, p: &SimPatient, w: &Window) -> Vec<Date> {
        let mut out: Vec<Date> = h
            .batches
            .iter()
            .filter(|b| !TYPED_IN.contains(&p.devices[b.device].profile.as_str()))
            .flat_map(|b| &b.readings)
            .map(|r| {
                Timestamp::from_millisecond(r.time_ms)
                    .unwrap()
                    .to_zoned(w.tz.clone())
                    .date()
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn the_window_runs_from_days_ago_to_today() {
        let w = window("UTC");
        assert_eq!(w.start.to_string(), "2026-10-26");
        assert_eq!(w.date(30).to_string(), "2026-11-25");
    }

    #[test]
    fn the_same_seed_plans_the_same_past() {
        let w = window("America/Chicago");
        let p = patient(1);
        for persona in Persona::ALL {
            let (a, b) = (plan(7, &p, persona, &w), plan(7, &p, persona, &w));
            assert_eq!(a.active_days, b.active_days);
            assert_eq!(a.batches, b.batches);
            assert_eq!(a.entries, b.entries);
        }
        assert_eq!(personas(7, 20), personas(7, 20));
        let other = plan(8, &p, Persona::Adherent, &w);
        assert_ne!(other.batches, plan(7, &p, Persona::Adherent, &w).batches);
    }

    #[test]
    fn a_fleet_has_the_documented_mix_whatever_the_seed() {
        let count = |v: &[Persona], p| v.iter().filter(|x| **x == p).count();
        for seed in 0..50 {
            let v = personas(seed, 8);
            assert_eq!(v.len(), 8);
            let counts = Persona::ALL.map(|p| count(&v, p));
            assert_eq!(counts, [4, 2, 1, 1], "seed {seed}");
            let v = personas(seed, 100);
            assert_eq!(Persona::ALL.map(|p| count(&v, p)), [50, 20, 20, 10]);
            assert!(personas(seed, 0).is_empty());
            assert_eq!(personas(seed, 1), [Persona::Adherent]);
        }
        // Who is which depends on the seed.
        assert!((0..10).any(|s| personas(s, 8) != personas(s + 1, 8)));
    }

    #[test]
    fn adherent_patients_send_data_on_at_least_16_of_30_days() {
        for tz in ["UTC", "America/Chicago", "Asia/Tokyo"] {
            let w = window(tz);
            for i in 0..40 {
                let p = patient(i);
                let h = plan(3, &p, Persona::Adherent, &w);
                let last = w.date(29);
                let days: Vec<Date> = device_days(&h, &p, &w)
                    .into_iter()
                    .filter(|d| (w.start..=last).contains(d))
                    .collect();
                assert!(days.len() >= 16, "{tz} patient {i}: {} days", days.len());
                assert!(h.active_days.len() >= 25, "{}", h.active_days.len());
            }
        }
    }

    #[test]
    fn dropouts_stop_and_the_others_measure_as_documented() {
        let w = window("America/Chicago");
        for i in 0..40 {
            let p = patient(i);
            let h = plan(5, &p, Persona::Dropout, &w);
            let stop = *h.active_days.last().expect("measured at first");
            assert!(stop < 20, "patient {i} measured until day {stop}");
            assert!(h.batches.iter().all(|b| b.day <= stop));
            let sporadic = plan(5, &p, Persona::Sporadic, &w).active_days.len();
            assert!((2..=15).contains(&sporadic), "{sporadic}");
            let barely = plan(5, &p, Persona::Barely, &w).active_days.len();
            assert!(barely <= 1, "{barely}");
        }
    }

    #[test]
    fn readings_are_in_the_window_never_ahead_of_the_clock_and_plausible() {
        for tz in ["UTC", "America/Chicago", "Pacific/Kiritimati"] {
            let w = window(tz);
            let first = w.tz.to_timestamp(w.start.at(0, 0, 0, 0)).unwrap();
            for i in 0..10 {
                let p = patient(i);
                let h = plan(1, &p, Persona::Adherent, &w);
                assert!(h.readings() > 0);
                for b in &h.batches {
                    let profile = p.devices[b.device].profile.as_str();
                    let kind = device::kind(profile).unwrap();
                    let per_day = match profile {
                        "bp-cuff" => 2,
                        "scale" | "patient-app" => 1,
                        "glucose-meter" => 4,
                        "pulse-oximeter" | "thermometer" => 3,
                        "smartwatch" => 16,
                        _ => 24,
                    };
                    let metrics: usize = kind.groups.iter().map(|g| g.metrics.len()).sum();
                    assert!(
                        b.readings.len() <= per_day * metrics,
                        "{profile}: {}",
                        b.readings.len()
                    );
                    for r in &b.readings {
                        assert!(r.time_ms <= NOW - 60_000, "{tz}: a reading in the future");
                        assert!(
                            r.time_ms >= first.as_millisecond(),
                            "{tz}: before the start"
                        );
                        assert!(kind.groups.iter().any(|g| g.metrics.contains(&r.metric)));
                        assert!(r.value.is_finite());
                    }
                }
            }
        }
    }

    #[test]
    fn time_entries_are_in_the_window_and_a_realistic_mix() {
        let w = window("UTC");
        let mut cares = Vec::new();
        for i in 0..200 {
            let p = patient(i);
            let persona = Persona::ALL[i % 4];
            let h = plan(9, &p, persona, &w);
            assert!(!h.entries.is_empty());
            for e in &h.entries {
                assert!(e.day <= w.days, "{e:?}");
                assert!((1..=600).contains(&e.minutes));
                assert!(["review", "call", "video", "coordination"].contains(&e.activity));
                assert_eq!(e.interactive, matches!(e.activity, "call" | "video"));
            }
            match h.care {
                Care::Light if persona == Persona::Adherent || persona == Persona::Sporadic => {
                    assert!(h.minutes() < 10, "{}", h.minutes());
                }
                Care::Moderate if persona == Persona::Adherent => {
                    assert!((10..20).contains(&h.minutes()), "{}", h.minutes());
                }
                Care::Video => assert!(h.entries.iter().any(|e| e.activity == "video")),
                _ => {}
            }
            if matches!(persona, Persona::Dropout | Persona::Barely) {
                assert!(h.entries.iter().any(|e| e.interactive));
            }
            cares.push(h.care);
        }
        for c in [Care::Light, Care::Moderate, Care::Full, Care::Video] {
            let n = cares.iter().filter(|x| **x == c).count();
            assert!(n >= 10, "{c:?}: {n} of 200");
        }
    }
}
