//! What each device profile measures, when, and how it behaves: streams (1 Hz heart rate from
//! a smartwatch, glucose every 5 minutes from a CGM) and spot checks a few times a day (cuff,
//! scale, thermometer, oximeter, meter), battery drain, and drop-outs. Deterministic for a seed.

use crate::payload::Encoding;
use crate::rng::{Rng, hash};

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

/// When a group of metrics is measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// A stream: every `period_ms`.
    Every(i64),
    /// Spot checks at these hours of the (UTC) day, each within ±20 minutes.
    Daily(&'static [f64]),
}

/// Metrics measured together and sent in one payload, and how.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Group {
    pub metrics: &'static [&'static str],
    pub schedule: Schedule,
    /// The encodings this device uses for the group; each device picks one (by its seed).
    pub encodings: &'static [Encoding],
}

/// A device profile as the simulator plays it (profile ids are the contract's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kind {
    pub profile: &'static str,
    pub groups: &'static [Group],
    /// Battery drain in percent per simulated day.
    pub drain_per_day: f64,
    /// Streams only: the chance per simulated hour of a 5–20 minute drop-out.
    pub dropout_per_hour: f64,
}

use Encoding::{Gatt, Senml, VigilJson};

pub const KINDS: [Kind; 8] = [
    Kind {
        profile: "smartwatch",
        groups: &[
            Group {
                metrics: &["heart_rate"],
                schedule: Schedule::Every(1000),
                encodings: &[Senml],
            },
            Group {
                metrics: &["spo2", "respiratory_rate"],
                schedule: Schedule::Every(5 * MIN),
                encodings: &[Senml],
            },
        ],
        drain_per_day: 45.0,
        dropout_per_hour: 0.03,
    },
    Kind {
        profile: "pulse-oximeter",
        groups: &[Group {
            metrics: &["spo2", "heart_rate"],
            schedule: Schedule::Daily(&[8.0, 14.0, 20.0]),
            encodings: &[Gatt("2a5e"), VigilJson],
        }],
        drain_per_day: 1.0,
        dropout_per_hour: 0.0,
    },
    Kind {
        profile: "bp-cuff",
        groups: &[Group {
            metrics: &["bp_systolic", "bp_diastolic", "bp_mean", "heart_rate"],
            schedule: Schedule::Daily(&[7.5, 19.5]),
            encodings: &[Gatt("2a35"), VigilJson],
        }],
        drain_per_day: 1.0,
        dropout_per_hour: 0.0,
    },
    Kind {
        profile: "thermometer",
        groups: &[Group {
            metrics: &["body_temperature"],
            schedule: Schedule::Daily(&[8.0, 14.0, 20.0]),
            encodings: &[Gatt("2a1c"), VigilJson],
        }],
        drain_per_day: 0.5,
        dropout_per_hour: 0.0,
    },
    Kind {
        profile: "scale",
        groups: &[Group {
            metrics: &["body_weight"],
            schedule: Schedule::Daily(&[7.0]),
            encodings: &[Gatt("2a9d"), VigilJson],
        }],
        drain_per_day: 0.3,
        dropout_per_hour: 0.0,
    },
    Kind {
        profile: "glucose-meter",
        groups: &[Group {
            metrics: &["glucose"],
            schedule: Schedule::Daily(&[7.25, 12.25, 18.25, 22.0]),
            encodings: &[Gatt("2a18"), VigilJson],
        }],
        drain_per_day: 0.5,
        dropout_per_hour: 0.0,
    },
    Kind {
        profile: "cgm",
        groups: &[Group {
            metrics: &["glucose"],
            schedule: Schedule::Every(5 * MIN),
            encodings: &[Senml],
        }],
        drain_per_day: 7.0,
        dropout_per_hour: 0.02,
    },
    Kind {
        profile: "patient-app",
        groups: &[Group {
            metrics: &["consciousness", "on_oxygen"],
            schedule: Schedule::Daily(&[9.0]),
            encodings: &[VigilJson],
        }],
        drain_per_day: 0.0,
        dropout_per_hour: 0.0,
    },
];

pub fn kind(profile: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.profile == profile)
}

/// The devices a patient has: everyone a smartwatch, oximeter, cuff, thermometer, scale and
/// the patient app; about one in three also a CGM or a glucose meter (always a CGM when the
/// story is about glucose).
pub fn devices_for(seed: u64, needs_cgm: bool) -> Vec<&'static str> {
    let mut out = vec![
        "smartwatch",
        "pulse-oximeter",
        "bp-cuff",
        "thermometer",
        "scale",
        "patient-app",
    ];
    let mut rng = Rng::derive(seed, hash("devices"));
    if needs_cgm {
        out.push("cgm");
    } else if rng.chance(0.33) {
        out.push(if rng.chance(0.5) {
            "cgm"
        } else {
            "glucose-meter"
        });
    }
    out
}

/// One measurement due: which group, at what simulated time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Due {
    pub time_ms: i64,
    pub group: usize,
}

impl Kind {
    /// The encoding a device with this seed uses for group `g`.
    pub fn encoding(&self, seed: u64, g: usize) -> Encoding {
        let e = self.groups[g].encodings;
        e[(Rng::derive(seed, hash("encoding") + g as u64).next_u64() % e.len() as u64) as usize]
    }

    /// Whether a stream is in a drop-out at `t` (the device is out of range or off the wrist).
    pub fn dropped_out(&self, seed: u64, t: i64) -> bool {
        if self.dropout_per_hour <= 0.0 {
            return false;
        }
        let hour = t.div_euclid(HOUR);
        let mut rng = Rng::derive(seed ^ hash("dropout"), hour as u64);
        if !rng.chance(self.dropout_per_hour) {
            return false;
        }
        let start = hour * HOUR + (rng.f64() * (HOUR - 20 * MIN) as f64) as i64;
        let len = (rng.range(5.0, 20.0) * MIN as f64) as i64;
        (start..start + len).contains(&t)
    }

    /// Measurements due in `[from, to)`, in time order.
    pub fn due(&self, seed: u64, from: i64, to: i64) -> Vec<Due> {
        let mut out = Vec::new();
        for (g, group) in self.groups.iter().enumerate() {
            match group.schedule {
                Schedule::Every(period) => {
                    // Each device has its own phase within the period.
                    let phase = (Rng::derive(seed, hash("phase") + g as u64).next_u64()
                        % period as u64) as i64;
                    let first = from + (phase - from).rem_euclid(period);
                    let mut t = first;
                    while t < to {
                        if !self.dropped_out(seed, t) {
                            out.push(Due {
                                time_ms: t,
                                group: g,
                            });
                        }
                        t += period;
                    }
                }
                Schedule::Daily(hours) => {
                    let mut day = from.div_euclid(DAY);
                    while day * DAY < to {
                        for (i, h) in hours.iter().enumerate() {
                            let mut rng =
                                Rng::derive(seed ^ hash("spot"), (day as u64) << 8 | i as u64);
                            let jitter = (rng.range(-20.0, 20.0) * MIN as f64) as i64;
                            let t = day * DAY + (h * HOUR as f64) as i64 + jitter;
                            if (from..to).contains(&t) {
                                out.push(Due {
                                    time_ms: t,
                                    group: g,
                                });
                            }
                        }
                        day += 1;
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Battery percentage at `t`, starting from a seeded level at `start` (recharged to 100 %
    /// whenever it would fall below 15 %, as people do — unless the story says otherwise).
    pub fn battery(&self, seed: u64, start: i64, t: i64) -> u8 {
        let initial = Rng::derive(seed, hash("battery")).range(60.0, 100.0);
        let days = (t - start).max(0) as f64 / DAY as f64;
        let used = self.drain_per_day * days;
        let mut level = initial - used;
        while level < 15.0 {
            level += 85.0;
        }
        level.round().clamp(0.0, 100.0) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_564_800_000; // a midnight UTC

    #[test]
    fn every_contract_profile_is_played() {
        for p in [
            "smartwatch",
            "pulse-oximeter",
            "bp-cuff",
            "thermometer",
            "scale",
            "glucose-meter",
            "cgm",
            "patient-app",
        ] {
            assert!(kind(p).is_some(), "{p}");
        }
    }

    #[test]
    fn streams_are_regular_and_spot_checks_few_a_day() {
        let watch = kind("smartwatch").unwrap();
        let hr = watch
            .due(1, T0, T0 + HOUR)
            .iter()
            .filter(|d| d.group == 0)
            .count();
        // 3,600 a second, minus a possible drop-out of at most 20 minutes.
        assert!((2400..=3600).contains(&hr), "{hr}");
        let cuff = kind("bp-cuff").unwrap();
        assert_eq!(cuff.due(1, T0, T0 + 3 * DAY).len(), 6);
        let d = cuff.due(1, T0, T0 + DAY);
        assert!((d[0].time_ms - (T0 + 7 * HOUR + 30 * MIN)).abs() <= 20 * MIN);
        // Splitting a window changes nothing.
        let mut split = cuff.due(1, T0, T0 + DAY + 3 * HOUR);
        split.extend(cuff.due(1, T0 + DAY + 3 * HOUR, T0 + 3 * DAY));
        assert_eq!(split, cuff.due(1, T0, T0 + 3 * DAY));
    }

    #[test]
    fn drop_outs_happen_but_rarely() {
        let watch = kind("smartwatch").unwrap();
        let out = (0..10_000)
            .filter(|i| watch.dropped_out(9, T0 + i * MIN))
            .count();
        // About 3 % of hours, 12.5 minutes on average: ≈ 0.6 % of the time.
        assert!((10..=200).contains(&out), "{out}");
    }

    #[test]
    fn batteries_drain_and_get_recharged() {
        let watch = kind("smartwatch").unwrap();
        let a = watch.battery(3, T0, T0);
        let b = watch.battery(3, T0, T0 + DAY / 2);
        assert!(b < a || a < 40, "{a} {b}");
        for d in 0..20 {
            assert!(watch.battery(3, T0, T0 + d * DAY / 3) >= 15);
        }
    }
}
