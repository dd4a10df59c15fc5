//! The patient's CRM record as the registry stores it ([`super::storage::RecordStore`]): care
//! plans, alerts, notes and the timeline of everything that happened, and the events an alert's
//! changes queue in the outbox. Domain types and pure rules only — both backends write the same
//! rows from them; the SQL is in `sqlite/record.rs` and `postgres/record.rs`.
//!
//! An alert, its timeline entry and its outbox rows are written in one transaction, so a crash
//! can lose none of them without losing all (and then the engine's restart finds the condition
//! again). Each backend guarantees one unresolved alert per patient and rule (a partial unique
//! index), whatever the engine believes, also when two instances open it at once.

use serde::Serialize;
use serde_json::{Value, json};

use super::error::RegistryError;
use crate::alerts::rules::{CarePlan, Severity};
use crate::domain::{Observation, PatientId, format_rfc3339};

/// Where outbox events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sink {
    Fhir,
    Webhook,
}

impl Sink {
    pub fn as_str(self) -> &'static str {
        match self {
            Sink::Fhir => "fhir",
            Sink::Webhook => "webhook",
        }
    }

    /// Whether the sink takes this event type (FHIR has nothing to say about an
    /// acknowledgement).
    pub fn takes(self, event_type: &str) -> bool {
        match self {
            Sink::Webhook => true,
            Sink::Fhir => event_type != "alert.acknowledged",
        }
    }
}

/// An alert's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Open,
    Acknowledged,
    Resolved,
}

impl AlertStatus {
    pub fn parse(s: &str) -> Option<AlertStatus> {
        match s {
            "open" => Some(AlertStatus::Open),
            "acknowledged" => Some(AlertStatus::Acknowledged),
            "resolved" => Some(AlertStatus::Resolved),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// How a severity is stored.
pub fn severity_str(s: Severity) -> &'static str {
    match s {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
    }
}

/// A stored severity (anything unknown reads as low).
pub fn parse_severity(s: &str) -> Severity {
    match s {
        "high" => Severity::High,
        "medium" => Severity::Medium,
        _ => Severity::Low,
    }
}

/// The reading that tipped an alert's condition over.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Trigger {
    pub device_id: String,
    pub metric: String,
    pub value: f64,
    pub unit: String,
    pub time: String,
}

impl Trigger {
    pub fn of(o: &Observation) -> Trigger {
        Trigger {
            device_id: o.device_id.as_str().to_owned(),
            metric: o.metric.name().to_owned(),
            value: o.value,
            unit: o.metric.unit().to_owned(),
            time: format_rfc3339(o.time_ms),
        }
    }
}

/// An alert as the API and the outward events show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub id: String,
    pub patient_id: String,
    pub rule_id: String,
    pub kind: String,
    pub severity: Severity,
    pub status: AlertStatus,
    pub opened_at: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    pub escalations: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolve_note: Option<String>,
    /// The user the alert is assigned to (claimed by, or given to by a colleague).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_at: Option<String>,
    /// Snoozed until then: out of the inbox's active list, back at the top when it passes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snoozed_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snooze_reason: Option<String>,
}

/// What a clinician does to an alert in the inbox besides acknowledging and resolving it.
#[derive(Debug, Clone, PartialEq)]
pub enum Triage {
    /// Assigns the alert to a user (`None`: to nobody).
    Assign { to: Option<String> },
    /// Snoozes the alert until `until_ms` with a reason, acknowledging it if it is open (a
    /// nurse who snoozes has seen it: escalation stops); `None` ends a snooze.
    Snooze {
        until_ms: Option<i64>,
        reason: Option<String>,
    },
}

impl Triage {
    /// The timeline kind and audit action it is written as.
    pub fn kind(&self) -> &'static str {
        match self {
            Triage::Assign { .. } => "alert.assigned",
            Triage::Snooze { .. } => "alert.snoozed",
        }
    }
}

/// A filter over alerts.
#[derive(Debug, Clone, Default)]
pub struct AlertQuery {
    pub status: Option<AlertStatus>,
    pub patient_id: Option<PatientId>,
    /// Only patients of these care teams (a clinician's view); `None` for all.
    pub teams: Option<Vec<String>>,
    pub limit: usize,
}

/// One outward event, as written to the outbox and delivered.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub event_type: &'static str,
    pub patient_id: String,
    pub time_ms: i64,
    pub alert: Alert,
}

impl Event {
    /// The Standard Webhooks body: `{"type", "timestamp", "data"}`.
    pub fn body(&self) -> String {
        json!({
            "type": self.event_type,
            "timestamp": format_rfc3339(self.time_ms),
            "data": self.alert,
        })
        .to_string()
    }
}

/// Why acknowledging or resolving was refused.
#[derive(Debug, thiserror::Error)]
pub enum AlertActionError {
    #[error("alert {0} not found")]
    NotFound(String),
    #[error("alert {0} is already resolved")]
    AlreadyResolved(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// A new alert id: `alr_` and 16 random bytes in hex.
pub fn new_alert_id() -> Result<String, RegistryError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| RegistryError::Db(format!("no randomness: {e}")))?;
    Ok(format!("alr_{}", hex::encode(b)))
}

/// What an alert's change writes besides the alert: the timeline entry's data (a JSON object,
/// as text) and the event queued for every sink that [`Sink::takes`] it.
pub fn emitted(
    alert: &Alert,
    event_type: &'static str,
    suffix: &str,
    time_ms: i64,
    extra: Value,
) -> (String, Event) {
    let mut data = json!({
        "alert_id": alert.id,
        "rule_id": alert.rule_id,
        "severity": alert.severity,
        "message": alert.message,
    });
    if let (Value::Object(d), Value::Object(x)) = (&mut data, extra) {
        d.extend(x);
    }
    let event = Event {
        id: format!("evt_{}_{}{suffix}", &alert.id[4..], &event_type[6..]),
        event_type,
        patient_id: alert.patient_id.clone(),
        time_ms,
        alert: alert.clone(),
    };
    (data.to_string(), event)
}

/// An entry of a patient's timeline as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineRow {
    pub id: i64,
    pub time_ms: i64,
    pub kind: String,
    /// A JSON object, as text.
    pub data: String,
}

impl TimelineRow {
    /// The entry as the API shows it: `{"id","time","kind", ...data}` (data that is not JSON
    /// shows as nothing).
    pub fn to_json(&self) -> Value {
        let data = serde_json::from_str(&self.data).unwrap_or(Value::Null);
        let mut entry =
            json!({"id": self.id, "time": format_rfc3339(self.time_ms), "kind": self.kind});
        if let (Value::Object(e), Value::Object(d)) = (&mut entry, data) {
            for (k, v) in d {
                e.entry(k).or_insert(v);
            }
        }
        entry
    }
}

/// A clinician's note's timeline data.
pub fn note_data(by: &str, text: &str) -> String {
    json!({"by": by, "text": text}).to_string()
}

/// The note an acknowledgement by snoozing carries.
pub fn snooze_note(reason: Option<&str>) -> String {
    match reason {
        Some(r) => format!("snoozed: {r}"),
        None => "snoozed".to_owned(),
    }
}

/// The timeline data of a triage action on `alert` by `by` (no outward event: assignment and
/// snoozing are the inbox's business, not the EHR's).
pub fn triage_data(alert: &Alert, triage: &Triage, by: &str) -> String {
    let mut data = json!({
        "alert_id": alert.id,
        "rule_id": alert.rule_id,
        "message": alert.message,
        "by": by,
    });
    let extra = match triage {
        Triage::Assign { to } => json!({"to": to}),
        Triage::Snooze { until_ms, reason } => json!({
            "until": until_ms.map(format_rfc3339),
            "reason": reason,
        }),
    };
    if let (Value::Object(d), Value::Object(x)) = (&mut data, extra) {
        d.extend(x);
    }
    data.to_string()
}

/// The timeline data of a care plan's change by `by` to a plan of these rules.
pub fn plan_changed_data(by: &str, rules: &[&str]) -> String {
    json!({"by": by, "rules": rules}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            id: "alr_00112233445566778899aabbccddeeff".into(),
            patient_id: "p1".into(),
            rule_id: "spo2".into(),
            kind: "threshold".into(),
            severity: Severity::High,
            status: AlertStatus::Open,
            opened_at: format_rfc3339(0),
            message: "low".into(),
            trigger: None,
            escalations: 0,
            acknowledged_at: None,
            acknowledged_by: None,
            ack_note: None,
            resolved_at: None,
            resolved_by: None,
            resolve_note: None,
            assigned_to: None,
            assigned_at: None,
            snoozed_until: None,
            snooze_reason: None,
        }
    }

    #[test]
    fn a_plan_notice_keeps_its_plan_as_stored_and_an_unsaid_one_asks_again() {
        let own = crate::alerts::rules::CarePlan::default_plan();
        for plan in [
            None,
            Some(own),
            Some(crate::alerts::rules::CarePlan { rules: Vec::new() }),
        ] {
            let notice = EngineNotice::PlanChanged(CommittedPlan::Is(plan));
            let (kind, rule) = notice.parts();
            let text = notice.plan_text().unwrap();
            assert!(text.is_some());
            let back = EngineNotice::from_parts(kind, rule.map(str::to_owned), text.as_deref());
            assert_eq!(back, Some(notice));
        }
        // From an older build (no plan), or a plan this build cannot read: read it again.
        for text in [None, Some("{\"rules\": 7}")] {
            assert_eq!(
                EngineNotice::from_parts("plan", None, text),
                Some(EngineNotice::PlanChanged(CommittedPlan::Unsaid))
            );
        }
        let ack = EngineNotice::Acknowledged {
            rule_id: "r".into(),
        };
        assert_eq!(ack.plan_text().unwrap(), None);
    }

    #[test]
    fn an_event_is_named_by_its_alert_type_and_suffix_and_its_entry_holds_the_extra_fields() {
        let (data, event) = emitted(&alert(), "alert.escalated", "_2", 7, json!({"level": 2}));
        assert_eq!(event.id, "evt_00112233445566778899aabbccddeeff_escalated_2");
        assert_eq!((event.time_ms, event.patient_id.as_str()), (7, "p1"));
        let data: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(data["level"], 2);
        assert_eq!(data["rule_id"], "spo2");
        assert_eq!(data["severity"], "high");
    }

    #[test]
    fn fhir_takes_every_event_but_an_acknowledgement() {
        assert!(!Sink::Fhir.takes("alert.acknowledged"));
        assert!(Sink::Fhir.takes("alert.opened"));
        assert!(Sink::Webhook.takes("alert.acknowledged"));
    }

    #[test]
    fn a_timeline_row_shows_its_data_without_overriding_its_own_fields() {
        let row = TimelineRow {
            id: 3,
            time_ms: 0,
            kind: "note".into(),
            data: json!({"by": "nina", "id": 99}).to_string(),
        };
        let v = row.to_json();
        assert_eq!(
            (v["id"].clone(), v["by"].clone()),
            (json!(3), json!("nina"))
        );
        assert_eq!(v["kind"], "note");
    }
}

/// A person's change the alert engine must hear of: on PostgreSQL, whichever instance made it
/// writes it with the change, and the instance holding the patient's alert partition reads it
/// in commit order among the partition's readings ([`super::storage::RecordStore::engine_notices`]).
#[derive(Debug, Clone, PartialEq)]
pub enum EngineNotice {
    /// The plan the patient is judged by may have changed: their own plan set, an enrollment
    /// begun or ended, a discharge or a readmission.
    PlanChanged(CommittedPlan),
    /// The rule's alert was acknowledged.
    Acknowledged { rule_id: String },
    /// The rule's alert was resolved by a person.
    Resolved { rule_id: String },
}

/// The plan a [`EngineNotice::PlanChanged`] carries: the plan for the engine as its change
/// committed it ([`super::plan_in_force::PlanInForce::for_engine`]), so that readings committed
/// before a later change are judged by this one, not by whatever is in force when the engine
/// reads the notice.
#[derive(Debug, Clone, PartialEq)]
pub enum CommittedPlan {
    /// The plan for the engine (`None`: the default plan).
    Is(Option<CarePlan>),
    /// Not said (a notice written by an older build, or one this build cannot read): the
    /// engine reads the plan in force again.
    Unsaid,
}

/// How [`CommittedPlan::Is`]`(None)` is stored (any other text is a plan's JSON).
const DEFAULT_PLAN_TEXT: &str = "default";

impl EngineNotice {
    /// Its `kind` as stored, and the rule it names.
    pub fn parts(&self) -> (&'static str, Option<&str>) {
        match self {
            EngineNotice::PlanChanged(_) => ("plan", None),
            EngineNotice::Acknowledged { rule_id } => ("acknowledged", Some(rule_id)),
            EngineNotice::Resolved { rule_id } => ("resolved", Some(rule_id)),
        }
    }

    /// The plan it carries as stored: "default", a plan's JSON, or nothing.
    pub fn plan_text(&self) -> Result<Option<String>, RegistryError> {
        match self {
            EngineNotice::PlanChanged(CommittedPlan::Is(None)) => {
                Ok(Some(DEFAULT_PLAN_TEXT.to_owned()))
            }
            EngineNotice::PlanChanged(CommittedPlan::Is(Some(plan))) => serde_json::to_string(plan)
                .map(Some)
                .map_err(|e| RegistryError::Db(e.to_string())),
            _ => Ok(None),
        }
    }

    /// From its `kind`, rule and plan as stored; `None` for a kind this build does not know.
    pub fn from_parts(
        kind: &str,
        rule_id: Option<String>,
        plan: Option<&str>,
    ) -> Option<EngineNotice> {
        match (kind, rule_id) {
            ("plan", _) => Some(EngineNotice::PlanChanged(match plan {
                None => CommittedPlan::Unsaid,
                Some(DEFAULT_PLAN_TEXT) => CommittedPlan::Is(None),
                Some(json) => serde_json::from_str(json)
                    .map(|p| CommittedPlan::Is(Some(p)))
                    .unwrap_or(CommittedPlan::Unsaid),
            })),
            ("acknowledged", Some(rule_id)) => Some(EngineNotice::Acknowledged { rule_id }),
            ("resolved", Some(rule_id)) => Some(EngineNotice::Resolved { rule_id }),
            _ => None,
        }
    }
}

/// An [`EngineNotice`] as read back: the patient and the transaction that wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct Noticed {
    pub tx: i64,
    pub patient: PatientId,
    pub notice: EngineNotice,
}
