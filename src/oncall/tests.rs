//! The moments below were worked out with Python's `zoneinfo` (an independent copy of the
//! time-zone rules), written as Unix milliseconds with their Chicago clock time beside them.

use super::*;

/// Wed 2026-12-02 19:59 CST (UTC-6).
const WED_1959: i64 = 1_796_263_140_000;
/// Wed 2026-12-02 20:00 CST.
const WED_2000: i64 = 1_796_263_200_000;
/// Thu 2026-12-03 08:00 CST.
const THU_0800: i64 = 1_796_306_400_000;

fn slot(days: &[&str], start: &str, end: &str, user: &str, level: u8) -> Slot {
    Slot {
        days: days.iter().map(|d| (*d).to_owned()).collect(),
        start: start.into(),
        end: end.into(),
        user: user.into(),
        level,
    }
}

const EVERY_DAY: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Alice days 08:00–20:00, Bob nights 20:00–08:00, Carol second level around the clock.
fn chicago() -> Rota {
    Rota {
        timezone: "America/Chicago".into(),
        weekly: vec![
            slot(&EVERY_DAY, "08:00", "20:00", "alice", 1),
            slot(&EVERY_DAY, "20:00", "08:00", "bob", 1),
            slot(&EVERY_DAY, "00:00", "00:00", "carol", 2),
        ],
        fallback: None,
    }
}

fn users(on: &OnCall, level: u8) -> Vec<(&str, Source)> {
    on.at_level(level)
        .map(|a| (a.user.as_str(), a.source))
        .collect()
}

#[test]
fn the_day_and_night_slots_hand_over_on_the_teams_clock() {
    let r = chicago();
    let before = on_call(Some(&r), &[], &[], WED_1959).unwrap();
    assert_eq!(users(&before, 1), [("alice", Source::Rota)]);
    assert_eq!(
        before.on_call[0].until.as_deref(),
        Some("2026-12-03T02:00:00Z"),
        "alice hands over at 20:00 Chicago time"
    );
    assert_eq!(users(&before, 2), [("carol", Source::Rota)]);
    assert_eq!(before.gap, None);
    let night = on_call(Some(&r), &[], &[], WED_2000).unwrap();
    assert_eq!(users(&night, 1), [("bob", Source::Rota)]);
    assert_eq!(
        night.on_call[0].until.as_deref(),
        Some("2026-12-03T14:00:00Z")
    );
    // The night that began yesterday (Wednesday) still covers Thursday 07:59.
    let late = on_call(Some(&r), &[], &[], THU_0800 - 60_000).unwrap();
    assert_eq!(users(&late, 1), [("bob", Source::Rota)]);
    let morning = on_call(Some(&r), &[], &[], THU_0800).unwrap();
    assert_eq!(users(&morning, 1), [("alice", Source::Rota)]);
}

#[test]
fn a_shift_change_at_midnight_in_the_teams_zone() {
    // Carol has Mondays, Dave Tuesdays, each a whole day from midnight Chicago time.
    let r = Rota {
        timezone: "America/Chicago".into(),
        weekly: vec![
            slot(&["mon"], "00:00", "00:00", "carol", 1),
            slot(&["tue"], "00:00", "00:00", "dave", 1),
        ],
        fallback: None,
    };
    // Mon 2026-11-30 23:59 CST, then Tue 2026-12-01 00:00 CST (06:00 UTC, already Tuesday
    // in UTC since midnight: the change follows Chicago's clock, not UTC's).
    let (mon_2359, tue_0000) = (1_796_104_740_000, 1_796_104_800_000);
    assert_eq!(
        users(&on_call(Some(&r), &[], &[], mon_2359).unwrap(), 1),
        [("carol", Source::Rota)]
    );
    assert_eq!(
        users(&on_call(Some(&r), &[], &[], tue_0000).unwrap(), 1),
        [("dave", Source::Rota)]
    );
    // 05:59 UTC on Tuesday is still Monday in Chicago.
    assert_eq!(
        users(&on_call(Some(&r), &[], &[], tue_0000 - 60_000).unwrap(), 1),
        [("carol", Source::Rota)]
    );
}

#[test]
fn a_shift_overrides_the_rota_at_its_level_while_it_lasts() {
    let r = chicago();
    let erin = Shift {
        user: "erin".into(),
        start: "2026-12-02T20:00:00-06:00".into(),
        end: "2026-12-03T02:00:00-06:00".into(),
        level: 1,
    };
    let during = on_call(Some(&r), std::slice::from_ref(&erin), &[], WED_2000).unwrap();
    assert_eq!(users(&during, 1), [("erin", Source::Shift)]);
    assert_eq!(
        users(&during, 2),
        [("carol", Source::Rota)],
        "a level-1 shift leaves level 2 as the rota has it"
    );
    assert_eq!(
        during.on_call[0].until.as_deref(),
        Some("2026-12-03T08:00:00Z")
    );
    // After the shift, Bob's night goes on.
    let after = on_call(
        Some(&r),
        std::slice::from_ref(&erin),
        &[],
        WED_2000 + 6 * 3_600_000,
    )
    .unwrap();
    assert_eq!(users(&after, 1), [("bob", Source::Rota)]);
    // A shift at level 2 does not touch level 1.
    let second = Shift { level: 2, ..erin };
    let on = on_call(Some(&r), &[second], &[], WED_2000).unwrap();
    assert_eq!(users(&on, 1), [("bob", Source::Rota)]);
    assert_eq!(users(&on, 2), [("erin", Source::Shift)]);
}

#[test]
fn the_night_the_clocks_go_back_lasts_thirteen_hours() {
    // Sat 2026-10-31 20:00 CDT (UTC-5) to Sun 2026-11-01 08:00 CST (UTC-6): summer time ends at
    // 02:00 on Sunday, so Bob's night is 13 hours long and ends at 14:00 UTC, not 13:00.
    let r = chicago();
    let sat_2000_cdt = 1_793_494_800_000;
    let sun_0730_cst = 1_793_539_800_000;
    let sun_0800_cst = 1_793_541_600_000;
    assert_eq!(sun_0800_cst - sat_2000_cdt, 13 * 3_600_000);
    assert_eq!(
        users(&on_call(Some(&r), &[], &[], sat_2000_cdt).unwrap(), 1),
        [("bob", Source::Rota)]
    );
    let early = on_call(Some(&r), &[], &[], sun_0730_cst).unwrap();
    assert_eq!(users(&early, 1), [("bob", Source::Rota)]);
    assert_eq!(
        early.on_call[0].until.as_deref(),
        Some("2026-11-01T14:00:00Z")
    );
    assert_eq!(
        users(&on_call(Some(&r), &[], &[], sun_0800_cst).unwrap(), 1),
        [("alice", Source::Rota)]
    );
}

#[test]
fn the_night_the_clocks_go_forward_lasts_eleven_hours() {
    // Sat 2026-03-07 20:00 CST to Sun 2026-03-08 08:00 CDT: 11 hours, ending at 13:00 UTC.
    let r = chicago();
    let sat_2000_cst = 1_772_935_200_000;
    let sun_0730_cdt = 1_772_973_000_000;
    let sun_0800_cdt = 1_772_974_800_000;
    assert_eq!(sun_0800_cdt - sat_2000_cst, 11 * 3_600_000);
    assert_eq!(
        users(&on_call(Some(&r), &[], &[], sun_0730_cdt).unwrap(), 1),
        [("bob", Source::Rota)]
    );
    assert_eq!(
        users(&on_call(Some(&r), &[], &[], sun_0800_cdt).unwrap(), 1),
        [("alice", Source::Rota)]
    );
}

#[test]
fn a_slot_starting_in_the_skipped_hour_starts_after_it() {
    // 02:30 does not exist in Chicago on 2026-03-08: the slot starts at 03:30 CDT.
    let r = Rota {
        timezone: "America/Chicago".into(),
        weekly: vec![slot(&["sun"], "02:30", "04:00", "frank", 1)],
        fallback: Some("gail".into()),
    };
    let (at_0315_cdt, at_0330_cdt) = (1_772_957_700_000, 1_772_958_600_000);
    assert_eq!(
        users(&on_call(Some(&r), &[], &[], at_0315_cdt).unwrap(), 1),
        [("gail", Source::Fallback)]
    );
    assert_eq!(
        users(&on_call(Some(&r), &[], &[], at_0330_cdt).unwrap(), 1),
        [("frank", Source::Rota)]
    );
}

#[test]
fn nobody_on_call_reaches_the_fallback_and_says_so() {
    let mut r = chicago();
    r.weekly.remove(1); // no night slot
    let team = vec!["alice".to_owned(), "yann".to_owned()];
    let night = on_call(Some(&r), &[], &team, WED_2000).unwrap();
    assert_eq!(
        users(&night, 1),
        [("alice", Source::Fallback), ("yann", Source::Fallback)],
        "without a named fallback, every clinician of the team"
    );
    assert!(
        night.gap.as_deref().unwrap().contains("nobody is on call"),
        "{:?}",
        night.gap
    );
    assert_eq!(users(&night, 2), [("carol", Source::Rota)]);
    r.fallback = Some("zoe".into());
    let named = on_call(Some(&r), &[], &team, WED_2000).unwrap();
    assert_eq!(users(&named, 1), [("zoe", Source::Fallback)]);
    assert!(named.gap.unwrap().contains("zoe"));
    let empty = on_call(None, &[], &[], WED_2000).unwrap();
    assert!(empty.on_call.is_empty());
    assert!(empty.gap.unwrap().contains("no fallback"));
    // During the day there is no gap.
    assert_eq!(on_call(Some(&r), &[], &team, WED_1959).unwrap().gap, None);
}

#[test]
fn bad_rotas_and_shifts_are_refused_with_reasons() {
    let mut bad = chicago();
    bad.timezone = "Mars/Olympus".into();
    assert!(bad.check().unwrap_err().0.contains("IANA"));
    for (s, why) in [
        (slot(&["mon", "funday"], "08:00", "20:00", "a", 1), "funday"),
        (slot(&[], "08:00", "20:00", "a", 1), "at least one"),
        (slot(&["mon"], "8:00", "20:00", "a", 1), "like 08:00"),
        (slot(&["mon"], "08:00", "24:30", "a", 1), "end \"24:30\""),
        (
            slot(&["mon"], "08:00", "20:00", "a", 0),
            "level must be 1 to 5",
        ),
        (slot(&["mon"], "08:00", "20:00", " ", 1), "user"),
    ] {
        let r = Rota {
            weekly: vec![slot(&["tue"], "08:00", "20:00", "ok", 1), s],
            ..chicago()
        };
        let e = r.check().unwrap_err().0;
        assert!(e.starts_with("slot 2: ") && e.contains(why), "{e}");
    }
    let shift = |start: &str, end: &str| Shift {
        user: "erin".into(),
        start: start.into(),
        end: end.into(),
        level: 1,
    };
    for (s, why) in [
        (
            shift("2026-12-02T20:00:00Z", "2026-12-02T20:00:00Z"),
            "after start",
        ),
        (shift("yesterday", "2026-12-02T20:00:00Z"), "RFC 3339"),
        (
            shift("2026-12-01T00:00:00Z", "2026-12-16T00:00:00Z"),
            "14 days",
        ),
    ] {
        let e = check_shifts(&[s]).unwrap_err().0;
        assert!(e.starts_with("shift 1: ") && e.contains(why), "{e}");
    }
    assert_eq!(chicago().users(), ["alice", "bob", "carol"]);
}
