//! Which escalation steps to take for an alert now, and whom each notifies by which channel
//! (docs/oncall.md). Pure: the alert, its team's cover and policy, the team's clinicians, the
//! users' contact details, the configured channels and the moment go in; the steps to take
//! come out, for the scheduler to write (each step once, `Registry::take_step`).
//!
//! - Whom: the people on call at the step's level at the moment the step is taken (a shift
//!   change between the alert and its second step reaches whoever is on call then). Nobody at
//!   that level reaches the fallback (the rota's, else the team's clinicians), and the step
//!   says so.
//! - How: each configured channel the user has an address for (email, SMS); a user with none is
//!   recorded as not reachable, never silently skipped.
//! - When: at once, except that a medium or low alert waits out the user's quiet hours; a high
//!   alert never waits.
//! - Never for an alert opened more than a day ago: one that old is already on the dashboard,
//!   and a Vigil upgraded or restarted after a long stop must not page people about last
//!   week.

use std::collections::HashMap;

use crate::alerts::rules::Severity;
use crate::domain::zone::Zone;
use crate::oncall;
use crate::registry::contacts::Contact;
use crate::registry::cover::Cover;
use crate::registry::notifications::{NewNotification, TakenStep};
use crate::registry::{RegistryError, notifications::CHANNELS};

/// Alerts older than this take no steps.
pub const MAX_ALERT_AGE_MS: i64 = 86_400_000;

/// An alert as the planner needs it.
#[derive(Debug, Clone)]
pub struct AlertFacts<'a> {
    pub id: &'a str,
    pub patient_id: &'a str,
    pub severity: Severity,
    pub opened_ms: i64,
    /// Unacknowledged: only those escalate.
    pub open: bool,
}

/// What the planner knows about the team and the people.
pub struct Context<'a> {
    pub cover: &'a Cover,
    pub clinicians: &'a [String],
    pub contacts: &'a HashMap<String, Contact>,
    /// Whether email and SMS are configured.
    pub email: bool,
    pub sms: bool,
    pub clinic_zone: &'a Zone,
}

/// The steps of `alert` to take at `now_ms`, given the steps already `taken`.
pub fn steps(
    alert: &AlertFacts<'_>,
    taken: &[u32],
    cx: &Context<'_>,
    now_ms: i64,
) -> Result<Vec<TakenStep>, RegistryError> {
    if now_ms - alert.opened_ms > MAX_ALERT_AGE_MS {
        return Ok(Vec::new());
    }
    let policy = cx.cover.policy_in_force();
    let due = policy.due(alert.severity, alert.opened_ms, !alert.open, taken, now_ms);
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let on = oncall::on_call(
        cx.cover.rota.as_ref(),
        &cx.cover.shifts,
        cx.clinicians,
        now_ms,
    )
    .map_err(|e| RegistryError::Invalid(e.to_string()))?;
    let mut out = Vec::new();
    for (index, due_ms) in due {
        let level = policy.steps(alert.severity)[index as usize].level;
        let rostered: Vec<String> = on.at_level(level).map(|a| a.user.clone()).collect();
        let (mut users, gap) = if level == 1 {
            // Level 1 is never empty: `on_call` fills it with the fallback, and says so.
            (rostered, on.gap.clone())
        } else if rostered.is_empty() {
            let fallback = match cx.cover.rota.as_ref().and_then(|r| r.fallback.clone()) {
                Some(f) => vec![f],
                None => cx.clinicians.to_vec(),
            };
            let gap = format!(
                "nobody is on call at level {level}: the fallback ({}) is reached instead",
                fallback.join(", ")
            );
            (fallback, Some(gap))
        } else {
            (rostered, None)
        };
        users.sort();
        users.dedup();
        let mut notifications = Vec::new();
        for user in &users {
            let contact = cx.contacts.get(user).cloned().unwrap_or_default();
            let not_before = if alert.severity == Severity::High {
                now_ms
            } else {
                contact
                    .quiet_until(now_ms, cx.clinic_zone)
                    .unwrap_or(now_ms)
            };
            let mut any = false;
            for (channel, on, address) in [
                ("email", cx.email, contact.email.as_deref()),
                ("sms", cx.sms, contact.phone.as_deref()),
            ] {
                if let (true, Some(a)) = (on, address) {
                    notifications.push(NewNotification::new(user, channel, Some(a), not_before)?);
                    any = true;
                }
            }
            if !any {
                notifications.push(NewNotification::new(user, CHANNELS[2], None, now_ms)?);
            }
        }
        out.push(TakenStep {
            alert_id: alert.id.to_owned(),
            patient_id: alert.patient_id.to_owned(),
            step: index,
            level,
            due_ms,
            taken_ms: now_ms,
            notifications,
            gap,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oncall::{Rota, Slot};
    use crate::registry::contacts::Quiet;

    /// Wed 2026-12-02 20:00 CST (02:00 UTC on Thursday).
    const NIGHT: i64 = 1_796_263_200_000;
    const MIN: i64 = 60_000;

    fn cover(fallback: Option<&str>) -> Cover {
        let every = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].map(String::from);
        Cover {
            rota: Some(Rota {
                timezone: "America/Chicago".into(),
                weekly: vec![Slot {
                    days: every.to_vec(),
                    start: "20:00".into(),
                    end: "08:00".into(),
                    user: "omar".into(),
                    level: 1,
                }],
                fallback: fallback.map(String::from),
            }),
            ..Cover::empty("north")
        }
    }

    fn contacts() -> HashMap<String, Contact> {
        HashMap::from([
            (
                "omar".to_owned(),
                Contact {
                    email: Some("omar@clinic.example".into()),
                    phone: Some("+13125550123".into()),
                    quiet: Some(Quiet {
                        from: "19:00".into(),
                        to: "21:00".into(),
                    }),
                    timezone: Some("America/Chicago".into()),
                },
            ),
            ("zoe".to_owned(), Contact::default()),
        ])
    }

    fn alert(severity: Severity, opened_ms: i64) -> AlertFacts<'static> {
        AlertFacts {
            id: "al_1",
            patient_id: "p-1",
            severity,
            opened_ms,
            open: true,
        }
    }

    fn who(step: &TakenStep) -> Vec<(String, String, i64)> {
        step.notifications
            .iter()
            .map(|n| (n.username.clone(), n.channel.clone(), n.not_before_ms))
            .collect()
    }

    #[test]
    fn a_high_alert_reaches_whoever_is_on_call_at_once_by_every_channel() {
        let (c, people) = (cover(None), contacts());
        let clinicians = ["omar".to_owned(), "zoe".to_owned()];
        let cx = Context {
            cover: &c,
            clinicians: &clinicians,
            contacts: &people,
            email: true,
            sms: true,
            clinic_zone: &Zone::utc(),
        };
        let steps = steps(&alert(Severity::High, NIGHT), &[], &cx, NIGHT).unwrap();
        assert_eq!(steps.len(), 1);
        assert_eq!(
            (steps[0].step, steps[0].level, steps[0].gap.clone()),
            (0, 1, None)
        );
        assert_eq!(
            who(&steps[0]),
            [
                ("omar".into(), "email".into(), NIGHT),
                ("omar".into(), "sms".into(), NIGHT)
            ],
            "a high alert ignores quiet hours"
        );
        // Without SMS configured, email only.
        let cx = Context { sms: false, ..cx };
        let s = super::steps(&alert(Severity::High, NIGHT), &[], &cx, NIGHT).unwrap();
        assert_eq!(who(&s[0]), [("omar".into(), "email".into(), NIGHT)]);
    }

    #[test]
    fn a_medium_alert_waits_out_quiet_hours() {
        let (c, people) = (cover(None), contacts());
        let cx = Context {
            cover: &c,
            clinicians: &[],
            contacts: &people,
            email: true,
            sms: false,
            clinic_zone: &Zone::utc(),
        };
        // 20:00 Chicago is inside Omar's 19:00–21:00 quiet hours: held until 21:00.
        let s = steps(&alert(Severity::Medium, NIGHT), &[], &cx, NIGHT).unwrap();
        assert_eq!(
            who(&s[0]),
            [("omar".into(), "email".into(), NIGHT + 60 * MIN)]
        );
    }

    #[test]
    fn the_second_level_with_nobody_on_it_reaches_the_fallback_and_says_so() {
        let (c, people) = (cover(Some("zoe")), contacts());
        let cx = Context {
            cover: &c,
            clinicians: &[],
            contacts: &people,
            email: true,
            sms: true,
            clinic_zone: &Zone::utc(),
        };
        let at = NIGHT + 15 * MIN;
        let s = steps(&alert(Severity::High, NIGHT), &[0], &cx, at).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].step, s[0].level, s[0].due_ms), (1, 2, at));
        assert!(
            s[0].gap.as_deref().unwrap().contains("level 2"),
            "{:?}",
            s[0].gap
        );
        // Zoe has no contact details: recorded as not reachable.
        assert_eq!(who(&s[0]), [("zoe".into(), "none".into(), at)]);
    }

    #[test]
    fn acknowledged_or_day_old_alerts_take_no_steps() {
        let (c, people) = (cover(None), contacts());
        let cx = Context {
            cover: &c,
            clinicians: &[],
            contacts: &people,
            email: true,
            sms: true,
            clinic_zone: &Zone::utc(),
        };
        let mut acked = alert(Severity::High, NIGHT);
        acked.open = false;
        assert!(
            steps(&acked, &[], &cx, NIGHT + 20 * MIN)
                .unwrap()
                .is_empty()
        );
        let old = alert(Severity::High, NIGHT - MAX_ALERT_AGE_MS - 1);
        assert!(steps(&old, &[], &cx, NIGHT).unwrap().is_empty());
    }
}
