//! The live feed's hub: one task turns committed readings, alert events and device status
//! changes into JSON once, stamps each with its patient's care team as it is now, and fans the
//! batches out to every connection (a broadcast that never waits, so nothing here can slow
//! ingest). The WebSocket side (`super::live`) only filters and writes; the hub is kept apart
//! from it so that the application state can hold the hub without depending on the handler.
//!
//! With several instances on PostgreSQL the hub takes every instance's events, not only this
//! one's: readings from the store's feed of everyone's commits, alerts and device changes from
//! the database's notifications (`docs/scaling.md`, "One live feed").

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use serde_json::json;
use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};
use tokio_util::sync::CancellationToken;

use crate::crm::Crm;
use crate::crm::record::Alert;
use crate::domain::{Metric, format_rfc3339};
use crate::pg::listen::{Heard, LIVE_CHANNEL, recv_some};
use crate::registry::{AccessChange, DeviceStatus, Registry};
use crate::store::Store;

/// How often the hub reads patients' care teams again without an announced change (changes
/// made by another process).
const TEAMS_REFRESH: Duration = Duration::from_secs(15);
/// Batches the hub holds for a slow connection before it is dropped.
const HUB_CAPACITY: usize = 512;

/// One event, serialised once for every connection.
#[derive(Clone)]
pub(crate) struct LiveItem {
    pub(super) patient_id: Arc<str>,
    /// The patient's care team when the event was made: who may see it.
    pub(super) team: Option<Arc<str>>,
    /// For a reading: its metric (a newer reading of the same patient's metric replaces it).
    pub(super) metric: Option<Metric>,
    pub(super) json: Utf8Bytes,
}

/// The fan-out point of the live feed; cheap to clone.
#[derive(Clone)]
pub struct LiveHub {
    pub(super) tx: broadcast::Sender<Arc<[LiveItem]>>,
    pub(super) stop: CancellationToken,
}

impl LiveHub {
    /// A hub with no connection yet; `stop` ends it and closes every connection.
    pub fn new(stop: CancellationToken) -> LiveHub {
        let (tx, _) = broadcast::channel(HUB_CAPACITY);
        LiveHub { tx, stop }
    }

    /// Closes every live connection (code 1001) and ends [`LiveHub::run`].
    pub fn stop(&self) {
        self.stop.cancel();
    }

    fn send(&self, items: Vec<LiveItem>) {
        if !items.is_empty() {
            // No receiver is fine: nobody is watching.
            let _ = self.tx.send(items.into());
        }
    }

    /// Turns commits, alert events and device changes into live events until stopped.
    ///
    /// With several instances on PostgreSQL (`heard`: this instance's notifications from the
    /// database, see `pg::listen`), every instance's: readings from the store's feed of
    /// everyone's commits, alert events and device changes from the notifications their
    /// transactions sent (a gap in listening tells the clients to reload). Otherwise this
    /// instance's own, as they commit.
    pub async fn run(
        self,
        store: Store,
        crm: Crm,
        registry: Registry,
        heard: Option<broadcast::Receiver<Heard>>,
    ) {
        let cluster = heard.is_some();
        let mut heard = heard;
        let mut listened = false;
        let mut readings = store.subscribe_everyone();
        let mut alerts = (!cluster).then(|| crm.subscribe());
        let mut devices = (!cluster).then(|| registry.subscribe_devices());
        let mut access = registry.subscribe_access();
        let mut teams = Teams::new(registry.clone());
        teams.reload().await;
        let mut refresh = tokio::time::interval(TEAMS_REFRESH);
        refresh.tick().await;
        loop {
            // A patient's move is taken in before any event received after it.
            loop {
                match access.try_recv() {
                    Ok(change) => teams.apply(change),
                    Err(TryRecvError::Lagged(_)) => teams.reload().await,
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            let items = tokio::select! {
                () = self.stop.cancelled() => return,
                change = access.recv() => {
                    match change {
                        Ok(change) => teams.apply(change),
                        Err(RecvError::Lagged(_)) => teams.reload().await,
                        Err(RecvError::Closed) => return,
                    }
                    continue;
                }
                _ = refresh.tick() => {
                    teams.reload().await;
                    continue;
                }
                r = readings.recv() => match r {
                    Ok(batch) => observation_items(&batch.observations),
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "live feed skipped commits it could not keep up with");
                        vec![resync()]
                    }
                    Err(RecvError::Closed) => return,
                },
                h = recv_some(&mut heard) => match h {
                    Ok(Heard::Listening) => {
                        // Listening again after a gap: what was sent meanwhile is lost.
                        if !std::mem::replace(&mut listened, true) {
                            continue;
                        }
                        vec![resync()]
                    }
                    Ok(Heard::Notification { channel, payload }) if channel == LIVE_CHANNEL => {
                        match from_notification(&registry, &payload).await {
                            Some(item) => vec![item],
                            None => continue,
                        }
                    }
                    Ok(Heard::Notification { .. }) => continue,
                    Err(RecvError::Lagged(_)) => vec![resync()],
                    Err(RecvError::Closed) => return,
                },
                a = recv_some(&mut alerts) => match a {
                    Ok(e) => vec![alert_item(e.event_type, &e.alert)],
                    Err(RecvError::Lagged(_)) => vec![resync()],
                    Err(RecvError::Closed) => return,
                },
                d = recv_some(&mut devices) => match d {
                    Ok(d) => vec![device_item(&d)],
                    Err(RecvError::Lagged(_)) => vec![resync()],
                    Err(RecvError::Closed) => return,
                },
            };
            self.send(teams.stamp(items).await);
        }
    }
}

fn alert_item(event_type: &str, alert: &Alert) -> LiveItem {
    LiveItem {
        patient_id: alert.patient_id.as_str().into(),
        team: None,
        metric: None,
        json: json!({"type": "alert", "event": event_type, "alert": alert})
            .to_string()
            .into(),
    }
}

fn device_item(d: &DeviceStatus) -> LiveItem {
    LiveItem {
        patient_id: d.patient_id.as_str().into(),
        team: None,
        metric: None,
        json: json!({
            "type": "device_status", "patient_id": d.patient_id,
            "device_id": d.device_id, "online": d.online, "battery": d.battery,
            "last_seen": format_rfc3339(d.last_seen_ms),
        })
        .to_string()
        .into(),
    }
}

/// The live event a notification from the database announces (`alert <id> <event type>`, the
/// alert read as it is now; `device <status>`); `None` for one this build cannot read or an
/// alert no longer there.
async fn from_notification(registry: &Registry, payload: &str) -> Option<LiveItem> {
    let (kind, rest) = payload.split_once(' ')?;
    match kind {
        "alert" => {
            let (id, event_type) = rest.split_once(' ')?;
            match registry.alert(id.to_owned()).await {
                Ok(Some(alert)) => Some(alert_item(event_type, &alert)),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "live feed: an announced alert not read");
                    None
                }
            }
        }
        "device" => serde_json::from_str::<DeviceStatus>(rest)
            .ok()
            .map(|d| device_item(&d)),
        _ => None,
    }
}

/// Each patient's care team as the registry has it now, for stamping events.
struct Teams {
    registry: Registry,
    of: HashMap<Arc<str>, Option<Arc<str>>>,
}

impl Teams {
    fn new(registry: Registry) -> Teams {
        Teams {
            registry,
            of: HashMap::new(),
        }
    }

    /// Reads every patient's team again; on failure the old map stays (and the next change
    /// or refresh tries again).
    async fn reload(&mut self) {
        match self.registry.patients().await {
            Ok(all) => {
                self.of = all
                    .into_iter()
                    .map(|p| {
                        let team = p.details.care_team.map(Arc::from);
                        (Arc::from(p.id.as_str()), team)
                    })
                    .collect();
            }
            Err(e) => tracing::warn!(error = %e, "live feed: care teams not read again"),
        }
    }

    /// Takes in an announced patient's move (or creation); other changes are the connections'.
    fn apply(&mut self, change: AccessChange) {
        if let AccessChange::Patient { id, team } = change {
            self.of.insert(id.into(), team.map(Arc::from));
        }
    }

    /// Stamps each event with its patient's team. A patient not in the map (created a moment
    /// ago) is looked up; one that cannot be found is shown to admins only.
    async fn stamp(&mut self, mut items: Vec<LiveItem>) -> Vec<LiveItem> {
        for it in &mut items {
            if it.patient_id.is_empty() {
                continue;
            }
            if !self.of.contains_key(&it.patient_id) {
                let team = match crate::domain::PatientId::parse(&it.patient_id) {
                    Ok(id) => self.registry.patient_team(id).await.ok().flatten(),
                    Err(_) => None,
                };
                self.of.insert(it.patient_id.clone(), team.map(Arc::from));
            }
            it.team = self.of.get(&it.patient_id).cloned().flatten();
        }
        items
    }
}

/// Tells every client it missed events and should reload what it shows.
fn resync() -> LiveItem {
    LiveItem {
        patient_id: "".into(),
        team: None,
        metric: None,
        json: Utf8Bytes::from_static(r#"{"type":"resync"}"#),
    }
}

/// The newest reading of each patient's metric in one commit, as live events.
fn observation_items(obs: &[crate::domain::Observation]) -> Vec<LiveItem> {
    let mut newest: HashMap<(&str, Metric), &crate::domain::Observation> = HashMap::new();
    for o in obs {
        let e = newest.entry((o.patient_id.as_str(), o.metric)).or_insert(o);
        if o.time_ms >= e.time_ms {
            *e = o;
        }
    }
    let mut out: Vec<&crate::domain::Observation> = newest.into_values().collect();
    out.sort_by_key(|o| o.time_ms);
    out.into_iter()
        .map(|o| LiveItem {
            patient_id: o.patient_id.as_str().into(),
            team: None,
            metric: Some(o.metric),
            json: json!({
                "type": "observation", "patient_id": o.patient_id, "device_id": o.device_id,
                "metric": o.metric, "value": o.value, "unit": o.metric.unit(),
                "time": format_rfc3339(o.time_ms),
            })
            .to_string()
            .into(),
        })
        .collect()
}

/// Batches a connection found waiting, as one: a reading superseded by a newer one of the same
/// patient's metric is left out (the dashboard shows the newest anyway); everything else is
/// kept, in order. A client that fell a little behind catches up with less to write.
pub(super) fn coalesce(batches: &[Arc<[LiveItem]>]) -> Vec<LiveItem> {
    let mut seen: std::collections::HashSet<(&str, Metric)> = std::collections::HashSet::new();
    let mut out: Vec<LiveItem> = Vec::new();
    for it in batches.iter().rev().flat_map(|b| b.iter().rev()) {
        if let Some(m) = it.metric
            && !seen.insert((&*it.patient_id, m))
        {
            continue;
        }
        out.push(it.clone());
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DeviceId, Observation, PatientId};

    #[test]
    fn one_event_per_patient_metric_per_commit_the_newest() {
        let o = |p: &str, m: Metric, t: i64, v: f64| Observation {
            patient_id: PatientId::parse(p).unwrap(),
            device_id: DeviceId::parse("d1").unwrap(),
            metric: m,
            value: v,
            time_ms: t,
        };
        let items = observation_items(&[
            o("p1", Metric::HeartRate, 2, 71.0),
            o("p1", Metric::HeartRate, 1, 70.0),
            o("p1", Metric::Spo2, 1, 97.0),
            o("p2", Metric::HeartRate, 1, 60.0),
        ]);
        assert_eq!(items.len(), 3);
        let hr: Vec<&LiveItem> = items
            .iter()
            .filter(|i| &*i.patient_id == "p1" && i.json.as_str().contains("heart_rate"))
            .collect();
        assert_eq!(hr.len(), 1);
        assert!(hr[0].json.as_str().contains("71"));
    }

    #[test]
    fn waiting_batches_keep_the_newest_reading_of_each_metric_and_every_other_event() {
        let obs = |p: &str, m: Metric, v: f64| LiveItem {
            patient_id: p.into(),
            team: None,
            metric: Some(m),
            json: format!("{p}:{m}:{v}").into(),
        };
        let alert = LiveItem {
            patient_id: "p1".into(),
            team: None,
            metric: None,
            json: "alert".into(),
        };
        let batches: Vec<Arc<[LiveItem]>> = vec![
            vec![
                obs("p1", Metric::HeartRate, 70.0),
                obs("p1", Metric::Spo2, 97.0),
            ]
            .into(),
            vec![alert.clone(), obs("p2", Metric::HeartRate, 60.0)].into(),
            vec![obs("p1", Metric::HeartRate, 71.0), alert].into(),
        ];
        let merged = coalesce(&batches);
        let out: Vec<&str> = merged.iter().map(|i| i.json.as_str()).collect();
        assert_eq!(
            out,
            [
                "p1:spo2:97",
                "alert",
                "p2:heart_rate:60",
                "p1:heart_rate:71",
                "alert"
            ]
        );
    }
}
