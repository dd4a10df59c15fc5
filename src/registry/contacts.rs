//! How to reach each dashboard user ([`super::storage::ContactStore`]): an email address, a
//! mobile number for SMS, which of those to use, and quiet hours on the user's clocks during
//! which only high alerts reach them (docs/oncall.md). Users keep their own; admins may set
//! anyone's. The checks here are pure, so that both backends store the same thing.

use serde::{Deserialize, Serialize};

use super::error::RegistryError;
use crate::domain::zone::Zone;
use crate::oncall::clock;

/// A user's contact details as stored and shown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// E.164: `+` and 8 to 15 digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Quiet hours, when set: only high alerts reach the user then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet: Option<Quiet>,
    /// The user's IANA zone, for quiet hours; absent: the clinic's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// Quiet hours: from `from` to `to` (`HH:MM`) each day; a `to` not after `from` is the next
/// morning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quiet {
    pub from: String,
    pub to: String,
}

/// A change of a user's contact details (`PATCH /users/{name}`): each field given replaces
/// the stored one; `""` (or `null` for `quiet`) clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ContactChange {
    pub email: Option<String>,
    pub phone: Option<String>,
    /// `Some(None)`: clear.
    pub quiet: Option<Option<Quiet>>,
    pub timezone: Option<String>,
}

impl ContactChange {
    pub fn is_empty(&self) -> bool {
        self.email.is_none()
            && self.phone.is_none()
            && self.quiet.is_none()
            && self.timezone.is_none()
    }

    /// `old` with this change applied, checked.
    pub fn applied_to(self, old: Contact) -> Result<Contact, RegistryError> {
        let set = |new: Option<String>, old: Option<String>| match new {
            None => old,
            Some(v) if v.trim().is_empty() => None,
            Some(v) => Some(v.trim().to_owned()),
        };
        let c = Contact {
            email: set(self.email, old.email),
            phone: set(self.phone, old.phone),
            quiet: self.quiet.unwrap_or(old.quiet),
            timezone: set(self.timezone, old.timezone),
        };
        c.check()?;
        Ok(c)
    }
}

fn bad(m: String) -> Result<(), RegistryError> {
    Err(RegistryError::Invalid(m))
}

impl Contact {
    /// Checks each field: an address with one `@`, a local part and a dotted domain, no spaces,
    /// at most 254 characters; a number in E.164 form; quiet hours as `HH:MM`; a known zone.
    pub fn check(&self) -> Result<(), RegistryError> {
        if let Some(e) = &self.email {
            let ok = e.len() <= 254
                && !e
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
                && e.split_once('@').is_some_and(|(local, domain)| {
                    !local.is_empty()
                        && !domain.contains('@')
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                });
            if !ok {
                return bad(format!(
                    "email {e:?} is not an email address like nina@clinic.example"
                ));
            }
        }
        if let Some(p) = &self.phone {
            let digits = p.strip_prefix('+').unwrap_or("");
            let ok = (8..=15).contains(&digits.len())
                && digits.chars().all(|c| c.is_ascii_digit())
                && !digits.starts_with('0');
            if !ok {
                return bad(format!(
                    "phone {p:?} must be an international number like +13125550123 (E.164)"
                ));
            }
        }
        if let Some(q) = &self.quiet {
            for (name, t) in [("from", &q.from), ("to", &q.to)] {
                if clock(t).is_none() {
                    return bad(format!("quiet.{name} {t:?} must be a time like 22:00"));
                }
            }
            if q.from == q.to {
                return bad("quiet hours must not start and end at the same time".into());
            }
        }
        if let Some(z) = &self.timezone {
            Zone::parse(z).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        }
        Ok(())
    }

    /// Whether `at_ms` falls in the quiet hours (on the user's clocks, else `clinic`'s).
    pub fn quiet_at(&self, at_ms: i64, clinic: &Zone) -> bool {
        let Some(q) = &self.quiet else {
            return false;
        };
        let (Some(from), Some(to)) = (clock(&q.from), clock(&q.to)) else {
            return false;
        };
        let zone = self
            .timezone
            .as_deref()
            .and_then(|z| Zone::parse(z).ok())
            .unwrap_or_else(|| clinic.clone());
        let Some(now) = zone.time_of(at_ms) else {
            return false;
        };
        if from < to {
            from <= now && now < to
        } else {
            now >= from || now < to
        }
    }
}

impl Contact {
    /// When the quiet hours that `at_ms` falls in end (on the user's clocks, else `clinic`'s);
    /// `None` outside quiet hours.
    pub fn quiet_until(&self, at_ms: i64, clinic: &Zone) -> Option<i64> {
        if !self.quiet_at(at_ms, clinic) {
            return None;
        }
        let q = self.quiet.as_ref()?;
        let to = clock(&q.to)?;
        let zone = self
            .timezone
            .as_deref()
            .and_then(|z| Zone::parse(z).ok())
            .unwrap_or_else(|| clinic.clone());
        let today = zone.day_of(at_ms)?;
        // The end is today's `to` if that is still ahead, else tomorrow's.
        let end = zone.at(today, to)?;
        if end > at_ms {
            Some(end)
        } else {
            zone.at(today.tomorrow().ok()?, to)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_details_are_checked_with_reasons() {
        let ok = Contact {
            email: Some("nina@clinic.example".into()),
            phone: Some("+13125550123".into()),
            quiet: Some(Quiet {
                from: "22:00".into(),
                to: "07:00".into(),
            }),
            timezone: Some("America/Chicago".into()),
        };
        ok.check().unwrap();
        for (c, why) in [
            (
                Contact {
                    email: Some("nina".into()),
                    ..ok.clone()
                },
                "email",
            ),
            (
                Contact {
                    email: Some("a b@c.d".into()),
                    ..ok.clone()
                },
                "email",
            ),
            (
                Contact {
                    email: Some("a@b".into()),
                    ..ok.clone()
                },
                "email",
            ),
            (
                Contact {
                    phone: Some("3125550123".into()),
                    ..ok.clone()
                },
                "E.164",
            ),
            (
                Contact {
                    phone: Some("+1 312 555".into()),
                    ..ok.clone()
                },
                "E.164",
            ),
            (
                Contact {
                    quiet: Some(Quiet {
                        from: "22".into(),
                        to: "07:00".into(),
                    }),
                    ..ok.clone()
                },
                "quiet.from",
            ),
            (
                Contact {
                    timezone: Some("Nowhere/Else".into()),
                    ..ok.clone()
                },
                "IANA",
            ),
        ] {
            let e = c.check().unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        // A change clears with "" and keeps what it does not name.
        let changed = ContactChange {
            email: Some(String::new()),
            quiet: Some(None),
            ..ContactChange::default()
        }
        .applied_to(ok.clone())
        .unwrap();
        assert_eq!(changed.email, None);
        assert_eq!(changed.quiet, None);
        assert_eq!(changed.phone, ok.phone);
    }

    #[test]
    fn quiet_hours_cross_midnight_on_the_users_clock() {
        let c = Contact {
            quiet: Some(Quiet {
                from: "22:00".into(),
                to: "07:00".into(),
            }),
            timezone: Some("America/Chicago".into()),
            ..Contact::default()
        };
        let utc = Zone::utc();
        // 2026-12-03 03:59 UTC is 21:59 in Chicago (UTC-6): not quiet; 04:00 UTC is 22:00.
        let t = 1_796_270_340_000;
        assert!(!c.quiet_at(t, &utc));
        assert!(c.quiet_at(t + 60_000, &utc));
        // 06:59 Chicago (12:59 UTC) quiet; 07:00 not.
        let morning = 1_796_302_740_000;
        assert!(c.quiet_at(morning, &utc));
        assert!(!c.quiet_at(morning + 60_000, &utc));
        // Without a zone of their own, the clinic's: 22:00 UTC.
        let mut u = c.clone();
        u.timezone = None;
        assert!(u.quiet_at(1_796_335_200_000, &utc)); // 2026-12-03T22:00:00Z
        assert!(!Contact::default().quiet_at(t, &utc));
        // Quiet at 22:00 Chicago lasts until 07:00 the next morning (13:00 UTC).
        assert_eq!(c.quiet_until(t + 60_000, &utc), Some(morning + 60_000));
        assert_eq!(c.quiet_until(morning, &utc), Some(morning + 60_000));
        assert_eq!(c.quiet_until(t, &utc), None);
    }
}
