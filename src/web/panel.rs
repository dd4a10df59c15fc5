//! The monitoring panel's data: `GET /panel` (a tile per patient) and
//! `GET /patients/{id}/series` (a chart's points, downsampled in the store).
//!
//! A tile needs each patient's latest value of every vital and a sparkline of the last hours.
//! Reading those from the store for 500 patients at every page load would scan millions of
//! rows, so [`PanelCache`] keeps them in memory: warmed from the store at start, then kept
//! current from the store's commit feed. It holds only derived, display-only data; the store
//! stays the truth, and a cache that falls behind the feed warms again from it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::auth::{Principal, check_patient};
use super::error::ApiError;
use super::extract::{ApiResult, audit_line, patient_id, time_param};
use super::state::AppState;
use crate::alerts::rules::Severity;
use crate::crm::record::{AlertQuery, AlertStatus};
use crate::domain::{DeviceId, Metric, PatientId, format_rfc3339, now_ms};
use crate::registry::Registry;
use crate::store::Store;

/// Sparkline bucket width.
pub(crate) const SPARK_BUCKET_MS: i64 = 5 * 60 * 1000;
/// Sparkline span.
pub(crate) const SPARK_SPAN_MS: i64 = 6 * 3600 * 1000;
const SPARK_BUCKETS: usize = (SPARK_SPAN_MS / SPARK_BUCKET_MS) as usize;

/// The metrics a tile draws a sparkline for.
pub(crate) const SPARK_METRICS: [Metric; 7] = [
    Metric::HeartRate,
    Metric::Spo2,
    Metric::BpSystolic,
    Metric::Glucose,
    Metric::BodyWeight,
    Metric::BodyTemperature,
    Metric::RespiratoryRate,
];

#[derive(Debug, Clone, Copy)]
struct Latest {
    time_ms: i64,
    value: f64,
}

#[derive(Debug, Default)]
struct PatientLive {
    latest: BTreeMap<Metric, (Latest, DeviceId)>,
    /// Per metric, (bucket start, sum, count), oldest first.
    spark: HashMap<Metric, VecDeque<(i64, f64, u32)>>,
    /// When each device last sent a reading.
    device_seen: HashMap<DeviceId, i64>,
}

impl PatientLive {
    fn add(&mut self, device: &DeviceId, metric: Metric, time_ms: i64, value: f64, n: u32) {
        let newer = self
            .latest
            .get(&metric)
            .is_none_or(|(l, _)| time_ms >= l.time_ms);
        if newer {
            self.latest
                .insert(metric, (Latest { time_ms, value }, device.clone()));
        }
        let seen = self.device_seen.entry(device.clone()).or_insert(time_ms);
        *seen = (*seen).max(time_ms);
        if !SPARK_METRICS.contains(&metric) {
            return;
        }
        let bucket = time_ms.div_euclid(SPARK_BUCKET_MS) * SPARK_BUCKET_MS;
        let q = self.spark.entry(metric).or_default();
        // Readings arrive nearly in order: find the bucket from the back.
        let pos = q.iter().rposition(|(b, _, _)| *b <= bucket);
        match pos {
            Some(i) if q[i].0 == bucket => {
                q[i].1 += value * f64::from(n);
                q[i].2 += n;
            }
            Some(i) => q.insert(i + 1, (bucket, value * f64::from(n), n)),
            None => q.push_front((bucket, value * f64::from(n), n)),
        }
        while q.len() > SPARK_BUCKETS + 1 {
            q.pop_front();
        }
    }
}

/// Latest values and sparklines of every patient, in memory.
#[derive(Clone, Default)]
pub struct PanelCache {
    inner: Arc<Mutex<HashMap<PatientId, PatientLive>>>,
}

impl PanelCache {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<PatientId, PatientLive>) -> T) -> T {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }

    /// Loads every patient's latest values and sparklines from the store.
    async fn warm(&self, store: &Store, registry: &Registry) -> Result<(), String> {
        let patients = registry.patients().await.map_err(|e| e.to_string())?;
        let now = now_ms();
        let from = (now - SPARK_SPAN_MS).div_euclid(SPARK_BUCKET_MS) * SPARK_BUCKET_MS;
        for p in patients {
            let mut live = PatientLive::default();
            for m in Metric::ALL {
                if let Some(o) = store
                    .latest(p.id.clone(), m)
                    .await
                    .map_err(|e| e.to_string())?
                    && let Ok(d) = DeviceId::parse(&o.device_id)
                {
                    live.add(&d, m, o.time_ms, o.value, 0);
                }
            }
            for m in SPARK_METRICS {
                if !live.latest.contains_key(&m) {
                    continue;
                }
                let series = store
                    .series(p.id.clone(), m, from, from + SPARK_SPAN_MS, SPARK_BUCKETS)
                    .await
                    .map_err(|e| e.to_string())?;
                let device = live.latest[&m].1.clone();
                for pt in series.points {
                    let n = u32::try_from(pt.count).unwrap_or(u32::MAX);
                    live.add(&device, m, pt.time_ms, pt.mean, n);
                }
            }
            // Readings that arrived from the feed while this patient was loading stay: the
            // newest value wins, and a bucket counted twice only sways a sparkline.
            self.with(|all| {
                let e = all.entry(p.id.clone()).or_default();
                for (m, (l, d)) in live.latest {
                    if e.latest.get(&m).is_none_or(|(x, _)| l.time_ms > x.time_ms) {
                        e.latest.insert(m, (l, d));
                    }
                }
                for (m, q) in live.spark {
                    e.spark.entry(m).or_insert(q);
                }
                for (d, t) in live.device_seen {
                    let s = e.device_seen.entry(d).or_insert(t);
                    *s = (*s).max(t);
                }
            });
        }
        Ok(())
    }

    /// Keeps the cache current from the store's commit feed until `stop`.
    pub async fn run(self, store: Store, registry: Registry, stop: CancellationToken) {
        let mut feed = store.subscribe();
        if let Err(e) = self.warm(&store, &registry).await {
            tracing::warn!(error = %e, "panel cache not warmed; tiles fill as readings arrive");
        }
        loop {
            let batch = tokio::select! {
                () = stop.cancelled() => return,
                b = feed.recv() => b,
            };
            match batch {
                Ok(batch) => self.with(|all| {
                    for o in &batch.observations {
                        all.entry(o.patient_id.clone()).or_default().add(
                            &o.device_id,
                            o.metric,
                            o.time_ms,
                            o.value,
                            1,
                        );
                    }
                }),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "panel cache fell behind; warming again");
                    if let Err(e) = self.warm(&store, &registry).await {
                        tracing::warn!(error = %e, "panel cache not warmed");
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}

fn severity_rank(s: Severity) -> u8 {
    match s {
        Severity::High => 3,
        Severity::Medium => 2,
        Severity::Low => 1,
    }
}

/// `GET /panel`: a tile per patient the caller may see. A clinician's answer also names their
/// care teams (`care_teams`: empty when they are on none, so the dashboard can say so rather than
/// show an empty panel); an admin's lists the patients no clinician can see (`unseen`).
pub(super) async fn panel(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Value>> {
    let mut patients = s.registry.patients().await?;
    patients.retain(|x| p.sees_team(x.details.care_team.as_deref()));
    let devices = s.registry.all_devices().await?;
    let alerts = s
        .registry
        .alerts(AlertQuery {
            status: None,
            patient_id: None,
            teams: p.teams.as_ref().map(|t| t.to_vec()),
            limit: 100_000,
        })
        .await?;
    audit_line(&s, &p, "panel.read", None, "panel").await?;
    let now = now_ms();
    let mut worst: HashMap<&str, (&crate::crm::record::Alert, usize)> = HashMap::new();
    for a in alerts.iter().filter(|a| a.status != AlertStatus::Resolved) {
        let e = worst.entry(a.patient_id.as_str()).or_insert((a, 0));
        e.1 += 1;
        if severity_rank(a.severity) > severity_rank(e.0.severity) {
            e.0 = a;
        }
    }
    let mut by_patient: HashMap<&str, Vec<&crate::registry::Device>> = HashMap::new();
    for d in &devices {
        by_patient.entry(d.patient_id.as_str()).or_default().push(d);
    }
    let tiles: Vec<Value> = s.panel.with(|cache| {
        patients
            .iter()
            .map(|pt| {
                let live = cache.get(&pt.id);
                let latest: serde_json::Map<String, Value> = live
                    .map(|l| {
                        l.latest
                            .iter()
                            .map(|(m, (v, d))| {
                                (
                                    m.name().to_owned(),
                                    json!({"value": v.value, "unit": m.unit(),
                                           "time": format_rfc3339(v.time_ms), "device_id": d}),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let spark: serde_json::Map<String, Value> = live
                    .map(|l| {
                        l.spark
                            .iter()
                            .map(|(m, q)| {
                                let pts: Vec<Value> = q
                                    .iter()
                                    .filter(|(b, _, n)| *b >= now - SPARK_SPAN_MS && *n > 0)
                                    .map(|(b, sum, n)| {
                                        // A sparkline needs no more than a tenth.
                                        let mean = (sum / f64::from(*n) * 10.0).round() / 10.0;
                                        json!([b, mean])
                                    })
                                    .collect();
                                (m.name().to_owned(), Value::Array(pts))
                            })
                            .filter(|(_, v)| v.as_array().is_some_and(|a| !a.is_empty()))
                            .collect()
                    })
                    .unwrap_or_default();
                let mut stale = false;
                let devs: Vec<Value> = by_patient
                    .get(pt.id.as_str())
                    .into_iter()
                    .flatten()
                    .filter(|d| !d.revoked)
                    .map(|d| {
                        let seen_reading = live.and_then(|l| l.device_seen.get(&d.id)).copied();
                        let seen_status = d.last_seen.as_deref().and_then(crate::domain::parse_rfc3339);
                        let last_seen = seen_reading.max(seen_status);
                        let interval = s
                            .registry
                            .profiles()
                            .get(&d.profile)
                            .map_or(3600, |p| p.reporting_interval_s);
                        let limit_ms = i64::try_from(interval.saturating_mul(2).max(300))
                            .unwrap_or(i64::MAX)
                            .saturating_mul(1000);
                        let quiet = last_seen.is_some_and(|t| now - t > limit_ms);
                        stale |= quiet;
                        json!({
                            "id": d.id, "profile": d.profile, "online": d.online,
                            "battery": d.battery,
                            "last_seen": last_seen.map(format_rfc3339),
                            "stale": quiet,
                        })
                    })
                    .collect();
                let (alert, open) = worst.get(pt.id.as_str()).map_or((Value::Null, 0), |(a, n)| {
                    (
                        json!({"id": a.id, "severity": a.severity, "status": a.status,
                               "message": a.message, "opened_at": a.opened_at, "rule_id": a.rule_id}),
                        *n,
                    )
                });
                json!({
                    "id": pt.id, "name": pt.name, "care_team": pt.details.care_team,
                    "latest": latest, "alert": alert, "open_alerts": open,
                    "devices": devs, "stale": stale, "spark": spark,
                })
            })
            .collect()
    });
    let mut out = json!({"patients": tiles, "generated_at": format_rfc3339(now)});
    match &p.teams {
        Some(teams) => out["care_teams"] = json!(teams.as_ref()),
        None => {
            let unseen = s.registry.unseen_patients().await?;
            let open: u64 = unseen.iter().map(|u| u.open_alerts).sum();
            out["unseen"] = json!({"patients": unseen, "open_alerts": open});
        }
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SeriesParams {
    metric: String,
    from: Option<String>,
    to: Option<String>,
    points: Option<usize>,
}

/// Points a chart asks for at most.
pub(crate) const MAX_POINTS: usize = 2000;

/// `GET /patients/{id}/series`: one metric over a range, downsampled by the store.
pub(super) async fn series(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<SeriesParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let id = patient_id(&id)?;
    let Query(q) = q?;
    let metric = Metric::parse(&q.metric)
        .ok_or_else(|| ApiError::BadRequest(format!("unknown metric {:?}", q.metric)))?;
    let now = now_ms();
    let to = time_param("to", q.to.as_deref())?.unwrap_or(now);
    let from = time_param("from", q.from.as_deref())?.unwrap_or(to - 24 * 3600 * 1000);
    if from >= to {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    let points = q.points.unwrap_or(600);
    if !(2..=MAX_POINTS).contains(&points) {
        return Err(ApiError::BadRequest(format!(
            "points must be 2 to {MAX_POINTS}"
        )));
    }
    check_patient(&s, &p, &id).await?;
    let series = s.store.series(id.clone(), metric, from, to, points).await?;
    audit_line(
        &s,
        &p,
        "observations.read",
        Some(&id),
        &format!("patient/{id}/series?metric={metric}"),
    )
    .await?;
    let pts: Vec<Value> = series
        .points
        .iter()
        .map(|x| json!([x.time_ms, x.mean, x.min, x.max]))
        .collect();
    Ok(Json(json!({
        "metric": metric, "unit": metric.unit(),
        "from": format_rfc3339(from), "to": format_rfc3339(to),
        "step_ms": series.step_ms, "points": pts,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_buckets_average_and_roll() {
        let mut l = PatientLive::default();
        let d = DeviceId::parse("ox1").unwrap();
        let t0 = 1_000 * SPARK_BUCKET_MS;
        l.add(&d, Metric::HeartRate, t0, 60.0, 1);
        l.add(&d, Metric::HeartRate, t0 + 1000, 80.0, 1);
        l.add(&d, Metric::HeartRate, t0 + SPARK_BUCKET_MS, 90.0, 1);
        // A late reading lands in its own, earlier bucket.
        l.add(&d, Metric::HeartRate, t0 - 1, 50.0, 1);
        let q = &l.spark[&Metric::HeartRate];
        let means: Vec<(i64, f64)> = q.iter().map(|(b, s, n)| (*b, s / f64::from(*n))).collect();
        assert_eq!(
            means,
            vec![
                (t0 - SPARK_BUCKET_MS, 50.0),
                (t0, 70.0),
                (t0 + SPARK_BUCKET_MS, 90.0)
            ]
        );
        assert_eq!(l.latest[&Metric::HeartRate].0.value, 90.0, "newest wins");
        for i in 0..200 {
            l.add(&d, Metric::HeartRate, t0 + i * SPARK_BUCKET_MS, 1.0, 1);
        }
        assert_eq!(l.spark[&Metric::HeartRate].len(), SPARK_BUCKETS + 1);
        // Steps have no sparkline but do have a latest value.
        l.add(&d, Metric::Steps, t0, 10.0, 1);
        assert!(!l.spark.contains_key(&Metric::Steps));
        assert!(l.latest.contains_key(&Metric::Steps));
    }
}
