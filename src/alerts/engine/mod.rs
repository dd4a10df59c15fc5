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
//! One episode, one alert. Threshold rules on one measurement and one side form an episode
//! ([`episode_key`]): a blood-pressure cuff's systolic and diastolic limits, glucose's low and
//! very low. Their alert is opened by the first of them to hold, carries that rule's id, and
//! is raised when a more severe one holds too (as NEWS2 medium → high is); it clears when
//! none holds. Every other rule is an episode of its own. While an episode's alert is open or
//! acknowledged, it raises no other. It resolves by itself once its condition has stayed clear for
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
use super::words;
use crate::domain::{DisplayUnits, Metric, Observation, PatientId};

/// Engine settings (config `[alerts]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// How long a condition must stay clear before its alert resolves by itself.
    pub auto_resolve_s: u32,
    /// How long an open alert may go unacknowledged before it escalates (again).
    pub escalate_after_s: u32,
    /// How many times an alert escalates at most.
    pub max_escalations: u32,
    /// The units messages write values in (`[clinic]`).
    pub units: DisplayUnits,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            auto_resolve_s: 900,
            escalate_after_s: 900,
            max_escalations: 3,
            units: DisplayUnits::default(),
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
    /// The alert's rule: the one of its episode that opened it.
    rule_id: String,
    severity: Severity,
    acknowledged: bool,
    escalations: u32,
    /// Opened or last escalated.
    escalated_ms: i64,
    /// The condition has been clear since then.
    clear_since: Option<i64>,
}

/// One episode's alert: the rules of an episode share it ([`episode_key`]).
#[derive(Debug, Clone, Default)]
struct Episode {
    alert: Option<Track>,
    /// Resolved by a clinician while holding: no new alert until the condition clears.
    silenced: bool,
    /// Replaying: the reading that made the condition hold with no alert open, which
    /// `settle` gives the alert it opens as its trigger.
    tripped: Option<Observation>,
}

#[derive(Debug, Clone, Default)]
struct RuleState {
    /// The condition, as of the latest judgement (`None` while it does not hold).
    holding: Option<Severity>,
    /// The sentence of the latest judgement that held.
    message: String,
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

/// What a plan's rules are looked up by, made once per plan.
struct PlanIndex {
    /// For each metric, the plan's rules that read it (indices into `plan.rules`).
    by_metric: HashMap<Metric, Vec<usize>>,
    /// Each rule's episode, by index.
    keys: Vec<String>,
    /// Each episode's rules, in plan order.
    members: HashMap<String, Vec<usize>>,
}

impl PlanIndex {
    fn of(plan: &CarePlan) -> PlanIndex {
        let mut by_metric: HashMap<Metric, Vec<usize>> = HashMap::new();
        let mut members: HashMap<String, Vec<usize>> = HashMap::new();
        let mut keys = Vec::with_capacity(plan.rules.len());
        for (i, rule) in plan.rules.iter().enumerate() {
            for m in rule_metrics(rule) {
                by_metric.entry(m).or_default().push(i);
            }
            let key = episode_key(rule);
            members.entry(key.clone()).or_default().push(i);
            keys.push(key);
        }
        PlanIndex {
            by_metric,
            keys,
            members,
        }
    }
}

struct PatientState {
    plan: Arc<CarePlan>,
    index: Arc<PlanIndex>,
    custom: bool,
    rules: HashMap<String, RuleState>,
    episodes: HashMap<String, Episode>,
    /// The latest reading of each metric: (measurement time, value).
    latest: HashMap<Metric, (i64, f64)>,
}

impl PatientState {
    /// The episode an alert of `rule_id` belongs to: the one whose alert carries that rule, else
    /// the rule's own episode in the plan.
    fn episode_of(&self, rule_id: &str) -> Option<String> {
        self.episodes
            .iter()
            .find(|(_, e)| e.alert.as_ref().is_some_and(|t| t.rule_id == rule_id))
            .map(|(k, _)| k.clone())
            .or_else(|| {
                let i = self.plan.rules.iter().position(|r| r.id() == rule_id)?;
                Some(self.index.keys[i].clone())
            })
    }

    /// An episode's condition: the highest severity any of its rules holds, and the rule
    /// holding it (`prefer` when it is among the highest).
    fn episode_holding(&self, key: &str, prefer: Option<usize>) -> Option<(Severity, usize)> {
        let mut best: Option<(Severity, usize)> = None;
        for &j in self.index.members.get(key)? {
            let Some(sev) = self
                .rules
                .get(self.plan.rules[j].id())
                .and_then(|r| r.holding)
            else {
                continue;
            };
            let better = match best {
                None => true,
                Some((b, _)) => sev > b || (sev == b && prefer == Some(j)),
            };
            if better {
                best = Some((sev, j));
            }
        }
        best
    }

    /// The alert's sentence for an episode as it stands: the holding rule's own, except for
    /// blood pressure, which says both values of the latest measurement and every limit past
    /// at the episode's severity.
    fn episode_message(&self, key: &str, top: usize) -> String {
        if !key.starts_with(BP_EPISODE) {
            let rule = &self.plan.rules[top];
            return self
                .rules
                .get(rule.id())
                .map(|r| r.message.clone())
                .unwrap_or_default();
        }
        let sev = self
            .rules
            .get(self.plan.rules[top].id())
            .and_then(|r| r.holding);
        let mut limits: [Option<(Op, f64)>; 2] = [None, None];
        for &j in self.index.members.get(key).into_iter().flatten() {
            let rule = &self.plan.rules[j];
            let Rule::Threshold {
                metric, op, value, ..
            } = rule
            else {
                continue;
            };
            if self.rules.get(rule.id()).and_then(|r| r.holding) != sev {
                continue;
            }
            let side = usize::from(Metric::parse(metric) == Some(Metric::BpDiastolic));
            // Of two limits on one side, the one nearer normal (the first past).
            let nearer = match limits[side] {
                None => true,
                Some((_, v)) => match op {
                    Op::Gt | Op::Ge => *value < v,
                    Op::Lt | Op::Le => *value > v,
                },
            };
            if nearer {
                limits[side] = Some((*op, *value));
            }
        }
        // The measurement: the newest of the two readings, and the other only if taken with it.
        let sys = self.latest.get(&Metric::BpSystolic).copied();
        let dia = self.latest.get(&Metric::BpDiastolic).copied();
        let at = sys.map(|(t, _)| t).max(dia.map(|(t, _)| t));
        let of = |r: Option<(i64, f64)>| r.filter(|(t, _)| Some(*t) == at).map(|(_, v)| v);
        words::blood_pressure(of(sys), of(dia), limits[0], limits[1])
    }
}

/// The episode of blood-pressure limits (systolic and diastolic on one side).
const BP_EPISODE: &str = "blood_pressure:";

/// Which episode a rule's condition belongs to. Threshold rules on one measurement and one
/// side share one: "blood_pressure:high" for systolic and diastolic limits above, "glucose:low"
/// for glucose low and very low. `:` cannot be in a rule id, so these never meet one. Every
/// other rule is its own episode, keyed by its id.
pub fn episode_key(rule: &Rule) -> String {
    match rule {
        Rule::Threshold { metric, op, .. } => {
            let group = match Metric::parse(metric) {
                Some(Metric::BpSystolic | Metric::BpDiastolic) => "blood_pressure",
                _ => metric.as_str(),
            };
            let side = match op {
                Op::Lt | Op::Le => "low",
                Op::Gt | Op::Ge => "high",
            };
            format!("{group}:{side}")
        }
        _ => rule.id().to_owned(),
    }
}

/// The alert engine for every patient.
pub struct Engine {
    settings: Settings,
    default_plan: Arc<CarePlan>,
    patients: HashMap<PatientId, PatientState>,
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

/// What moved a rule's condition: which patient and rule, and the reading that did it.
struct Judged<'a> {
    patient: &'a PatientId,
    index: usize,
    holding: Option<Severity>,
    message: String,
    trigger: Option<&'a Observation>,
}

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
        let units = self.settings.units;
        let Some(p) = self.patients.get_mut(patient) else {
            return;
        };
        let (plan, index) = (p.plan.clone(), p.index.clone());
        let Some(indices) = index.by_metric.get(&metric) else {
            return;
        };
        for &i in indices {
            let rule = &plan.rules[i];
            let Some(st) = p.rules.get_mut(rule.id()) else {
                continue;
            };
            if let Some(v) = trend::add_buckets(rule, &mut st.trend, before_ms, buckets, units) {
                let (holding, message) = verdict(rule, st, v);
                let judged = Judged {
                    patient,
                    index: i,
                    holding,
                    message,
                    trigger: None,
                };
                apply(p, judged, before_ms, false, &mut Vec::new());
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
                index: Arc::new(PlanIndex::of(&plan)),
                plan,
                custom,
                rules,
                episodes: HashMap::new(),
                latest: HashMap::new(),
            },
        );
    }

    /// Restores an unresolved alert read back from the record (at start-up, after
    /// [`Engine::add_patient`]). An alert whose rule is no longer in the plan is resolved at
    /// the next tick, and so is a second alert of one episode (from before episodes shared
    /// one): the first restored stays.
    pub fn restore(&mut self, a: OpenAlert) {
        let Some(p) = self.patients.get_mut(&a.patient) else {
            return;
        };
        let key = match p.plan.rules.iter().position(|r| r.id() == a.rule_id) {
            Some(i) => p.index.keys[i].clone(),
            None => a.rule_id.clone(),
        };
        let key = match p.episodes.get(&key) {
            Some(e) if e.alert.is_some() => format!("{key}{SUPERSEDED}{}", a.rule_id),
            _ => key,
        };
        // Until a reading says otherwise, the condition is taken to hold: an alert is not
        // resolved merely because Vigil restarted.
        if let Some(st) = p.rules.get_mut(&a.rule_id) {
            st.holding = Some(a.severity);
        }
        let ep = p.episodes.entry(key).or_default();
        ep.alert = Some(Track {
            rule_id: a.rule_id,
            severity: a.severity,
            acknowledged: a.acknowledged,
            escalations: a.escalations,
            escalated_ms: a.since_ms,
            clear_since: None,
        });
        ep.tripped = None;
    }

    /// Replays a stored reading to rebuild state: no effects, and the rule's alert state is
    /// left as restored. Call [`Engine::settle`] after the last one.
    pub fn replay(&mut self, obs: &Observation) {
        let _ = self.observe(obs, obs.time_ms, false);
    }

    /// After a replay, episodes whose condition holds but which have no alert (the gateway
    /// stopped between storing a reading and recording its alert) are opened now.
    pub fn settle(&mut self, now: i64) -> Vec<Effect> {
        let units = self.settings.units;
        let mut effects = Vec::new();
        for (pid, p) in &mut self.patients {
            let (plan, index) = (p.plan.clone(), p.index.clone());
            for (i, key) in index.keys.iter().enumerate() {
                if index.members.get(key).and_then(|m| m.first()) != Some(&i) {
                    continue; // the episode's first rule speaks for it
                }
                let Some((sev, top)) = p.episode_holding(key, None) else {
                    continue;
                };
                if p.episodes
                    .get(key)
                    .is_some_and(|e| e.alert.is_some() || e.silenced)
                {
                    continue;
                }
                let rule = &plan.rules[top];
                let mut message = p.episode_message(key, top);
                if message.is_empty()
                    && let Some(st) = p.rules.get(rule.id())
                {
                    message = describe(rule, st, &p.latest, now, units);
                }
                let ep = p.episodes.entry(key.clone()).or_default();
                ep.alert = Some(Track {
                    rule_id: rule.id().to_owned(),
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
                    message: format!("{message} (found on restart)"),
                    trigger: ep.tripped.take(),
                    at_ms: now,
                });
            }
        }
        effects
    }

    /// Rewords the blood-pressure alerts among a batch's effects once all its readings are in:
    /// a cuff's systolic and diastolic arrive as two readings, and the alert the first opens
    /// should say both. Call once after feeding a batch's readings, before writing its effects.
    pub fn complete_messages(&self, effects: &mut [Effect]) {
        for fx in effects.iter_mut() {
            let (patient, rule_id, message, at) = match fx {
                Effect::Open {
                    patient,
                    rule_id,
                    message,
                    trigger,
                    ..
                } => (
                    patient,
                    rule_id,
                    message,
                    trigger.as_ref().map(|t| t.time_ms),
                ),
                Effect::Raise {
                    patient,
                    rule_id,
                    message,
                    ..
                } => (patient, rule_id, message, None),
                _ => continue,
            };
            let Some(p) = self.patients.get(patient) else {
                continue;
            };
            let Some(key) = p.episode_of(rule_id).filter(|k| k.starts_with(BP_EPISODE)) else {
                continue;
            };
            // An alert opened by an earlier measurement of the batch keeps its own words.
            let newest = [Metric::BpSystolic, Metric::BpDiastolic]
                .iter()
                .filter_map(|m| p.latest.get(m).map(|(t, _)| *t))
                .max();
            if at.is_some() && at != newest {
                continue;
            }
            if let Some((_, top)) = p.episode_holding(&key, None) {
                *message = p.episode_message(&key, top);
            }
        }
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
                if let Some(p) = self.patients.get_mut(patient)
                    && let Some(key) = p.episode_of(rule_id)
                    && let Some(t) = p.episodes.get_mut(&key).and_then(|e| e.alert.as_mut())
                {
                    t.acknowledged = true;
                }
                Vec::new()
            }
            Input::Resolved { patient, rule_id } => {
                if let Some(p) = self.patients.get_mut(patient)
                    && let Some(key) = p.episode_of(rule_id)
                {
                    let holding = p.episode_holding(&key, None).is_some();
                    let ep = p.episodes.entry(key).or_default();
                    ep.alert = None;
                    ep.silenced = holding;
                }
                Vec::new()
            }
        }
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
        let index = PlanIndex::of(&plan);
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
                // A changed rule starts afresh but keeps its condition (its episode keeps its
                // alert); the next readings decide.
                Some(st) => RuleState {
                    holding: st.holding,
                    message: st.message,
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
        let mut episodes = HashMap::new();
        let mut gone: Vec<(String, Episode)> = p
            .episodes
            .drain()
            .filter_map(|(key, ep)| {
                if index.members.contains_key(&key) {
                    episodes.insert(key, ep);
                    None
                } else {
                    Some((key, ep))
                }
            })
            .collect();
        gone.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, ep) in gone {
            if let Some(t) = ep.alert {
                effects.push(Effect::Resolve {
                    patient: patient.clone(),
                    rule_id: t.rule_id,
                    reason: "its rule was removed from the care plan".into(),
                    at_ms: now,
                });
            }
        }
        p.rules = rules;
        p.episodes = episodes;
        p.index = Arc::new(index);
        p.plan = plan;
        effects
    }

    fn observe(&mut self, o: &Observation, now: i64, emit: bool) -> Vec<Effect> {
        let units = self.settings.units;
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
        let (plan, index) = (p.plan.clone(), p.index.clone());
        let Some(indices) = index.by_metric.get(&o.metric) else {
            return effects;
        };
        let mut moved: Vec<(&String, usize)> = Vec::new();
        for &i in indices {
            let rule = &plan.rules[i];
            let Some(st) = p.rules.get_mut(rule.id()) else {
                continue;
            };
            if st.last_ms.is_some_and(|t| o.time_ms < t) {
                continue;
            }
            let (holding, message) = if trend::is_trend(rule) {
                let Some(v) = trend::observe(rule, &mut st.trend, o.time_ms, o.value, units) else {
                    continue;
                };
                verdict(rule, st, v)
            } else {
                judge(rule, st, o, &p.latest, units)
            };
            st.last_ms = Some(o.time_ms);
            let j = Judged {
                patient: &o.patient_id,
                index: i,
                holding,
                message,
                trigger: Some(o),
            };
            judged(p, j);
            // Each episode moves once, after all its rules that read this metric are judged
            // (a glucose of 50 is very low and low at once: one alert, opened high).
            match moved.iter_mut().find(|(k, _)| *k == &index.keys[i]) {
                Some(m) => m.1 = i,
                None => moved.push((&index.keys[i], i)),
            }
        }
        for (_, i) in moved {
            move_episode(p, &o.patient_id, i, Some(o), now, emit, &mut effects);
        }
        effects
    }

    fn tick(&mut self, now: i64) -> Vec<Effect> {
        let s = self.settings;
        let mut effects = Vec::new();
        for (pid, p) in &mut self.patients {
            let (plan, index) = (p.plan.clone(), p.index.clone());
            // Conditions that time alone changes.
            for (i, rule) in plan.rules.iter().enumerate() {
                let Some(st) = p.rules.get(rule.id()) else {
                    continue;
                };
                let (holding, message) = match rule {
                    Rule::Missing {
                        metric, after_s, ..
                    } => {
                        let Some(m) = Metric::parse(metric) else {
                            continue;
                        };
                        let last = p.latest.get(&m).map_or(st.watch_from, |(t, _)| *t);
                        let silent = now - last >= i64::from(*after_s) * 1000;
                        (
                            silent.then(|| rule_severity(rule)),
                            words::missing(m, (now - last) / 1000),
                        )
                    }
                    Rule::News2 { .. } if st.holding.is_some() => {
                        let (holding, message) = news2_judge(rule, &p.latest, now);
                        if holding.is_some() {
                            continue;
                        }
                        (holding, message)
                    }
                    _ => continue,
                };
                let judged = Judged {
                    patient: pid,
                    index: i,
                    holding,
                    message,
                    trigger: None,
                };
                apply(p, judged, now, true, &mut effects);
            }
            // The timers of each episode's alert, in plan order, then alerts whose episode
            // left the plan while the gateway was down (or a second of one episode).
            let mut keys: Vec<&String> = Vec::new();
            for key in &index.keys {
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            let mut orphans: Vec<String> = p
                .episodes
                .iter()
                .filter(|(k, e)| e.alert.is_some() && !index.members.contains_key(*k))
                .map(|(k, _)| k.clone())
                .collect();
            orphans.sort();
            for key in keys {
                let Some(ep) = p.episodes.get_mut(key) else {
                    continue;
                };
                let Some(t) = ep.alert.as_mut() else {
                    continue;
                };
                if let Some(clear) = t.clear_since
                    && now - clear >= i64::from(s.auto_resolve_s) * 1000
                {
                    let rule_id = t.rule_id.clone();
                    ep.alert = None;
                    effects.push(Effect::Resolve {
                        patient: pid.clone(),
                        rule_id,
                        reason: format!(
                            "the condition has been clear for {}",
                            words::duration((now - clear) / 1000)
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
                        rule_id: t.rule_id.clone(),
                        level: t.escalations,
                        at_ms: now,
                    });
                }
            }
            for key in orphans {
                let Some(t) = p.episodes.remove(&key).and_then(|e| e.alert) else {
                    continue;
                };
                let reason = if key.contains(SUPERSEDED) {
                    "another alert of the same episode stays open"
                } else {
                    "its rule is no longer in the care plan"
                };
                effects.push(Effect::Resolve {
                    patient: pid.clone(),
                    rule_id: t.rule_id,
                    reason: reason.into(),
                    at_ms: now,
                });
            }
        }
        effects
    }
}

/// Marks a restored alert's episode key when its episode already has one ([`Engine::restore`]).
const SUPERSEDED: &str = "#superseded:";

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

/// A sentence for a rule as it stands, when no judgement left one (an alert found on restart).
fn describe(
    rule: &Rule,
    st: &RuleState,
    latest: &HashMap<Metric, (i64, f64)>,
    now: i64,
    units: DisplayUnits,
) -> String {
    match rule {
        Rule::Threshold {
            metric, op, value, ..
        } => match Metric::parse(metric) {
            Some(m) => match latest.get(&m) {
                Some((_, last)) => words::threshold(units, m, *op, *value, *last, None),
                None => format!(
                    "{} {} {}",
                    words::metric_name(m),
                    words::relation(*op),
                    units.value(m, *value)
                ),
            },
            None => format!("{metric} past its limit"),
        },
        Rule::Rate {
            metric,
            rise,
            window_h,
            ..
        } => {
            let name = match Metric::parse(metric) {
                Some(m) => words::metric_name(m),
                None => metric.as_str(),
            };
            let way = if rise.is_some() { "up" } else { "down" };
            format!("{name} {way} too fast within {window_h} h")
        }
        Rule::News2 { .. } => news2_judge(rule, latest, now).1,
        Rule::Missing { metric, .. } => match Metric::parse(metric) {
            Some(m) => words::missing_unknown(m),
            None => format!("No recent {metric} reading"),
        },
        Rule::Drift { .. } | Rule::Macd { .. } | Rule::Forecast { .. } => {
            trend::describe(rule, st.trend.as_ref(), units)
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
    units: DisplayUnits,
) -> (Option<Severity>, String) {
    match rule {
        Rule::Threshold {
            op,
            value,
            for_s,
            hysteresis,
            severity,
            ..
        } => {
            let sentence = |run: i64| {
                let lasted = (*for_s > 0).then_some(run / 1000);
                words::threshold(units, o.metric, *op, *value, o.value, lasted)
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
            let (change, limit) = match (rise, fall) {
                (Some(r), _) => (o.value - reference, *r),
                (None, Some(f)) => (reference - o.value, *f),
                (None, None) => return (None, String::new()),
            };
            // Compare with a small tolerance so 80.0 → 82.0 counts as a 2.0 rise.
            if change < limit - 1e-9 {
                return (None, String::new());
            }
            let message = words::rate(units, o.metric, rising, reference, o.value, *window_h);
            (Some(*severity), message)
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
    let inputs = Inputs::from_values(NEWS2_METRICS.map(fresh));
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
    (level, words::news2(&score, *spo2_scale == Spo2Scale::Two))
}

/// Moves a rule's condition on from a new judgement, and with it its episode's alert.
fn apply(p: &mut PatientState, j: Judged<'_>, now: i64, emit: bool, effects: &mut Vec<Effect>) {
    let (patient, index, trigger) = (j.patient, j.index, j.trigger);
    judged(p, j);
    move_episode(p, patient, index, trigger, now, emit, effects);
}

/// Records a rule's new judgement (its episode moves on in [`move_episode`]).
fn judged(p: &mut PatientState, j: Judged<'_>) {
    let plan = p.plan.clone();
    if let Some(st) = p.rules.get_mut(plan.rules[j.index].id()) {
        st.holding = j.holding;
        if j.holding.is_some() {
            st.message = j.message;
        }
    }
}

/// Moves the episode of rule `index` on from its rules' conditions: its alert opened when the
/// episode starts to hold, raised when it holds more severely, its clearing clock started when
/// none of its rules holds any more. `index` is the rule judged last (it speaks for the episode
/// among rules holding at one severity).
fn move_episode(
    p: &mut PatientState,
    patient: &PatientId,
    index: usize,
    trigger: Option<&Observation>,
    now: i64,
    emit: bool,
    effects: &mut Vec<Effect>,
) {
    let (plan, plan_index) = (p.plan.clone(), p.index.clone());
    let key = &plan_index.keys[index];
    let Some((sev, top)) = p.episode_holding(key, Some(index)) else {
        if let Some(ep) = p.episodes.get_mut(key) {
            ep.silenced = false;
            ep.tripped = None;
            if let Some(t) = ep.alert.as_mut() {
                t.clear_since.get_or_insert(now);
            }
        }
        return;
    };
    let (silenced, current) = p.episodes.get(key).map_or((false, None), |e| {
        (e.silenced, e.alert.as_ref().map(|t| t.severity))
    });
    if silenced {
        return;
    }
    match current {
        Some(was) => {
            let message = (emit && sev > was).then(|| p.episode_message(key, top));
            let Some(t) = p.episodes.get_mut(key).and_then(|e| e.alert.as_mut()) else {
                return;
            };
            t.clear_since = None;
            if sev > was {
                t.severity = sev;
            }
            if let Some(message) = message {
                effects.push(Effect::Raise {
                    patient: patient.clone(),
                    rule_id: t.rule_id.clone(),
                    severity: sev,
                    message,
                    at_ms: now,
                });
            }
        }
        None if emit => {
            let message = p.episode_message(key, top);
            let rule = &plan.rules[top];
            let ep = p.episodes.entry(key.clone()).or_default();
            ep.alert = Some(Track {
                rule_id: rule.id().to_owned(),
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
            let ep = p.episodes.entry(key.clone()).or_default();
            if ep.tripped.is_none() {
                ep.tripped = trigger.cloned();
            }
        }
    }
}

#[cfg(test)]
mod messages;
#[cfg(test)]
mod tests;
