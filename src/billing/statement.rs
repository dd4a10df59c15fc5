//! One patient's billing statement for a calendar month: the device periods the month touches
//! with their days of data, the month's management minutes, and the codes that evidence
//! supports under [`Rules`], each with its evidence (docs/billing.md). Pure: what the
//! registry and the store hold goes in, the statement comes out.

use std::collections::BTreeSet;

use jiff::civil::Date;
use serde::Serialize;

use super::rules::Rules;
use crate::domain::zone::Zone;
use crate::registry::enrollment::Enrollment;
use crate::registry::time_log::TimeEntry;

/// A calendar month, `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month {
    first: Date,
}

impl Month {
    /// Parses `YYYY-MM` (years 2000 to 2999).
    pub fn parse(s: &str) -> Result<Month, String> {
        let bad = || format!("month {s:?} must be YYYY-MM, like 2026-11");
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let y: i16 = y.parse().map_err(|_| bad())?;
        let m: i8 = m.parse().map_err(|_| bad())?;
        if !(2000..=2999).contains(&y) {
            return Err(bad());
        }
        let first = Date::new(y, m, 1).map_err(|_| bad())?;
        Ok(Month { first })
    }

    /// The month `day` is in.
    pub fn of(day: Date) -> Month {
        Month {
            first: day.first_of_month(),
        }
    }

    pub fn first(self) -> Date {
        self.first
    }

    pub fn last(self) -> Date {
        self.first.last_of_month()
    }

    fn contains(self, d: Date) -> bool {
        self.first <= d && d <= self.last()
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.first.year(), self.first.month())
    }
}

/// A device set-up with the patient (the 99453 event), as billing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupEvent {
    pub id: String,
    pub device_id: String,
    pub date: Date,
    pub by: String,
}

/// What a statement is made from.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub patient_id: &'a str,
    pub month: Month,
    /// Today in the patient's zone: a period not over yet is not final.
    pub today: Date,
    /// The zone the days are counted in (its name, for the statement).
    pub timezone: &'a str,
    pub episodes: &'a [Enrollment],
    /// Days (in the patient's zone) with data transmitted by a device, covering at least
    /// [`Inputs::days_needed`].
    pub days: &'a BTreeSet<Date>,
    pub setups: &'a [SetupEvent],
    /// The time entries dated in the month (not deleted).
    pub entries: &'a [TimeEntry],
}

/// The statement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Statement {
    pub patient_id: String,
    pub month: String,
    /// The IANA zone days were counted in.
    pub timezone: String,
    /// The device periods overlapping the month.
    pub periods: Vec<Period>,
    /// Management minutes in the month, while enrolled.
    pub minutes: u32,
    /// Whether any of them was a real-time interactive communication.
    pub interactive: bool,
    pub codes: Vec<CodeLine>,
    /// Why evidence there is supports no code, in words.
    pub notes: Vec<String>,
    /// The rules applied: their name and year.
    pub rules: String,
}

/// A device period: `period_days` days from the episode's start (the last one cut at its end).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Period {
    pub program: String,
    pub start: String,
    pub end: String,
    /// Distinct days with device data in the period.
    pub device_days: u16,
    pub days: Vec<String>,
    /// The period is over (its end is before today).
    pub complete: bool,
    /// It ends in this month, so its codes are this month's.
    pub billed_this_month: bool,
}

/// A code the evidence supports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CodeLine {
    pub code: String,
    pub units: u32,
    pub name: String,
    /// The date of service: the period's end for device codes, the month's last day (or
    /// today, while the month runs) for management.
    pub date: String,
    /// The evidence can no longer change: the period or month is over.
    #[serde(rename = "final")]
    pub is_final: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub practitioner: Option<String>,
    pub program: String,
    pub evidence: Vec<Evidence>,
}

/// One piece of evidence for a code.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evidence {
    /// A day with device data.
    DeviceDay { date: String },
    /// A time entry.
    Time {
        id: String,
        date: String,
        minutes: u32,
        activity: String,
        interactive: bool,
        user: String,
    },
    /// A device set-up with the patient.
    Setup {
        id: String,
        device_id: String,
        date: String,
        by: String,
    },
}

/// An episode's dates, parsed.
struct Episode<'a> {
    e: &'a Enrollment,
    start: Date,
    end: Option<Date>,
}

impl Episode<'_> {
    fn covers(&self, d: Date) -> bool {
        self.start <= d && self.end.is_none_or(|e| d <= e)
    }

    /// Period `k` (from 0): its first and last day, `None` past the episode's end.
    fn period(&self, k: i64, len: i64) -> Option<(Date, Date)> {
        let start = add_days(self.start, k * len)?;
        if self.end.is_some_and(|e| start > e) {
            return None;
        }
        let mut end = add_days(start, len - 1)?;
        if let Some(e) = self.end {
            end = end.min(e);
        }
        Some((start, end))
    }

    /// The index of the period holding `d` (`d` on or after the start).
    fn period_of(&self, d: Date, len: i64) -> i64 {
        days_between(self.start, d).max(0) / len
    }
}

fn add_days(d: Date, n: i64) -> Option<Date> {
    d.checked_add(jiff::Span::new().try_days(n).ok()?).ok()
}

fn days_between(a: Date, b: Date) -> i64 {
    a.until(b).map(|s| i64::from(s.get_days())).unwrap_or(0)
}

fn parse_date(s: &str) -> Option<Date> {
    s.parse().ok()
}

/// The days in `zone` with data from a device that transmits by itself (`counts`): from the
/// store's `(device, quarter hour)` pairs ([`crate::store::Store::quarter_hours`]). Two
/// readings on one day are one day; a device whose readings are typed in never counts.
pub fn device_days(
    quarter_hours: &[(String, i64)],
    counts: impl Fn(&str) -> bool,
    zone: &Zone,
) -> BTreeSet<Date> {
    quarter_hours
        .iter()
        .filter(|(device, _)| counts(device))
        .filter_map(|(_, ms)| zone.day_of(*ms))
        .collect()
}

/// The days of data a statement for `month` needs, given the episodes and set-ups: from the
/// earliest period it may look at to the last day of the last period overlapping the month.
pub fn days_needed(
    rules: &Rules,
    month: Month,
    episodes: &[Enrollment],
    setups: &[SetupEvent],
) -> Option<(Date, Date)> {
    let len = i64::from(rules.period_days);
    let mut range: Option<(Date, Date)> = None;
    for ep in parsed(episodes) {
        let mut widen = |from: Date, to: Date| {
            range = Some(match range {
                None => (from, to),
                Some((a, b)) => (a.min(from), b.max(to)),
            });
        };
        let Some((first, last)) = overlapping(&ep, month, len) else {
            continue;
        };
        let (Some((from, _)), Some((_, to))) = (ep.period(first, len), ep.period(last, len)) else {
            continue;
        };
        // The set-up code goes with the first period from the set-up that reaches its days:
        // the periods since the earliest set-up are looked at too.
        let since_setup = setups
            .iter()
            .filter(|s| ep.covers(s.date) && s.date <= month.last())
            .map(|s| ep.period(ep.period_of(s.date, len), len))
            .filter_map(|p| p.map(|(a, _)| a))
            .min();
        widen(since_setup.map_or(from, |s| s.min(from)), to);
    }
    range
}

fn parsed(episodes: &[Enrollment]) -> Vec<Episode<'_>> {
    let mut v: Vec<Episode<'_>> = episodes
        .iter()
        .filter_map(|e| {
            Some(Episode {
                e,
                start: parse_date(&e.start)?,
                end: match &e.end {
                    Some(x) => Some(parse_date(x)?),
                    None => None,
                },
            })
        })
        .collect();
    v.sort_by_key(|e| e.start);
    v
}

/// The first and last index of the episode's periods overlapping `month`.
fn overlapping(ep: &Episode<'_>, month: Month, len: i64) -> Option<(i64, i64)> {
    if ep.start > month.last() || ep.end.is_some_and(|e| e < month.first()) {
        return None;
    }
    let first = ep.period_of(month.first(), len);
    let mut last = first;
    while let Some((s, _)) = ep.period(last + 1, len) {
        if s > month.last() {
            break;
        }
        last += 1;
    }
    Some((first, last))
}

/// The statement `inputs` support under `rules`.
pub fn statement(rules: &Rules, inputs: &Inputs<'_>) -> Statement {
    let len = i64::from(rules.period_days);
    let month = inputs.month;
    let episodes = parsed(inputs.episodes);
    let mut periods = Vec::new();
    let mut codes = Vec::new();
    let mut notes = Vec::new();
    let days_in = |a: Date, b: Date| -> Vec<Date> { inputs.days.range(a..=b).copied().collect() };

    for ep in &episodes {
        let Some((first, last)) = overlapping(ep, month, len) else {
            continue;
        };
        for k in first..=last {
            let Some((start, end)) = ep.period(k, len) else {
                break;
            };
            let days = days_in(start, end);
            let n = u16::try_from(days.len()).unwrap_or(u16::MAX);
            let billed = month.contains(end);
            let complete = end < inputs.today;
            periods.push(Period {
                program: ep.e.program.clone(),
                start: start.to_string(),
                end: end.to_string(),
                device_days: n,
                days: days.iter().map(Date::to_string).collect(),
                complete,
                billed_this_month: billed,
            });
            if !billed {
                continue;
            }
            let day_evidence = || {
                days.iter()
                    .map(|d| Evidence::DeviceDay {
                        date: d.to_string(),
                    })
                    .collect::<Vec<_>>()
            };
            match rules.device_code(n) {
                Some(rule) => codes.push(CodeLine {
                    code: rule.code.clone(),
                    units: 1,
                    name: rule.name.clone(),
                    date: end.to_string(),
                    is_final: complete,
                    practitioner: ep.e.practitioner.clone(),
                    program: ep.e.program.clone(),
                    evidence: day_evidence(),
                }),
                None => notes.push(format!(
                    "period {start} to {end}: {n} day{} of device data, fewer than any device code needs",
                    if n == 1 { "" } else { "s" }
                )),
            }
            if let Some(line) = setup_line(rules, ep, k, len, inputs, &days_in) {
                codes.push(line);
            } else if k == 0
                && days.len() >= usize::from(rules.setup.min_days)
                && !inputs.setups.iter().any(|s| ep.covers(s.date))
            {
                notes.push(format!(
                    "no device set-up recorded in the episode from {}: {} needs one",
                    ep.start, rules.setup.code
                ));
            }
        }
    }

    // Management: the month's minutes while enrolled.
    let enrolled = |d: Date| episodes.iter().find(|ep| ep.covers(d));
    let mut minutes = 0u32;
    let mut interactive = false;
    let mut counted = Vec::new();
    let mut outside = 0u32;
    let mut practitioner = None;
    let mut program = None;
    for t in inputs.entries {
        let Some(d) = parse_date(&t.date).filter(|d| month.contains(*d)) else {
            continue;
        };
        match enrolled(d) {
            Some(ep) => {
                minutes = minutes.saturating_add(t.minutes);
                interactive |= t.interactive;
                practitioner = ep.e.practitioner.clone();
                program = Some(ep.e.program.clone());
                counted.push(t);
            }
            None => outside = outside.saturating_add(t.minutes),
        }
    }
    if outside > 0 {
        notes.push(format!(
            "{outside} minutes logged on days outside an enrollment are not counted"
        ));
    }
    let month_over = month.last() < inputs.today;
    let service_date = if month_over {
        month.last()
    } else {
        inputs.today.min(month.last())
    };
    let time_evidence = || {
        counted
            .iter()
            .map(|t| Evidence::Time {
                id: t.id.clone(),
                date: t.date.clone(),
                minutes: t.minutes,
                activity: t.activity.clone(),
                interactive: t.interactive,
                user: t.user.clone(),
            })
            .collect::<Vec<_>>()
    };
    if minutes > 0 {
        match rules.first_code(minutes) {
            _ if rules.management.interactive_required && !interactive => notes.push(format!(
                "{minutes} minutes of management but no real-time interactive communication with the patient this month: no management code"
            )),
            None => notes.push(format!(
                "{minutes} minutes of management, fewer than any management code needs"
            )),
            Some(first) => {
                let line = |code: &str, units: u32, name: &str| CodeLine {
                    code: code.to_owned(),
                    units,
                    name: name.to_owned(),
                    date: service_date.to_string(),
                    is_final: month_over,
                    practitioner: practitioner.clone(),
                    program: program.clone().unwrap_or_default(),
                    evidence: time_evidence(),
                };
                codes.push(line(&first.code, 1, &first.name));
                let add = rules.add_on_units(first, minutes);
                if add > 0 {
                    let a = &rules.management.add_on;
                    codes.push(line(&a.code, add, &a.name));
                }
            }
        }
    }

    Statement {
        patient_id: inputs.patient_id.to_owned(),
        month: month.to_string(),
        timezone: inputs.timezone.to_owned(),
        periods,
        minutes,
        interactive,
        codes,
        notes,
        rules: format!("{} {}", rules.name, rules.year),
    }
}

/// The set-up code for period `k` of `ep`, when it is the episode's first period, from the
/// earliest set-up, that reaches the set-up rule's days.
fn setup_line(
    rules: &Rules,
    ep: &Episode<'_>,
    k: i64,
    len: i64,
    inputs: &Inputs<'_>,
    days_in: &dyn Fn(Date, Date) -> Vec<Date>,
) -> Option<CodeLine> {
    let (start, end) = ep.period(k, len)?;
    let setups: Vec<&SetupEvent> = inputs
        .setups
        .iter()
        .filter(|s| ep.covers(s.date) && s.date <= end)
        .collect();
    let earliest = setups.iter().map(|s| s.date).min()?;
    let min = usize::from(rules.setup.min_days);
    let from = ep.period_of(earliest, len);
    if k < from {
        return None;
    }
    // An earlier period from the set-up on already carried the code.
    for j in from..k {
        let (a, b) = ep.period(j, len)?;
        if days_in(a, b).len() >= min {
            return None;
        }
    }
    let days = days_in(start, end);
    if days.len() < min {
        return None;
    }
    let mut evidence: Vec<Evidence> = setups
        .iter()
        .map(|s| Evidence::Setup {
            id: s.id.clone(),
            device_id: s.device_id.clone(),
            date: s.date.to_string(),
            by: s.by.clone(),
        })
        .collect();
    evidence.extend(days.iter().map(|d| Evidence::DeviceDay {
        date: d.to_string(),
    }));
    Some(CodeLine {
        code: rules.setup.code.clone(),
        units: 1,
        name: rules.setup.name.clone(),
        date: end.to_string(),
        is_final: end < inputs.today,
        practitioner: ep.e.practitioner.clone(),
        program: ep.e.program.clone(),
        evidence,
    })
}
