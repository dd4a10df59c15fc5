//! The alert engine: a pure state machine. It is fed committed observations, the passing of
//! time (ticks), care-plan changes and clinicians' acknowledgements, and answers with
//! [`Effect`]s — open, raise, escalate or resolve an alert — that the shell
//! ([`super::task`]) writes to the patient's record and the outbox in one transaction.
//!
//! It never reads a clock or does I/O: `now` is an argument, so tests drive time explicitly
//! and a restart can rebuild the state by replaying stored readings.
//!
//! Semantics, per rule kind (times in a reading are the device's measurement times; `now` is
//! Vigil's clock):
//! - **threshold**: the condition holds once the readings meeting `metric op value` have
//!   lasted `for_s` seconds between the first and the latest of them with no reading in
//!   between that failed it (`for_s` 0: the first reading). It clears when a reading is past
//!   the limit by `hysteresis` on the good side; a reading between the limit and the
//!   hysteresis band keeps it as it was, so a value hovering at the limit does not flap.
//! - **rate**: the latest reading is at least `rise` above the lowest (or `fall` below the
//!   highest) reading within `window_h` hours before it.
//! - **news2**: the aggregate of the latest reading of each NEWS2 parameter no older than
//!   `freshness_s` (on a reading, judged against that reading's time, so an uploaded backlog
//!   is judged as it was charted; at each tick, against `now`, so inputs go stale); 5–6 or a
//!   single parameter scoring 3 is medium,
//!   7 or more high. A score that climbs while its alert is open raises the alert's severity.
//! - **missing**: no reading of `metric` for `after_s` seconds (from the latest reading, or
//!   from when the rule started watching).
//! - **drift**, **macd**, **forecast** (trend rules): judged by [`super::trend`] on each reading
//!   from what the rule keeps (daily figures; the last few glucose readings); a rebuild gives
//!   them the days before the latest reading's day as 5-minute buckets
//!   ([`Engine::replay_buckets`]) rather than every reading.
//!
//! One condition, one alert: while an alert for a rule is open or acknowledged, the rule
//! raises no other. It resolves by itself once its condition has stayed clear for
//! `auto_resolve_s`; an open alert nobody acknowledges escalates every `escalate_after_s`,
//! up to `max_escalations` times. A clinician resolving an alert whose condition still holds
//! silences the rule until the condition clears (no immediate re-alert).
//!
//! Readings older than the newest one a rule has already judged do not change its state: a
//! backlog uploaded out of order is stored, but alerts follow the newest data.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::news2::{self, Inputs, Spo2Scale};
use super::rules::{CarePlan, Op, Rule, Severity};
use super::trend::{self, Verdict, days::Bucket};
use crate::domain::{Metric, Observation, PatientId};

/// Engine settings (config `[alerts]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// How long a condition must stay clear before its alert resolves by itself.
    pub auto_resolve_s: u32,
    /// How long an open alert may go unacknowledged before it escalates (again).
    pub escalate_after_s: u32,
    /// How many times an alert escalates at most.
    pub max_escalations: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            auto_resolve_s: 900,
            escalate_after_s: 900,
            max_escalations: 3,
        }
    }
}

/// What the engine is told.
#[derive(Debug, Clone)]
pub enum Input<'a> {
    /// A reading that has been durably stored.
    Observation(&'a Observation),
    /// Time has passed (missing readings, auto-resolve, escalation, stale NEWS2 inputs).
    Tick,
    /// The patient's care plan was set (`None`: back to the default plan).
    PlanChanged {
        patient: &'a PatientId,
        plan: Option<Arc<CarePlan>>,
    },
    /// A clinician acknowledged the rule's alert: it no longer escalates.
    Acknowledged {
        patient: &'a PatientId,
        rule_id: &'a str,
    },
    /// A clinician resolved the rule's alert.
    Resolved {
        patient: &'a PatientId,
        rule_id: &'a str,
    },
}

/// What the engine asks the shell to do. Every effect names its alert by patient and rule:
/// there is at most one unresolved alert per pair.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Open {
        patient: PatientId,
        rule_id: String,
        kind: &'static str,
        severity: Severity,
        message: String,
        /// The reading that tipped the condition over (none for `missing`).
        trigger: Option<Observation>,
        at_ms: i64,
    },
    /// The condition worsened: the alert's severity goes up.
    Raise {
        patient: PatientId,
        rule_id: String,
        severity: Severity,
        message: String,
        at_ms: i64,
    },
    /// Nobody acknowledged the alert in time.
    Escalate {
        patient: PatientId,
        rule_id: String,
        level: u32,
        at_ms: i64,
    },
    /// The condition has been clear long enough (or its rule left the care plan).
    Resolve {
        patient: PatientId,
        rule_id: String,
        reason: String,
        at_ms: i64,
    },
}

impl Effect {
    /// The patient it is about.
    pub fn patient(&self) -> &PatientId {
        match self {
            Effect::Open { patient, .. }
            | Effect::Raise { patient, .. }
            | Effect::Escalate { patient, .. }
            | Effect::Resolve { patient, .. } => patient,
        }
    }
}

/// An unresolved alert, as the shell restores it at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAlert {
    pub patient: PatientId,
    pub rule_id: String,
    pub severity: Severity,
    pub acknowledged: bool,
    pub escalations: u32,
    /// When it was opened or last escalated.
    pub since_ms: i64,
}

/// A rule's latest alert, resolved by a person rather than by Vigil, as the shell reads it back
/// at start-up: replayed among the readings by when Vigil received them, it silences the rule
/// again if the condition still held, so a restart does not undo the clinician's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    pub patient: PatientId,
    pub rule_id: String,
    /// When it was resolved (Vigil's clock, as readings' `received_ms`).
    pub at_ms: i64,
}

#[derive(Debug, Clone)]
struct Track {
    severity: Severity,
    acknowledged: bool,
    escalations: u32,
    /// Opened or last escalated.
    escalated_ms: i64,
    /// The condition has been clear since then.
    clear_since: Option<i64>,
}

#[derive(Debug, Clone, Default)]
struct RuleState {
    /// The condition, as of the latest judgement (`None` while it does not hold).
    holding: Option<Severity>,
    alert: Option<Track>,
    /// Resolved by a clinician while holding: no new alert until the condition clears.
    silenced: bool,
    /// Replaying: the reading that made the condition hold with no alert open, which
    /// `settle` gives the alert it opens as its trigger.
    tripped: Option<Observation>,
    /// The newest reading time judged.
    last_ms: Option<i64>,
    /// threshold: the first reading of the current run meeting the condition.
    run_start: Option<i64>,
    /// rate: candidates for the window's extreme, oldest first (monotonic deque).
    window: VecDeque<(i64, f64)>,
    /// missing: when the rule started watching.
    watch_from: i64,
    /// drift, macd, forecast: what the rule keeps (made on its first reading).
    trend: Option<trend::State>,
}

struct PatientState {
    plan: Arc<CarePlan>,
    /// For each metric, the plan's rules that read it (indices into `plan.rules`).
    by_metric: HashMap<Metric, Vec<usize>>,
    custom: bool,
    rules: HashMap<String, RuleState>,
    /// The latest reading of each metric: (measurement time, value, when Vigil judged it).
    latest: HashMap<Metric, (i64, f64)>,
}

/// The alert engine for every patient.
pub struct Engine {
    settings: Settings,
    default_plan: Arc<CarePlan>,
    patients: HashMap<PatientId, PatientState>,
}

fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn unit_suffix(m: Metric) -> String {
    match m.unit() {
        "{bool}" | "{ACVPU}" | "{steps}" => String::new(),
        u => format!(" {u}"),
    }
}

fn fmt_duration(s: i64) -> String {
    match s {
        ..60 => format!("{s} s"),
        60..3600 if s % 60 == 0 => format!("{} min", s / 60),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ if s % 3600 == 0 => format!("{} h", s / 3600),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

fn op_str(op: Op) -> &'static str {
    match op {
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Gt => ">",
        Op::Ge => ">=",
    }
}

/// The metrics a rule reads.
fn rule_metrics(rule: &Rule) -> Vec<Metric> {
    match rule {
        Rule::Threshold { metric, .. }
        | Rule::Rate { metric, .. }
        | Rule::Missing { metric, .. }
        | Rule::Drift { metric, .. } => Metric::parse(metric).into_iter().collect(),
        Rule::News2 { .. } => NEWS2_METRICS.to_vec(),
        Rule::Macd { .. } => vec![Metric::BodyWeight],
        Rule::Forecast { .. } => vec![Metric::Glucose],
    }
}

fn index_by_metric(plan: &CarePlan) -> HashMap<Metric, Vec<usize>> {
    let mut out: HashMap<Metric, Vec<usize>> = HashMap::new();
    for (i, rule) in plan.rules.iter().enumerate() {
        for m in rule_metrics(rule) {
            out.entry(m).or_default().push(i);
        }
    }
    out
}

/// The readings NEWS2 is built from.
pub const NEWS2_METRICS: [Metric; 7] = [
    Metric::RespiratoryRate,
    Metric::Spo2,
    Metric::OnOxygen,
    Metric::BpSystolic,
    Metric::HeartRate,
    Metric::Consciousness,
    Metric::BodyTemperature,
];

impl Engine {
    pub fn new(settings: Settings, default_plan: Arc<CarePlan>) -> Engine {
        Engine {
            settings,
            default_plan,
            patients: HashMap::new(),
        }
    }

    /// How far back each metric must be replayed to rebuild a patient's state under `plan`
    /// (besides the latest reading of every metric the plan reads, which is always replayed).
    /// Trend rules' earlier days come from [`Engine::trend_days`] instead.
    pub fn lookback_ms(plan: &CarePlan) -> HashMap<Metric, i64> {
        let mut out: HashMap<Metric, i64> = HashMap::new();
        for rule in &plan.rules {
            let span = match rule {
                // Enough to see a run of for_s and where it began.
                Rule::Threshold { for_s, .. } => i64::from(*for_s) * 1000 + 60_000,
                Rule::Rate { window_h, .. } => (window_h * 3_600_000.0) as i64,
                // Only the latest readings matter.
                Rule::News2 { .. } | Rule::Missing { .. } => 0,
                // The latest reading's day, reading by reading (the days before it: buckets).
                Rule::Drift { .. } | Rule::Macd { .. } => trend::days::DAY_MS,
                Rule::Forecast { .. } => trend::forecast::LOOKBACK_MS,
            };
            for m in rule_metrics(rule) {
                let e = out.entry(m).or_insert(0);
                *e = (*e).max(span);
            }
        }
        out
    }

    /// How many whole UTC days before the day of its latest reading each metric's trend rules
    /// keep: a rebuild gives them those days as 5-minute buckets ([`Engine::replay_buckets`])
    /// before replaying the latest day's readings.
    pub fn trend_days(plan: &CarePlan) -> HashMap<Metric, u32> {
        let mut out: HashMap<Metric, u32> = HashMap::new();
        for (m, days) in plan.rules.iter().filter_map(trend::days_kept) {
            let e = out.entry(m).or_insert(0);
            *e = (*e).max(days);
        }
        out
    }

    /// Replays a rebuild's 5-minute buckets of `metric` (readings taken before `before_ms`, the
    /// start of its latest reading's day; oldest first) into the patient's trend rules, which
    /// then skip the readings taken before `before_ms` when they are replayed. Each rule is
    /// judged once, as of the newest bucket, without effects (so a clinician's resolution
    /// replayed next finds the condition as it was). Call before [`Engine::replay`].
    pub fn replay_buckets(
        &mut self,
        patient: &PatientId,
        metric: Metric,
        before_ms: i64,
        buckets: &[Bucket],
    ) {
        let Some(p) = self.patients.get_mut(patient) else {
            return;
        };
        let Some(indices) = p.by_metric.get(&metric) else {
            return;
        };
        for &i in indices {
            let rule = &p.plan.rules[i];
            let Some(st) = p.rules.get_mut(rule.id()) else {
                continue;
            };
            if let Some(v) = trend::add_buckets(rule, &mut st.trend, before_ms, buckets) {
                let (holding, message) = verdict(rule, st, v);
                apply(
                    patient,
                    rule,
                    st,
                    holding,
                    message,
                    None,
                    before_ms,
                    false,
                    &mut Vec::new(),
                );
            }
        }
    }

    /// Starts watching a patient (with the default plan when `plan` is `None`). Rules that
    /// watch for silence count from `now`.
    pub fn add_patient(&mut self, patient: PatientId, plan: Option<Arc<CarePlan>>, now: i64) {
        let custom = plan.is_some();
        let plan = plan.unwrap_or_else(|| self.default_plan.clone());
        let rules = plan
            .rules
            .iter()
            .map(|r| {
                (
                    r.id().to_owned(),
                    RuleState {
                        watch_from: now,
                        ..RuleState::default()
                    },
                )
            })
            .collect();
        self.patients.insert(
            patient,
            PatientState {
                by_metric: index_by_metric(&plan),
                plan,
                custom,
                rules,
                latest: HashMap::new(),
            },
        );
    }

    /// Restores an unresolved alert read back from the record (at start-up, after
    /// [`Engine::add_patient`]). An alert whose rule is no longer in the plan is resolved at
    /// the next tick.
    pub fn restore(&mut self, a: OpenAlert) {
        let Some(p) = self.patients.get_mut(&a.patient) else {
            return;
        };
        let st = p.rules.entry(a.rule_id).or_default();
        st.alert = Some(Track {
            severity: a.severity,
            acknowledged: a.acknowledged,
            escalations: a.escalations,
            escalated_ms: a.since_ms,
            clear_since: None,
        });
        // Until a reading says otherwise, the condition is taken to hold: an alert is not
        // resolved merely because Vigil restarted.
        st.holding = Some(a.severity);
        st.tripped = None;
    }

    /// Replays a stored reading to rebuild state: no effects, and the rule's alert state is
    /// left as restored. Call [`Engine::settle`] after the last one.
    pub fn replay(&mut self, obs: &Observation) {
        let _ = self.observe(obs, obs.time_ms, false);
    }

    /// After a replay, alerts whose condition holds but which have no alert (the gateway
    /// stopped between storing a reading and recording its alert) are opened now.
    pub fn settle(&mut self, now: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (pid, p) in &mut self.patients {
            for rule in p.plan.rules.iter() {
                let Some(st) = p.rules.get_mut(rule.id()) else {
                    continue;
                };
                if let (Some(sev), None, false) = (st.holding, &st.alert, st.silenced) {
                    let trigger = st.tripped.take();
                    st.alert = Some(Track {
                        severity: sev,
                        acknowledged: false,
                        escalations: 0,
                        escalated_ms: now,
                        clear_since: None,
                    });
                    effects.push(Effect::Open {
                        patient: pid.clone(),
                        rule_id: rule.id().to_owned(),
                        kind: kind_of(rule),
                        severity: sev,
                        message: format!(
                            "{} (found on restart)",
                            describe(rule, st, &p.latest, now)
                        ),
                        trigger,
                        at_ms: now,
                    });
                }
            }
        }
        effects
    }

    /// Takes over the patients `other` watches, with their state (an engine rebuilt for some
    /// patients joining the one that watches the others).
    pub fn absorb(&mut self, other: Engine) {
        self.patients.extend(other.patients);
    }

    /// Stops watching the patients `keep` says no to, forgetting their state.
    pub fn retain_patients(&mut self, mut keep: impl FnMut(&PatientId) -> bool) {
        self.patients.retain(|p, _| keep(p));
    }

    /// How many patients the engine watches.
    pub fn patient_count(&self) -> usize {
        self.patients.len()
    }

    /// What a trend rule keeps (tests compare a rebuilt engine with a live one).
    #[cfg(test)]
    pub(crate) fn trend_state(&self, patient: &PatientId, rule_id: &str) -> Option<&trend::State> {
        self.patients
            .get(patient)?
            .rules
            .get(rule_id)?
            .trend
            .as_ref()
    }

    /// Whether the engine watches this patient.
    pub fn has_patient(&self, patient: &PatientId) -> bool {
        self.patients.contains_key(patient)
    }

    /// The care plan in force for a patient and whether it is the patient's own.
    pub fn plan(&self, patient: &PatientId) -> Option<(Arc<CarePlan>, bool)> {
        self.patients
            .get(patient)
            .map(|p| (p.plan.clone(), p.custom))
    }

    /// Feeds one input; returns what must happen.
    pub fn handle(&mut self, input: Input<'_>, now: i64) -> Vec<Effect> {
        match input {
            Input::Observation(o) => self.observe(o, now, true),
            Input::Tick => self.tick(now),
            Input::PlanChanged { patient, plan } => self.change_plan(patient, plan, now),
            Input::Acknowledged { patient, rule_id } => {
                if let Some(t) = self.track(patient, rule_id) {
                    t.acknowledged = true;
                }
                Vec::new()
            }
            Input::Resolved { patient, rule_id } => {
                if let Some(st) = self
                    .patients
                    .get_mut(patient)
                    .and_then(|p| p.rules.get_mut(rule_id))
                {
                    st.alert = None;
                    st.silenced = st.holding.is_some();
                }
                Vec::new()
            }
        }
    }

    fn track(&mut self, patient: &PatientId, rule_id: &str) -> Option<&mut Track> {
        self.patients
            .get_mut(patient)?
            .rules
            .get_mut(rule_id)?
            .alert
            .as_mut()
    }

    fn change_plan(
        &mut self,
        patient: &PatientId,
        plan: Option<Arc<CarePlan>>,
        now: i64,
    ) -> Vec<Effect> {
        let Some(p) = self.patients.get_mut(patient) else {
            self.add_patient(patient.clone(), plan, now);
            return Vec::new();
        };
        p.custom = plan.is_some();
        let plan = plan.unwrap_or_else(|| self.default_plan.clone());
        let mut effects = Vec::new();
        let mut rules = HashMap::new();
        for rule in &plan.rules {
            let old = p.rules.remove(rule.id());
            let unchanged = p
                .plan
                .rules
                .iter()
                .any(|r| r.id() == rule.id() && r == rule);
            let st = match old {
                Some(st) if unchanged => st,
                // A changed rule starts afresh but keeps its alert; the next readings decide.
                Some(st) => RuleState {
                    alert: st.alert,
                    holding: st.holding,
                    watch_from: now,
                    ..RuleState::default()
                },
                None => RuleState {
                    watch_from: now,
                    ..RuleState::default()
                },
            };
            rules.insert(rule.id().to_owned(), st);
        }
        for (rule_id, st) in p.rules.drain() {
            if st.alert.is_some() {
                effects.push(Effect::Resolve {
                    patient: patient.clone(),
                    rule_id,
                    reason: "its rule was removed from the care plan".into(),
                    at_ms: now,
                });
            }
        }
        p.rules = rules;
        p.by_metric = index_by_metric(&plan);
        p.plan = plan;
        effects
    }

    fn observe(&mut self, o: &Observation, now: i64, emit: bool) -> Vec<Effect> {
        let Some(p) = self.patients.get_mut(&o.patient_id) else {
            return Vec::new();
        };
        let newest = match p.latest.get(&o.metric) {
            Some((t, _)) => o.time_ms >= *t,
            None => true,
        };
        if newest {
            p.latest.insert(o.metric, (o.time_ms, o.value));
        }
        let mut effects = Vec::new();
        let Some(indices) = p.by_metric.get(&o.metric) else {
            return effects;
        };
        for &i in indices {
            let rule = &p.plan.rules[i];
            let Some(st) = p.rules.get_mut(rule.id()) else {
                continue;
            };
            if st.last_ms.is_some_and(|t| o.time_ms < t) {
                continue;
            }
            let (holding, message) = if trend::is_trend(rule) {
                let Some(v) = trend::observe(rule, &mut st.trend, o.time_ms, o.value) else {
                    continue;
                };
                verdict(rule, st, v)
            } else {
                judge(rule, st, o, &p.latest)
            };
            st.last_ms = Some(o.time_ms);
            apply(
                &o.patient_id,
                rule,
                st,
                holding,
                message,
                Some(o),
                now,
                emit,
                &mut effects,
            );
        }
        effects
    }

    fn tick(&mut self, now: i64) -> Vec<Effect> {
        let s = self.settings;
        let mut effects = Vec::new();
        for (pid, p) in &mut self.patients {
            let plan = p.plan.clone();
            for rule in plan.rules.iter() {
                let Some(st) = p.rules.get_mut(rule.id()) else {
                    continue;
                };
                // Conditions that time alone changes.
                match rule {
                    Rule::Missing {
                        metric, after_s, ..
                    } => {
                        let last = Metric::parse(metric)
                            .and_then(|m| p.latest.get(&m))
                            .map_or(st.watch_from, |(t, _)| *t);
                        let silent = now - last >= i64::from(*after_s) * 1000;
                        let holding = silent.then(|| rule_severity(rule));
                        let message = format!(
                            "no {metric} reading for {}",
                            fmt_duration((now - last) / 1000)
                        );
                        apply(
                            pid,
                            rule,
                            st,
                            holding,
                            message,
                            None,
                            now,
                            true,
                            &mut effects,
                        );
                    }
                    Rule::News2 { .. } if st.holding.is_some() => {
                        let (holding, message) = news2_judge(rule, &p.latest, now);
                        if holding.is_none() {
                            apply(pid, rule, st, None, message, None, now, true, &mut effects);
                        }
                    }
                    _ => {}
                }
                // Timers of the rule's alert.
                let Some(t) = st.alert.as_mut() else {
                    continue;
                };
                if let Some(clear) = t.clear_since
                    && now - clear >= i64::from(s.auto_resolve_s) * 1000
                {
                    st.alert = None;
                    effects.push(Effect::Resolve {
                        patient: pid.clone(),
                        rule_id: rule.id().to_owned(),
                        reason: format!(
                            "the condition has been clear for {}",
                            fmt_duration((now - clear) / 1000)
                        ),
                        at_ms: now,
                    });
                    continue;
                }
                if !t.acknowledged
                    && t.escalations < s.max_escalations
                    && now - t.escalated_ms >= i64::from(s.escalate_after_s) * 1000
                {
                    t.escalations += 1;
                    t.escalated_ms = now;
                    effects.push(Effect::Escalate {
                        patient: pid.clone(),
                        rule_id: rule.id().to_owned(),
                        level: t.escalations,
                        at_ms: now,
                    });
                }
            }
            // Rules removed from the plan while the gateway was down.
            let orphans: Vec<String> = p
                .rules
                .iter()
                .filter(|(id, st)| {
                    st.alert.is_some() && !p.plan.rules.iter().any(|r| r.id() == id.as_str())
                })
                .map(|(id, _)| id.clone())
                .collect();
            for rule_id in orphans {
                p.rules.remove(&rule_id);
                effects.push(Effect::Resolve {
                    patient: pid.clone(),
                    rule_id,
                    reason: "its rule is no longer in the care plan".into(),
                    at_ms: now,
                });
            }
        }
        effects
    }
}

fn kind_of(rule: &Rule) -> &'static str {
    match rule {
        Rule::Threshold { .. } => "threshold",
        Rule::Rate { .. } => "rate",
        Rule::News2 { .. } => "news2",
        Rule::Missing { .. } => "missing",
        Rule::Drift { .. } => "drift",
        Rule::Macd { .. } => "macd",
        Rule::Forecast { .. } => "forecast",
    }
}

fn rule_severity(rule: &Rule) -> Severity {
    match rule {
        Rule::Threshold { severity, .. }
        | Rule::Rate { severity, .. }
        | Rule::Missing { severity, .. }
        | Rule::Drift { severity, .. }
        | Rule::Macd { severity, .. }
        | Rule::Forecast { severity, .. } => *severity,
        Rule::News2 { severity, .. } => severity.unwrap_or(Severity::High),
    }
}

/// A trend rule's verdict as the condition it makes: one that cannot be judged stays as it was.
fn verdict(rule: &Rule, st: &RuleState, v: Verdict) -> (Option<Severity>, String) {
    match v {
        Verdict::Holds(message) => (Some(rule_severity(rule)), message),
        Verdict::Clear => (None, String::new()),
        Verdict::Unknown(message) => (st.holding, message),
    }
}

/// A sentence for a rule as it stands (used when an alert is found on restart).
fn describe(rule: &Rule, st: &RuleState, latest: &HashMap<Metric, (i64, f64)>, now: i64) -> String {
    match rule {
        Rule::Threshold {
            metric, op, value, ..
        } => {
            let m = Metric::parse(metric);
            let last = m.and_then(|m| latest.get(&m)).map(|(_, v)| *v);
            format!(
                "{metric} {} {}{}{}",
                op_str(*op),
                fmt_value(*value),
                m.map(unit_suffix).unwrap_or_default(),
                last.map(|v| format!(" (latest {})", fmt_value(v)))
                    .unwrap_or_default()
            )
        }
        Rule::Rate {
            metric, window_h, ..
        } => format!(
            "{metric} changed too fast within {} h",
            fmt_value(*window_h)
        ),
        Rule::News2 { .. } => news2_judge(rule, latest, now).1,
        Rule::Missing { metric, .. } => format!("no recent {metric} reading"),
        Rule::Drift { .. } | Rule::Macd { .. } | Rule::Forecast { .. } => {
            trend::describe(rule, st.trend.as_ref())
        }
    }
}

/// Judges a rule on a new reading: whether its condition holds (at which severity) and a
/// sentence saying why.
fn judge(
    rule: &Rule,
    st: &mut RuleState,
    o: &Observation,
    latest: &HashMap<Metric, (i64, f64)>,
) -> (Option<Severity>, String) {
    let unit = unit_suffix(o.metric);
    match rule {
        Rule::Threshold {
            metric,
            op,
            value,
            for_s,
            hysteresis,
            severity,
            ..
        } => {
            let sentence = |run: i64| {
                let lasted = if *for_s > 0 {
                    format!(" for {}", fmt_duration(run / 1000))
                } else {
                    String::new()
                };
                format!(
                    "{metric} {} {}{unit}{lasted} (latest {}{unit})",
                    op_str(*op),
                    fmt_value(*value),
                    fmt_value(o.value)
                )
            };
            if op.holds(o.value, *value) {
                let start = *st.run_start.get_or_insert(o.time_ms);
                let run = o.time_ms - start;
                if run >= i64::from(*for_s) * 1000 {
                    return (Some(*severity), sentence(run));
                }
                // Meeting the limit, not yet for long enough: a holding condition goes on.
                return (
                    st.holding,
                    st.holding.map(|_| sentence(run)).unwrap_or_default(),
                );
            }
            st.run_start = None;
            let h = hysteresis.unwrap_or(0.0);
            let band = match op {
                Op::Lt | Op::Le => *value + h,
                Op::Gt | Op::Ge => *value - h,
            };
            let within_band = h > 0.0 && op.holds(o.value, band);
            let holding = if within_band { st.holding } else { None };
            // The sentence only matters while the condition holds (it is then the alert's).
            (holding, holding.map(|_| sentence(0)).unwrap_or_default())
        }
        Rule::Rate {
            metric,
            rise,
            fall,
            window_h,
            severity,
            ..
        } => {
            let window_ms = (window_h * 3_600_000.0) as i64;
            let w = &mut st.window;
            while w.front().is_some_and(|(t, _)| *t < o.time_ms - window_ms) {
                w.pop_front();
            }
            // The reference is the window's lowest (rise) or highest (fall) reading before
            // this one; the deque keeps only readings that can still be that extreme.
            let reference = w.front().map(|(_, v)| *v);
            let rising = rise.is_some();
            while w
                .back()
                .is_some_and(|(_, v)| if rising { *v >= o.value } else { *v <= o.value })
            {
                w.pop_back();
            }
            w.push_back((o.time_ms, o.value));
            let Some(reference) = reference else {
                return (None, String::new());
            };
            let (change, limit, word) = match (rise, fall) {
                (Some(r), _) => (o.value - reference, *r, "rose"),
                (None, Some(f)) => (reference - o.value, *f, "fell"),
                (None, None) => return (None, String::new()),
            };
            if change < limit - 1e-9 {
                return (None, String::new());
            }
            let message = format!(
                "{metric} {word} {}{unit} within {} h (from {} to {}{unit})",
                fmt_value(change),
                fmt_value(*window_h),
                fmt_value(reference),
                fmt_value(o.value)
            );
            // Compare with a small tolerance so 80.0 → 82.0 counts as a 2.0 rise.
            ((change >= limit - 1e-9).then_some(*severity), message)
        }
        // Fresh relative to the reading being judged (an uploaded backlog is judged as it was
        // charted); the ticks judge staleness against `now`.
        Rule::News2 { .. } => news2_judge(rule, latest, o.time_ms),
        // Trend rules are judged in `observe`, by `trend`; missing at the ticks.
        _ => (None, String::new()),
    }
}

fn news2_judge(
    rule: &Rule,
    latest: &HashMap<Metric, (i64, f64)>,
    now: i64,
) -> (Option<Severity>, String) {
    let Rule::News2 {
        freshness_s,
        spo2_scale,
        severity: cap,
        ..
    } = rule
    else {
        return (None, String::new());
    };
    let fresh = |m: Metric| {
        latest
            .get(&m)
            .filter(|(t, _)| now - *t <= i64::from(*freshness_s) * 1000)
            .map(|(_, v)| *v)
    };
    let inputs = Inputs {
        respiratory_rate: fresh(Metric::RespiratoryRate),
        spo2: fresh(Metric::Spo2),
        on_oxygen: fresh(Metric::OnOxygen).map(|v| v >= 0.5),
        bp_systolic: fresh(Metric::BpSystolic),
        heart_rate: fresh(Metric::HeartRate),
        consciousness: fresh(Metric::Consciousness).map(|v| v.round().clamp(0.0, 4.0) as u8),
        body_temperature: fresh(Metric::BodyTemperature),
    };
    let score = news2::score(&inputs, *spo2_scale);
    let level = if score.total >= 7 {
        Some(Severity::High)
    } else if score.total >= 5 || score.any_three {
        Some(Severity::Medium)
    } else {
        None
    };
    let level = match (level, cap) {
        (Some(l), Some(c)) => Some(l.min(*c)),
        (l, _) => l,
    };
    if level.is_none() {
        return (None, String::new());
    }
    let scale = match spo2_scale {
        Spo2Scale::One => "",
        Spo2Scale::Two => ", SpO2 scale 2",
    };
    let incomplete = if score.missing > 0 {
        format!(
            ", {} of 7 parameters without a recent reading",
            score.missing
        )
    } else {
        String::new()
    };
    let message = format!(
        "NEWS2 {}{}{scale}{incomplete}",
        score.total,
        if score.any_three && score.total < 7 {
            " with a single parameter scoring 3"
        } else {
            ""
        }
    );
    (level, message)
}

/// Moves a rule's alert on from a new judgement.
#[allow(clippy::too_many_arguments)]
fn apply(
    patient: &PatientId,
    rule: &Rule,
    st: &mut RuleState,
    holding: Option<Severity>,
    message: String,
    trigger: Option<&Observation>,
    now: i64,
    emit: bool,
    effects: &mut Vec<Effect>,
) {
    st.holding = holding;
    let Some(sev) = holding else {
        st.silenced = false;
        st.tripped = None;
        if let Some(t) = st.alert.as_mut() {
            t.clear_since.get_or_insert(now);
        }
        return;
    };
    if st.silenced {
        return;
    }
    match st.alert.as_mut() {
        Some(t) => {
            t.clear_since = None;
            if sev > t.severity {
                t.severity = sev;
                if emit {
                    effects.push(Effect::Raise {
                        patient: patient.clone(),
                        rule_id: rule.id().to_owned(),
                        severity: sev,
                        message,
                        at_ms: now,
                    });
                }
            }
        }
        None if emit => {
            st.alert = Some(Track {
                severity: sev,
                acknowledged: false,
                escalations: 0,
                escalated_ms: now,
                clear_since: None,
            });
            effects.push(Effect::Open {
                patient: patient.clone(),
                rule_id: rule.id().to_owned(),
                kind: kind_of(rule),
                severity: sev,
                message,
                trigger: trigger.cloned(),
                at_ms: now,
            });
        }
        // Replaying: the condition holds but no alert was restored; `settle` opens it.
        None => {
            if st.tripped.is_none() {
                st.tripped = trigger.cloned();
            }
        }
    }
}

#[cfg(test)]
mod tests;
