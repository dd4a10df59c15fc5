//! The panel cache: every patient's latest value of each vital and a sparkline of the last
//! hours, kept in memory for `GET /panel`. Warmed from the store at start, then kept current
//! from the store's commit feed; it holds only derived, display-only data, and the store stays
//! the truth. Kept apart from the panel's handlers so that the application state can hold it
//! without depending on them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::domain::{DeviceId, Metric, PatientId, now_ms};
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

/// A metric's newest value.
#[derive(Debug, Clone, Copy)]
pub(super) struct Latest {
    pub(super) time_ms: i64,
    pub(super) value: f64,
}

/// One patient's latest values, sparklines and devices' last readings.
#[derive(Debug, Default)]
pub(super) struct PatientLive {
    pub(super) latest: BTreeMap<Metric, (Latest, DeviceId)>,
    /// Per metric, (bucket start, sum, count), oldest first.
    pub(super) spark: HashMap<Metric, VecDeque<(i64, f64, u32)>>,
    /// When each device last sent a reading.
    pub(super) device_seen: HashMap<DeviceId, i64>,
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
    /// Runs `f` on every patient's entry, under the cache's lock.
    pub(super) fn with<T>(&self, f: impl FnOnce(&mut HashMap<PatientId, PatientLive>) -> T) -> T {
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
        // Every instance's readings (with several on PostgreSQL), not only this one's.
        let mut feed = store.subscribe_everyone();
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
