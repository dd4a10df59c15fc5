//! The billing rules at every edge (docs/billing.md): days of data, minutes, interactive
//! communication, periods across a month's end, the set-up code once per episode, days in the
//! patient's zone.

use std::collections::BTreeSet;

use jiff::civil::{Date, date};

use super::statement::{CodeLine, Evidence, Inputs, Month, SetupEvent, Statement};
use super::{Rules, days_needed, device_days, statement};
use crate::domain::zone::Zone;
use crate::registry::enrollment::{Consent, Enrollment};
use crate::registry::time_log::TimeEntry;

fn episode(start: &str, end: Option<&str>) -> Enrollment {
    Enrollment {
        patient_id: "p1".into(),
        program: "hypertension".into(),
        start: start.into(),
        end: end.map(str::to_owned),
        practitioner: Some("Dr Okafor".into()),
        diagnoses: vec!["I10".into()],
        consent: Consent {
            method: "verbal".into(),
            by: "nurse".into(),
            at: "2026-10-01T09:00:00Z".into(),
        },
        updated_by: "nurse".into(),
        updated_at: "2026-10-01T09:00:00Z".into(),
    }
}

fn entry(id: &str, d: &str, minutes: u32, interactive: bool) -> TimeEntry {
    TimeEntry {
        id: id.into(),
        patient_id: "p1".into(),
        date: d.into(),
        minutes,
        activity: if interactive { "call" } else { "review" }.into(),
        interactive,
        note: None,
        user: "nurse".into(),
        created_at: "2026-11-30T12:00:00Z".into(),
        updated_by: None,
        updated_at: None,
    }
}

/// `n` consecutive days from `from`.
fn days_from(from: Date, n: i64) -> BTreeSet<Date> {
    (0..n)
        .map(|i| from.checked_add(jiff::Span::new().days(i)).unwrap())
        .collect()
}

struct Case {
    episodes: Vec<Enrollment>,
    days: BTreeSet<Date>,
    setups: Vec<SetupEvent>,
    entries: Vec<TimeEntry>,
    month: &'static str,
    today: Date,
}

impl Case {
    /// Enrolled 2026-11-01 (so one period, November 1 to 30), seen on 2026-12-02.
    fn november() -> Case {
        Case {
            episodes: vec![episode("2026-11-01", None)],
            days: BTreeSet::new(),
            setups: Vec::new(),
            entries: Vec::new(),
            month: "2026-11",
            today: date(2026, 12, 2),
        }
    }

    fn run(&self) -> Statement {
        statement(
            &Rules::built_in(),
            &Inputs {
                patient_id: "p1",
                month: Month::parse(self.month).unwrap(),
                today: self.today,
                timezone: "America/Chicago",
                episodes: &self.episodes,
                days: &self.days,
                setups: &self.setups,
                entries: &self.entries,
            },
        )
    }
}

fn codes(s: &Statement) -> Vec<(&str, u32)> {
    s.codes.iter().map(|c| (c.code.as_str(), c.units)).collect()
}

fn code<'a>(s: &'a Statement, code: &str) -> &'a CodeLine {
    s.codes.iter().find(|c| c.code == code).unwrap()
}

#[test]
fn device_days_choose_99445_or_99454_at_each_edge_and_never_both() {
    for (n, expect) in [
        (1, vec![]),
        (2, vec![("99445", 1)]),
        (15, vec![("99445", 1)]),
        (16, vec![("99454", 1)]),
        (30, vec![("99454", 1)]),
    ] {
        let mut c = Case::november();
        c.days = days_from(date(2026, 11, 1), n);
        let s = c.run();
        assert_eq!(codes(&s), expect, "{n} days");
        assert_eq!(s.periods.len(), 1);
        assert_eq!(s.periods[0].device_days, u16::try_from(n).unwrap());
        assert!(s.periods[0].complete && s.periods[0].billed_this_month);
        if n == 1 {
            assert!(s.notes[0].contains("1 day of device data"), "{:?}", s.notes);
        } else {
            let line = &s.codes[0];
            assert_eq!(line.date, "2026-11-30");
            assert!(line.is_final);
            let listed: Vec<&Evidence> = line.evidence.iter().collect();
            assert_eq!(listed.len(), n as usize, "every day listed as evidence");
            assert_eq!(
                listed[0],
                &Evidence::DeviceDay {
                    date: "2026-11-01".into()
                }
            );
        }
    }
}

#[test]
fn minutes_choose_99470_or_99457_and_whole_99458s() {
    for (minutes, expect) in [
        (9, vec![]),
        (10, vec![("99470", 1)]),
        (19, vec![("99470", 1)]),
        (20, vec![("99457", 1)]),
        (39, vec![("99457", 1)]),
        (40, vec![("99457", 1), ("99458", 1)]),
        (60, vec![("99457", 1), ("99458", 2)]),
    ] {
        let mut c = Case::november();
        // One interactive call of 5 minutes and the rest in data review, on two days.
        c.entries = vec![
            entry("te_call", "2026-11-03", 5, true),
            entry("te_review", "2026-11-20", minutes - 5, false),
        ];
        let s = c.run();
        assert_eq!(s.minutes, minutes);
        assert!(s.interactive);
        assert_eq!(codes(&s), expect, "{minutes} minutes");
        for line in &s.codes {
            assert_eq!(line.evidence.len(), 2, "both entries are the evidence");
            assert_eq!(line.date, "2026-11-30");
            assert_eq!(line.practitioner.as_deref(), Some("Dr Okafor"));
        }
        if minutes == 9 {
            assert!(
                s.notes.iter().any(|n| n.contains("9 minutes")),
                "{:?}",
                s.notes
            );
        }
    }
}

#[test]
fn time_without_an_interactive_communication_supports_no_management_code() {
    let mut c = Case::november();
    c.entries = vec![
        entry("te_1", "2026-11-03", 30, false),
        entry("te_2", "2026-11-04", 30, false),
    ];
    let s = c.run();
    assert_eq!(s.minutes, 60);
    assert!(!s.interactive);
    assert!(codes(&s).is_empty());
    assert!(
        s.notes
            .iter()
            .any(|n| n.contains("no real-time interactive communication")),
        "{:?}",
        s.notes
    );
}

#[test]
fn time_outside_the_enrollment_is_not_counted() {
    let mut c = Case::november();
    c.episodes = vec![episode("2026-11-10", None)];
    c.entries = vec![
        entry("te_before", "2026-11-05", 15, true),
        entry("te_after", "2026-11-12", 12, true),
    ];
    let s = c.run();
    assert_eq!(s.minutes, 12);
    assert_eq!(codes(&s), vec![("99470", 1)]);
    assert!(
        s.notes
            .iter()
            .any(|n| n.contains("15 minutes logged on days outside"))
    );
}

#[test]
fn a_period_across_a_months_end_is_billed_in_the_month_it_ends_with_both_months_days() {
    // Enrolled 2026-10-20: period 1 is 2026-10-20 to 2026-11-18, period 2 2026-11-19 to
    // 2026-12-18.
    let mut c = Case::november();
    c.episodes = vec![episode("2026-10-20", None)];
    // 10 days in October and 8 in November for period 1; 9 in late November and 8 in
    // December for period 2.
    c.days = days_from(date(2026, 10, 22), 10)
        .into_iter()
        .chain(days_from(date(2026, 11, 1), 8))
        .chain(days_from(date(2026, 11, 20), 9))
        .chain(days_from(date(2026, 12, 1), 8))
        .collect();
    c.today = date(2026, 12, 20);
    let nov = c.run();
    let spans: Vec<(&str, &str, u16, bool)> = nov
        .periods
        .iter()
        .map(|p| {
            (
                p.start.as_str(),
                p.end.as_str(),
                p.device_days,
                p.billed_this_month,
            )
        })
        .collect();
    assert_eq!(
        spans,
        vec![
            ("2026-10-20", "2026-11-18", 18, true),
            ("2026-11-19", "2026-12-18", 17, false),
        ]
    );
    assert_eq!(codes(&nov), vec![("99454", 1)]);
    assert_eq!(code(&nov, "99454").date, "2026-11-18");

    // December: period 2 is billed there, with November's days and December's; seen before it
    // is over, it is not final.
    c.month = "2026-12";
    c.today = date(2026, 12, 10);
    let dec = c.run();
    assert_eq!(dec.periods.len(), 2, "{:?}", dec.periods);
    assert_eq!(dec.periods[0].start, "2026-11-19");
    assert_eq!(dec.periods[0].device_days, 17);
    assert!(!dec.periods[0].complete);
    let line = code(&dec, "99454");
    assert!(!line.is_final);
    assert_eq!(line.date, "2026-12-18");
    assert_eq!(dec.periods[1].start, "2026-12-19");
    assert!(!dec.periods[1].billed_this_month);
}

#[test]
fn the_setup_code_goes_once_per_episode_with_the_first_period_reaching_two_days() {
    let mut c = Case::november();
    c.episodes = vec![episode("2026-10-02", None)];
    // Period 1 (2026-10-02 to 10-31) has one day; period 2 (11-01 to 11-30) has five.
    c.days = days_from(date(2026, 10, 5), 1)
        .into_iter()
        .chain(days_from(date(2026, 11, 3), 5))
        .collect();
    c.setups = vec![SetupEvent {
        id: "su_1".into(),
        device_id: "cuff-1".into(),
        date: date(2026, 10, 2),
        by: "nurse".into(),
    }];
    let s = c.run();
    assert_eq!(codes(&s), vec![("99445", 1), ("99453", 1)]);
    let setup = code(&s, "99453");
    assert!(
        matches!(&setup.evidence[0], Evidence::Setup { device_id, .. } if device_id == "cuff-1")
    );

    // The month after: the code was carried by November's period, not again.
    c.month = "2026-12";
    c.days.extend(days_from(date(2026, 12, 1), 20));
    c.today = date(2027, 1, 5);
    let dec = c.run();
    assert_eq!(codes(&dec), vec![("99454", 1)]);

    // A new episode is a new set-up.
    c.episodes = vec![
        episode("2026-10-02", Some("2026-11-30")),
        episode("2026-12-01", None),
    ];
    c.setups.push(SetupEvent {
        id: "su_2".into(),
        device_id: "scale-1".into(),
        date: date(2026, 12, 1),
        by: "nurse".into(),
    });
    let dec = c.run();
    assert_eq!(codes(&dec), vec![("99454", 1), ("99453", 1)]);
}

#[test]
fn a_period_reaching_two_days_without_a_recorded_setup_says_so() {
    let mut c = Case::november();
    c.days = days_from(date(2026, 11, 1), 3);
    let s = c.run();
    assert_eq!(codes(&s), vec![("99445", 1)]);
    assert!(
        s.notes
            .iter()
            .any(|n| n.contains("no device set-up recorded")),
        "{:?}",
        s.notes
    );
}

#[test]
fn days_are_the_patients_two_readings_on_a_day_count_once_and_typed_in_readings_never() {
    let chicago = Zone::parse("America/Chicago").unwrap();
    let ms = |y, m, d, h, min| {
        jiff::civil::datetime(y, m, d, h, min, 0, 0)
            .to_zoned(jiff::tz::TimeZone::get("America/Chicago").unwrap())
            .unwrap()
            .timestamp()
            .as_millisecond()
    };
    let q = |ms: i64| ms / 900_000 * 900_000;
    let pairs = vec![
        // 23:30 local on the 3rd is the 4th in UTC: it is the 3rd's.
        ("cuff".to_owned(), q(ms(2026, 11, 3, 23, 30))),
        // Two readings on the 5th.
        ("cuff".to_owned(), q(ms(2026, 11, 5, 8, 0))),
        ("cuff".to_owned(), q(ms(2026, 11, 5, 20, 0))),
        // Typed into the patient app on the 6th.
        ("app".to_owned(), q(ms(2026, 11, 6, 9, 0))),
    ];
    let days = device_days(&pairs, |d| d != "app", &chicago);
    assert_eq!(
        days,
        [date(2026, 11, 3), date(2026, 11, 5)].into_iter().collect()
    );
    let utc = device_days(&pairs, |d| d != "app", &Zone::utc());
    assert!(utc.contains(&date(2026, 11, 4)) && !utc.contains(&date(2026, 11, 3)));
}

#[test]
fn the_days_needed_reach_back_to_the_earliest_setup_and_on_to_the_last_periods_end() {
    let rules = Rules::built_in();
    let eps = vec![episode("2026-09-01", None)];
    let month = Month::parse("2026-11").unwrap();
    // Periods: 09-01..09-30, 10-01..10-30, 10-31..11-29, 11-30..12-29.
    assert_eq!(
        days_needed(&rules, month, &eps, &[]),
        Some((date(2026, 10, 31), date(2026, 12, 29)))
    );
    let setups = [SetupEvent {
        id: "su".into(),
        device_id: "d".into(),
        date: date(2026, 9, 15),
        by: "n".into(),
    }];
    assert_eq!(
        days_needed(&rules, month, &eps, &setups),
        Some((date(2026, 9, 1), date(2026, 12, 29)))
    );
    assert_eq!(
        days_needed(&rules, month, &[episode("2027-01-01", None)], &[]),
        None
    );
}

#[test]
fn months_parse_strictly() {
    assert_eq!(Month::parse("2026-11").unwrap().to_string(), "2026-11");
    assert_eq!(Month::parse("2026-02").unwrap().last(), date(2026, 2, 28));
    for bad in [
        "2026-13",
        "2026-1",
        "26-11",
        "2026/11",
        "",
        "1999-12",
        "2026-11-01",
    ] {
        assert!(Month::parse(bad).is_err(), "{bad}");
    }
}
