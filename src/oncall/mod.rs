//! Who is on call for a care team at a given moment (docs/oncall.md): the team's weekly
//! rota in the team's time zone, the shifts set for particular dates (which override the rota
//! at their level while they last), and the team's fallback when nobody is. Pure: the rota,
//! the shifts and the moment go in, the people on call come out, so midnight changes,
//! overrides and daylight-saving changes are tested without clocks.
//!
//! Levels: level 1 is notified first; an escalation policy's later steps reach level 2 and on.
//! Nobody on call at level 1 is a gap in cover: the fallback (a named user, else every
//! clinician of the team) is reached instead, and the gap is reported so the dashboard warns.

pub mod policy;
#[cfg(test)]
mod tests;

use jiff::civil::{Date, Time, Weekday};
use serde::{Deserialize, Serialize};

use crate::domain::zone::Zone;
use crate::domain::{format_rfc3339, parse_rfc3339};

/// The most levels a rota has.
pub const MAX_LEVEL: u8 = 5;
/// The most slots of a weekly rota.
pub const MAX_SLOTS: usize = 200;
/// The most shifts a team holds at once.
pub const MAX_SHIFTS: usize = 1000;
/// The longest shift: two weeks (a longer absence is a rota change).
pub const MAX_SHIFT_MS: i64 = 14 * 86_400_000;

/// Why a rota or shift list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RotaError(pub String);

/// A team's weekly rota (`PUT /teams/{id}/rota`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rota {
    /// The team's IANA time zone: slots are read on its clocks.
    pub timezone: String,
    #[serde(default)]
    pub weekly: Vec<Slot>,
    /// Who is reached when nobody is on call at level 1; absent: every clinician of the team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// One weekly slot: on each of `days`, from `start` to `end` on the team's clocks. An `end`
/// not after `start` is on the next day (a night shift, 20:00 to 08:00); `start` equal to
/// `end` is a whole day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slot {
    /// `mon` … `sun`.
    pub days: Vec<String>,
    /// `HH:MM`.
    pub start: String,
    /// `HH:MM`.
    pub end: String,
    pub user: String,
    #[serde(default = "first_level")]
    pub level: u8,
}

fn first_level() -> u8 {
    1
}

/// A shift for particular dates (`PUT /teams/{id}/on-call`): `user` is on call at `level`
/// from `start` to `end` (RFC 3339), in place of the rota's people at that level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shift {
    pub user: String,
    pub start: String,
    pub end: String,
    #[serde(default = "first_level")]
    pub level: u8,
}

/// Where an assignment comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Shift,
    Rota,
    Fallback,
}

/// One person on call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assignment {
    pub user: String,
    pub level: u8,
    pub source: Source,
    /// When this assignment ends (RFC 3339); absent for the fallback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// Who is on call at a moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnCall {
    /// By level, then name; level 1 is the fallback's when nobody else is on call.
    pub on_call: Vec<Assignment>,
    /// Set when nobody is on call at level 1, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap: Option<String>,
}

impl OnCall {
    /// The people on call at `level`.
    pub fn at_level(&self, level: u8) -> impl Iterator<Item = &Assignment> {
        self.on_call.iter().filter(move |a| a.level == level)
    }
}

/// A checked slot: days as weekdays, times as clock times.
#[derive(Debug, Clone)]
struct Weekly {
    days: Vec<Weekday>,
    start: Time,
    end: Time,
    user: String,
    level: u8,
}

fn weekday(s: &str) -> Option<Weekday> {
    Some(match s.trim().to_ascii_lowercase().as_str() {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    })
}

/// `HH:MM` as a clock time (two digits each).
pub fn clock(s: &str) -> Option<Time> {
    let (h, m) = s.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
    Time::new(h, m, 0, 0).ok()
}

fn check_level(level: u8, what: &str) -> Result<(), RotaError> {
    if (1..=MAX_LEVEL).contains(&level) {
        Ok(())
    } else {
        Err(RotaError(format!("{what}: level must be 1 to {MAX_LEVEL}")))
    }
}

fn check_user(user: &str, what: &str) -> Result<(), RotaError> {
    if user.trim().is_empty() || user.len() > 64 {
        return Err(RotaError(format!("{what}: user must be a user's name")));
    }
    Ok(())
}

impl Rota {
    /// The team's zone.
    pub fn zone(&self) -> Result<Zone, RotaError> {
        Zone::parse(&self.timezone).map_err(|e| RotaError(e.to_string()))
    }

    fn slots(&self) -> Result<Vec<Weekly>, RotaError> {
        if self.weekly.len() > MAX_SLOTS {
            return Err(RotaError(format!(
                "a rota has at most {MAX_SLOTS} weekly slots"
            )));
        }
        self.weekly
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let what = format!("slot {}", i + 1);
                check_user(&s.user, &what)?;
                check_level(s.level, &what)?;
                if s.days.is_empty() {
                    return Err(RotaError(format!(
                        "{what}: days must name at least one of mon, tue, wed, thu, fri, sat, sun"
                    )));
                }
                let days = s
                    .days
                    .iter()
                    .map(|d| {
                        weekday(d).ok_or_else(|| {
                            RotaError(format!(
                                "{what}: day {d:?} must be one of mon, tue, wed, thu, fri, sat, sun"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let time = |t: &str, name: &str| {
                    clock(t).ok_or_else(|| {
                        RotaError(format!(
                            "{what}: {name} {t:?} must be a time like 08:00 or 20:30"
                        ))
                    })
                };
                Ok(Weekly {
                    days,
                    start: time(&s.start, "start")?,
                    end: time(&s.end, "end")?,
                    user: s.user.trim().to_owned(),
                    level: s.level,
                })
            })
            .collect()
    }

    /// Checks the rota: a known zone, well-formed slots, and a fallback (when named) that is
    /// a user's name. Whether the users exist and are on the team is the caller's to check.
    pub fn check(&self) -> Result<(), RotaError> {
        self.zone()?;
        self.slots()?;
        if let Some(f) = &self.fallback {
            check_user(f, "fallback")?;
        }
        Ok(())
    }

    /// Every user the rota names (slots and fallback), each once.
    pub fn users(&self) -> Vec<String> {
        let mut u: Vec<String> = self
            .weekly
            .iter()
            .map(|s| s.user.trim().to_owned())
            .chain(self.fallback.iter().map(|f| f.trim().to_owned()))
            .collect();
        u.sort();
        u.dedup();
        u
    }
}

/// A checked shift.
#[derive(Debug, Clone)]
struct Span {
    user: String,
    level: u8,
    start_ms: i64,
    end_ms: i64,
}

/// Checks a team's shifts: each names a user, a level, and a start before its end, at most
/// [`MAX_SHIFT_MS`] long; at most [`MAX_SHIFTS`] of them.
pub fn check_shifts(shifts: &[Shift]) -> Result<(), RotaError> {
    spans(shifts).map(|_| ())
}

fn spans(shifts: &[Shift]) -> Result<Vec<Span>, RotaError> {
    if shifts.len() > MAX_SHIFTS {
        return Err(RotaError(format!(
            "a team has at most {MAX_SHIFTS} shifts at once"
        )));
    }
    shifts
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let what = format!("shift {}", i + 1);
            check_user(&s.user, &what)?;
            check_level(s.level, &what)?;
            let when = |t: &str, name: &str| {
                parse_rfc3339(t).ok_or_else(|| {
                    RotaError(format!(
                        "{what}: {name} {t:?} must be an RFC 3339 time like 2026-12-24T20:00:00-06:00"
                    ))
                })
            };
            let (start_ms, end_ms) = (when(&s.start, "start")?, when(&s.end, "end")?);
            if end_ms <= start_ms {
                return Err(RotaError(format!("{what}: end must be after start")));
            }
            if end_ms - start_ms > MAX_SHIFT_MS {
                return Err(RotaError(format!(
                    "{what}: a shift lasts at most 14 days (change the rota for longer)"
                )));
            }
            Ok(Span {
                user: s.user.trim().to_owned(),
                level: s.level,
                start_ms,
                end_ms,
            })
        })
        .collect()
}

/// The weekly slots covering `at_ms`, each with when it ends. A slot starts on one of its days
/// and lasts at most a day, so only slots starting today or yesterday (on the team's clocks)
/// can cover the moment.
fn rota_at(slots: &[Weekly], zone: &Zone, at_ms: i64) -> Vec<(usize, i64)> {
    let Some(today) = zone.day_of(at_ms) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for day in [today.yesterday().ok(), Some(today)].into_iter().flatten() {
        let Some(next) = day.tomorrow().ok() else {
            continue;
        };
        for (i, s) in slots.iter().enumerate() {
            if !s.days.contains(&day.weekday()) {
                continue;
            }
            let end_day: Date = if s.end > s.start { day } else { next };
            let (Some(start), Some(end)) = (zone.at(day, s.start), zone.at(end_day, s.end)) else {
                continue;
            };
            if start <= at_ms && at_ms < end {
                out.push((i, end));
            }
        }
    }
    out
}

/// Who is on call for a team at `at_ms`: at each level, the shifts covering the moment if
/// there are any at that level, else the rota's slots covering it; nobody at level 1 is a gap,
/// filled by the rota's fallback or, without one, `team_members`. `rota` absent: only shifts.
pub fn on_call(
    rota: Option<&Rota>,
    shifts: &[Shift],
    team_members: &[String],
    at_ms: i64,
) -> Result<OnCall, RotaError> {
    let spans = spans(shifts)?;
    let (slots, zone) = match rota {
        Some(r) => (r.slots()?, r.zone()?),
        None => (Vec::new(), Zone::utc()),
    };
    let mut on: Vec<Assignment> = Vec::new();
    for level in 1..=MAX_LEVEL {
        let from_shifts: Vec<Assignment> = spans
            .iter()
            .filter(|s| s.level == level && s.start_ms <= at_ms && at_ms < s.end_ms)
            .map(|s| Assignment {
                user: s.user.clone(),
                level,
                source: Source::Shift,
                until: Some(format_rfc3339(s.end_ms)),
            })
            .collect();
        if !from_shifts.is_empty() {
            on.extend(from_shifts);
            continue;
        }
        on.extend(
            rota_at(&slots, &zone, at_ms)
                .into_iter()
                .filter(|(i, _)| slots[*i].level == level)
                .map(|(i, end)| Assignment {
                    user: slots[i].user.clone(),
                    level,
                    source: Source::Rota,
                    until: Some(format_rfc3339(end)),
                }),
        );
    }
    on.sort_by(|a, b| (a.level, &a.user).cmp(&(b.level, &b.user)));
    on.dedup_by(|a, b| a.level == b.level && a.user == b.user);
    let mut gap = None;
    if !on.iter().any(|a| a.level == 1) {
        let fallback: Vec<String> = match rota.and_then(|r| r.fallback.clone()) {
            Some(f) => vec![f.trim().to_owned()],
            None => team_members.to_vec(),
        };
        gap = Some(if fallback.is_empty() {
            "nobody is on call and the team has no fallback and no clinician".to_owned()
        } else {
            format!(
                "nobody is on call: the fallback ({}) is reached instead",
                fallback.join(", ")
            )
        });
        let mut fill: Vec<Assignment> = fallback
            .into_iter()
            .map(|user| Assignment {
                user,
                level: 1,
                source: Source::Fallback,
                until: None,
            })
            .collect();
        fill.append(&mut on);
        on = fill;
    }
    Ok(OnCall { on_call: on, gap })
}
