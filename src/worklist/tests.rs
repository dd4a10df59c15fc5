//! The worklist's order and its words.

use super::*;

const NOW: i64 = 1_796_000_000_000;
const HOUR: i64 = 3_600_000;

fn patient(id: &str) -> Facts {
    Facts {
        patient_id: id.into(),
        name: format!("Patient {id}"),
        care_team: Some("north".into()),
        program: "hypertension".into(),
        alerts: Vec::new(),
        silent: Vec::new(),
        adherence: Some(Adherence {
            period_start: "2026-11-01".into(),
            period_end: "2026-11-30".into(),
            days: 12,
            days_left: 14,
        }),
        minutes: 25,
        interactive_this_month: true,
        last_interactive: Some("2026-11-10".into()),
    }
}

fn alert(id: &str, severity: Severity, hours_ago: i64) -> OpenAlert {
    OpenAlert {
        id: id.into(),
        severity,
        opened_ms: NOW - hours_ago * HOUR,
        message: "SpO2 below 90 %".into(),
    }
}

fn order(rows: &[Row]) -> Vec<&str> {
    rows.iter().map(|r| r.patient_id.as_str()).collect()
}

#[test]
fn a_high_alert_ranks_above_silence_above_risk_above_a_stable_patient() {
    let stable = patient("stable");
    let mut risk = patient("risk");
    risk.adherence = Some(Adherence {
        period_start: "2026-11-01".into(),
        period_end: "2026-11-30".into(),
        days: 10,
        days_left: 8,
    });
    let mut silent = patient("silent");
    silent.silent = vec![Silence {
        device_id: "cuff-9".into(),
        last_ms: NOW - 50 * HOUR,
        interval_s: 43_200,
        never: false,
    }];
    let mut high = patient("high");
    high.alerts = vec![alert("al-1", Severity::High, 2)];
    let rows = rank(&[stable, risk, silent, high], NOW, 20, 30);
    assert_eq!(order(&rows), ["high", "silent", "risk", "stable"]);
    assert_eq!(
        rows.iter().map(|r| r.rank).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(rows[0].tier, Tier::HighAlert);
    assert_eq!(rows[0].top_alert.as_deref(), Some("al-1"));
    assert_eq!(
        rows[0].reasons[0],
        "Unacknowledged high alert for 2 h: SpO2 below 90 %"
    );
    assert_eq!(
        rows[1].reasons[0],
        "No reading from cuff-9 for 2 days (expected every 12 h)"
    );
    assert_eq!(
        rows[2].reasons[0],
        "10 of 16 days this period; needs 6 more in the 8 days left (ends 2026-11-30)"
    );
    assert_eq!(rows[3].reasons[0], "Stable: nothing needs action");
    assert!(rows[3].reasons.iter().any(|r| r.contains("12 of 16 days")));
}

#[test]
fn alerts_rank_by_severity_then_age() {
    let mut medium_old = patient("medium-old");
    medium_old.alerts = vec![alert("m", Severity::Medium, 30)];
    let mut high_new = patient("high-new");
    high_new.alerts = vec![
        alert("h1", Severity::High, 1),
        alert("l", Severity::Low, 40),
    ];
    let mut high_old = patient("high-old");
    high_old.alerts = vec![alert("h2", Severity::High, 5)];
    let mut low = patient("low");
    low.alerts = vec![alert("l2", Severity::Low, 100)];
    let rows = rank(&[low, medium_old, high_new, high_old], NOW, 5, 30);
    assert_eq!(order(&rows), ["high-old", "high-new", "medium-old", "low"]);
    assert!(
        rows[1].reasons[0].ends_with("(and 1 more)"),
        "{:?}",
        rows[1].reasons
    );
    assert_eq!(
        rows[1].top_alert.as_deref(),
        Some("h1"),
        "the most severe, not the oldest"
    );
}

#[test]
fn the_most_overdue_silence_and_the_least_slack_come_first() {
    let silent = |id: &str, hours: i64, interval_s: u64| {
        let mut p = patient(id);
        p.silent = vec![Silence {
            device_id: format!("{id}-dev"),
            last_ms: NOW - hours * HOUR,
            interval_s,
            never: id == "watch",
        }];
        p
    };
    // 30 h quiet on a 12 h interval (2.5×) is less overdue than 4 h on a 1 h one (4×).
    let rows = rank(
        &[silent("cuff", 30, 43_200), silent("watch", 4, 3_600)],
        NOW,
        5,
        30,
    );
    assert_eq!(order(&rows), ["watch", "cuff"]);
    assert_eq!(
        rows[0].reasons[0],
        "No reading from watch-dev since it was issued 4 h ago (expected every 1 h)"
    );

    let at = |id: &str, days: u16, days_left: i64| {
        let mut p = patient(id);
        p.adherence = Some(Adherence {
            period_start: "2026-11-01".into(),
            period_end: "2026-11-30".into(),
            days,
            days_left,
        });
        p
    };
    let rows = rank(
        &[
            at("lost", 2, 5),
            at("spare3", 10, 9),
            at("spare0", 10, 6),
            at("fine", 16, 3),
        ],
        NOW,
        25,
        30,
    );
    assert_eq!(order(&rows), ["spare0", "spare3", "lost", "fine"]);
    assert_eq!(rows[2].reachable, Some(false));
    assert!(rows[2].reasons[0].contains("can no longer be reached"));
    assert_eq!(rows[3].tier, Tier::Stable);
    assert!(rows[3].reasons.iter().any(|r| r.contains("16 reached")));
}

#[test]
fn no_contact_matters_once_half_the_month_is_gone() {
    let mut quiet = patient("quiet");
    quiet.interactive_this_month = false;
    quiet.minutes = 0;
    let early = rank(&[patient("a-fine"), quiet.clone()], NOW, 10, 30);
    assert_eq!(early[1].patient_id, "quiet", "early in the month: by name");
    assert_eq!(early[1].tier, Tier::Stable);
    let late = rank(&[patient("a-fine"), quiet], NOW, 16, 30);
    assert_eq!(order(&late), ["quiet", "a-fine"]);
    assert_eq!(late[0].tier, Tier::NoContact);
    assert_eq!(
        late[0].reasons[0],
        "No minutes logged this month; no interactive contact this month (last on 2026-11-10)",
        "the reason that placed it comes first"
    );
}

#[test]
fn many_silent_devices_are_one_reason() {
    let mut p = patient("quiet");
    p.silent = ["cuff", "scale", "watch"]
        .iter()
        .enumerate()
        .map(|(i, d)| Silence {
            device_id: (*d).into(),
            last_ms: NOW - (50 + 24 * i as i64) * HOUR,
            interval_s: 43_200,
            never: false,
        })
        .collect();
    let rows = rank(&[p], NOW, 5, 30);
    assert_eq!(
        rows[0].reasons[0],
        "No reading from 3 devices for 2 days to 4 days (cuff, scale, watch)"
    );
    assert_eq!(
        rows[0]
            .reasons
            .iter()
            .filter(|r| r.starts_with("No reading"))
            .count(),
        1
    );
}

#[test]
fn minutes_read_against_10_and_20() {
    assert_eq!(minutes_words(0), "No minutes logged this month");
    assert_eq!(minutes_words(4), "4 min this month, 6 short of 10");
    assert_eq!(minutes_words(12), "12 min this month, 8 short of 20");
    assert_eq!(minutes_words(20), "20 min this month, 20 reached");
}

#[test]
fn spans_read_as_words() {
    assert_eq!(span(45 * 60_000), "45 min");
    assert_eq!(span(60 * 60_000), "1 h");
    assert_eq!(span(5 * HOUR), "5 h");
    assert_eq!(span(72 * HOUR), "3 days");
    assert_eq!(span(-1), "under a minute");
    assert_eq!(span(59_999), "under a minute");
}
