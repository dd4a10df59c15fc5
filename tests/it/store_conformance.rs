//! One conformance suite for the readings' store (`vigil::store::Store`), run on both
//! backends: SQLite (`store.db`, the embedded default) and a real PostgreSQL started for the
//! test (`scripts/pg-temp`). Each test states a behaviour and checks it on each backend in
//! turn; the PostgreSQL-only tests at the end cover what only it has (monthly partitions,
//! several instances writing at once).

use vigil::domain::{DeviceId, Metric, Observation, PatientId};
use vigil::store::{Committed, DeadLetter, ObservationQuery, Store, StoreOptions};
use vigil::telemetry::Metrics;

use crate::postgres::Postgres;

/// A backend under test: how to open a store on it, again and again (a restart).
struct Backend {
    name: &'static str,
    dir: tempfile::TempDir,
    pg: Option<(Postgres, String)>,
}

impl Backend {
    async fn open_with(&self, options: StoreOptions) -> Store {
        match &self.pg {
            None => Store::open_sqlite(self.dir.path(), options, Metrics::new()).unwrap(),
            Some((_, url)) => {
                let pool = vigil::pg::connect(url, None).await.unwrap();
                Store::open_postgres(pool, options, Metrics::new())
                    .await
                    .unwrap()
            }
        }
    }

    async fn open(&self) -> Store {
        self.open_with(StoreOptions::new(64, 64)).await
    }

    /// Runs `sql` on the PostgreSQL backend's database; its output.
    async fn sql(&self, sql: &str) -> String {
        let (pg, _) = self.pg.as_ref().expect("a PostgreSQL backend");
        pg.sql_in("vigil", sql).await
    }
}

/// Both backends, each empty.
async fn backends() -> Vec<Backend> {
    let pg = Postgres::start().await;
    let url = pg.database("vigil").await;
    vec![
        Backend {
            name: "sqlite",
            dir: tempfile::tempdir().unwrap(),
            pg: None,
        },
        postgres_backend(pg, url),
    ]
}

fn postgres_backend(pg: Postgres, url: String) -> Backend {
    Backend {
        name: "postgres",
        dir: tempfile::tempdir().unwrap(),
        pg: Some((pg, url)),
    }
}

async fn postgres() -> Backend {
    let pg = Postgres::start().await;
    let url = pg.database("vigil").await;
    postgres_backend(pg, url)
}

fn obs(device: &str, metric: Metric, t: i64, v: f64) -> Observation {
    Observation {
        patient_id: PatientId::parse("p1").unwrap(),
        device_id: DeviceId::parse(device).unwrap(),
        metric,
        value: v,
        time_ms: t,
    }
}

fn query(metric: Option<Metric>) -> ObservationQuery {
    ObservationQuery {
        patient_id: PatientId::parse("p1").unwrap(),
        metric,
        from_ms: i64::MIN / 2,
        to_ms: i64::MAX / 2,
        limit: 100,
        newest_first: false,
    }
}

/// 2026-11-25T13:00:00Z, a time in the middle of a month.
const NOV_2026: i64 = 1_795_611_600_000;
const DAY: i64 = 86_400_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_is_stored_once_and_read_back_in_either_order() {
    for b in backends().await {
        let store = b.open().await;
        let t = NOV_2026;
        let c = store
            .insert(
                vec![
                    obs("d1", Metric::HeartRate, t + 2000, 70.0),
                    obs("d1", Metric::HeartRate, t + 1000, 72.0),
                    obs("d1", Metric::Spo2, t + 1000, 97.0),
                ],
                5000,
            )
            .await
            .unwrap();
        assert_eq!(
            c,
            Committed {
                inserted: 3,
                duplicates: 0
            },
            "{}",
            b.name
        );
        // A redelivery of the same (device, metric, time) is not stored again, and the
        // same reading twice in one write is stored once.
        let c = store
            .insert(
                vec![
                    obs("d1", Metric::HeartRate, t + 1000, 72.0),
                    obs("d2", Metric::HeartRate, t + 1000, 75.0),
                    obs("d2", Metric::HeartRate, t + 1000, 75.0),
                ],
                6000,
            )
            .await
            .unwrap();
        assert_eq!(
            c,
            Committed {
                inserted: 1,
                duplicates: 2
            },
            "{}",
            b.name
        );
        let hr = store
            .observations(query(Some(Metric::HeartRate)))
            .await
            .unwrap();
        assert_eq!(
            hr.iter()
                .map(|o| (o.time_ms - t, o.value, o.device_id.as_str(), o.received_ms))
                .collect::<Vec<_>>(),
            vec![
                (1000, 72.0, "d1", 5000),
                (1000, 75.0, "d2", 6000),
                (2000, 70.0, "d1", 5000)
            ],
            "{}",
            b.name
        );
        assert_eq!(store.observations(query(None)).await.unwrap().len(), 4);
        assert_eq!(store.count_observations().await.unwrap(), 4, "{}", b.name);
        // Newest first: the latest `limit`, with and without a metric.
        let newest = |metric, limit| {
            let store = store.clone();
            async move {
                let q = ObservationQuery {
                    limit,
                    newest_first: true,
                    ..query(metric)
                };
                let rows = store.observations(q).await.unwrap();
                rows.iter()
                    .map(|o| (o.time_ms - t, o.metric, o.device_id.clone()))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            newest(Some(Metric::HeartRate), 1).await,
            vec![(2000, Metric::HeartRate, "d1".to_owned())],
            "{}",
            b.name
        );
        assert_eq!(
            newest(None, 3).await,
            vec![
                (2000, Metric::HeartRate, "d1".to_owned()),
                (1000, Metric::Spo2, "d1".to_owned()),
                (1000, Metric::HeartRate, "d2".to_owned()),
            ],
            "{}",
            b.name
        );
        let latest = store
            .latest(PatientId::parse("p1").unwrap(), Metric::HeartRate)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (latest.time_ms - t, latest.value),
            (2000, 70.0),
            "{}",
            b.name
        );
        assert!(
            store
                .latest(PatientId::parse("p1").unwrap(), Metric::BodyWeight)
                .await
                .unwrap()
                .is_none()
        );
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_gives_the_readings_or_buckets_of_them() {
    for b in backends().await {
        let store = b.open().await;
        let t = NOV_2026 - NOV_2026 % 1_000_000;
        // 100 readings one second apart: 60..159.
        let rows = (0..100)
            .map(|i| obs("d1", Metric::HeartRate, t + i * 1000, 60.0 + i as f64))
            .collect();
        store.insert(rows, 0).await.unwrap();
        let p = PatientId::parse("p1").unwrap();
        let raw = store
            .series(p.clone(), Metric::HeartRate, t, t + 99_000, 100)
            .await
            .unwrap();
        assert_eq!(raw.step_ms, 0, "{}", b.name);
        assert_eq!(raw.points.len(), 100, "{}", b.name);
        assert_eq!(
            (
                raw.points[5].time_ms - t,
                raw.points[5].mean,
                raw.points[5].count
            ),
            (5000, 65.0, 1),
            "{}",
            b.name
        );
        let buckets = store
            .series(p.clone(), Metric::HeartRate, t, t + 100_000, 10)
            .await
            .unwrap();
        assert_eq!(buckets.step_ms, 10_000, "{}", b.name);
        assert_eq!(buckets.points.len(), 10, "{}", b.name);
        let first = buckets.points[0];
        assert_eq!(
            (first.time_ms - t, first.min, first.max, first.count),
            (0, 60.0, 69.0, 10),
            "{}",
            b.name
        );
        assert!((first.mean - 64.5).abs() < 1e-9, "{}", b.name);
        assert_eq!(buckets.points[9].time_ms - t, 90_000, "{}", b.name);
        let none = store
            .series(p, Metric::Spo2, t, t + 100_000, 10)
            .await
            .unwrap();
        assert!(none.points.is_empty(), "{}", b.name);
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_stored_survives_a_restart_and_retention_removes_only_the_old() {
    for b in backends().await {
        let store = b.open().await;
        let old = NOV_2026 - 90 * DAY;
        store
            .insert(
                vec![
                    obs("d1", Metric::BodyWeight, old, 80.0),
                    obs("d1", Metric::BodyWeight, NOV_2026 - DAY, 81.0),
                    obs("d1", Metric::BodyWeight, NOV_2026, 82.0),
                ],
                0,
            )
            .await
            .unwrap();
        let rx = store
            .submit_dead_letter(DeadLetter {
                time_ms: old,
                device_id: DeviceId::parse("d1").unwrap(),
                patient_id: None,
                topic: "vigil/v1/devices/d1/readings".into(),
                reason: "invalid JSON".into(),
                payload: vec![0xff],
            })
            .await
            .unwrap();
        rx.await.unwrap().unwrap();
        store.close().await;
        let store = b.open().await;
        assert_eq!(store.count_observations().await.unwrap(), 3, "{}", b.name);
        // Retention: the reading 90 days old and the dead letter go, the recent ones stay
        // (one of them in the month retention cuts through).
        let removed = store.prune(NOV_2026 - 2 * DAY).await.unwrap();
        assert!(removed >= 1, "{}: {removed}", b.name);
        let left = store.observations(query(None)).await.unwrap();
        assert_eq!(
            left.iter().map(|o| o.value).collect::<Vec<_>>(),
            vec![81.0, 82.0],
            "{}",
            b.name
        );
        assert!(store.dead_letters(None, 10).await.unwrap().is_empty());
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_keeps_its_payload_and_reason() {
    for b in backends().await {
        let store = b.open().await;
        for (device, reason) in [("d1", "invalid JSON"), ("d2", "unknown metric")] {
            let rx = store
                .submit_dead_letter(DeadLetter {
                    time_ms: 1,
                    device_id: DeviceId::parse(device).unwrap(),
                    patient_id: Some(PatientId::parse("p1").unwrap()),
                    topic: format!("vigil/v1/devices/{device}/readings"),
                    reason: reason.into(),
                    payload: vec![0xff, 0x00],
                })
                .await
                .unwrap();
            rx.await.unwrap().unwrap();
        }
        let d1 = store
            .dead_letters(Some(DeviceId::parse("d1").unwrap()), 10)
            .await
            .unwrap();
        assert_eq!(d1.len(), 1, "{}", b.name);
        assert_eq!(d1[0].reason, "invalid JSON");
        assert_eq!(d1[0].payload, vec![0xff, 0x00]);
        let all = store.dead_letters(None, 10).await.unwrap();
        assert_eq!(
            all.iter().map(|d| d.device_id.as_str()).collect::<Vec<_>>(),
            ["d2", "d1"],
            "newest first on {}",
            b.name
        );
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_readings_are_spooled_for_influxdb_and_fhir_with_their_commit_and_cleared_by_id() {
    for b in backends().await {
        let options = StoreOptions {
            influx_measurement: Some("vitals".into()),
            fhir_readings: true,
            ..StoreOptions::new(64, 64)
        };
        let store = b.open_with(options.clone()).await;
        let t = NOV_2026;
        store
            .insert(
                vec![
                    obs("d1", Metric::HeartRate, t + 1, 61.0),
                    obs("d1", Metric::HeartRate, t + 2, 62.0),
                ],
                0,
            )
            .await
            .unwrap();
        // A redelivery stores nothing and spools nothing.
        store
            .insert(
                vec![
                    obs("d1", Metric::HeartRate, t + 2, 62.0),
                    obs("d1", Metric::HeartRate, t + 3, 63.0),
                ],
                0,
            )
            .await
            .unwrap();
        let spooled = store.fhir_spool_batch(10).await.unwrap();
        let times: Vec<i64> = spooled
            .iter()
            .map(|(_, o)| o.as_ref().unwrap().time_ms - t)
            .collect();
        assert_eq!(times, [1, 2, 3], "{}", b.name);
        assert_eq!(spooled[1].1.as_ref().unwrap().value, 62.0);
        let lines = store.outbox_batch(10).await.unwrap();
        assert_eq!(lines.len(), 3, "{}", b.name);
        assert!(lines[0].1.starts_with("vitals,"), "{}", lines[0].1);
        assert_eq!(store.outbox_depth().await.unwrap(), 3);
        // Cleared by id: exactly those named, not every id below them.
        store.fhir_spool_done(vec![spooled[1].0]).await.unwrap();
        let left: Vec<i64> = store
            .fhir_spool_batch(10)
            .await
            .unwrap()
            .iter()
            .map(|(_, o)| o.as_ref().unwrap().time_ms - t)
            .collect();
        assert_eq!(left, [1, 3], "{}", b.name);
        store
            .outbox_done(
                vec![lines[0].0, lines[2].0],
                vec![lines[2].1.clone()],
                "InfluxDB answered 400: bad line".into(),
                7,
            )
            .await
            .unwrap();
        assert_eq!(
            store.outbox_batch(10).await.unwrap(),
            vec![lines[1].clone()]
        );
        let rejected = store.influx_rejected(10).await.unwrap();
        assert_eq!(
            rejected,
            vec![(
                7,
                lines[2].1.clone(),
                "InfluxDB answered 400: bad line".into()
            )],
            "{}",
            b.name
        );
        // Pruned before it was moved: still listed, without the reading, so it can be cleared.
        store.prune(t + 2).await.unwrap();
        let left = store.fhir_spool_batch(10).await.unwrap();
        assert_eq!(left.len(), 2, "{}", b.name);
        assert!(left[0].1.is_none(), "{}", b.name);
        // Restarted without the outward copies: nothing new is spooled, what was there stays.
        store.close().await;
        let store = b.open().await;
        store
            .insert(vec![obs("d1", Metric::HeartRate, t + 20, 80.0)], 0)
            .await
            .unwrap();
        assert_eq!(store.fhir_spool_depth().await.unwrap(), 2, "{}", b.name);
        assert_eq!(store.outbox_depth().await.unwrap(), 1, "{}", b.name);
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_commit_feeds_its_new_readings_to_subscribers() {
    for b in backends().await {
        let store = b.open().await;
        let mut feed = store.subscribe();
        store
            .insert(vec![obs("d1", Metric::HeartRate, NOV_2026, 70.0)], 0)
            .await
            .unwrap();
        store
            .insert(
                vec![
                    obs("d1", Metric::HeartRate, NOV_2026, 70.0),
                    obs("d1", Metric::HeartRate, NOV_2026 + 1, 71.0),
                ],
                0,
            )
            .await
            .unwrap();
        let first = feed.recv().await.unwrap();
        let second = feed.recv().await.unwrap();
        assert_eq!(
            (first.observations.len(), second.observations.len()),
            (1, 1),
            "a redelivery is not fed again on {}",
            b.name
        );
        assert_eq!(second.observations[0].value, 71.0);
        store.close().await;
    }
}

/// PostgreSQL: each month's readings in a partition of its own, made when first written;
/// a month far off stays in the default partition; a partition made for a month the default
/// partition already holds readings of takes them over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_each_month_in_its_own_partition() {
    let b = postgres().await;
    let store = b.open().await;
    let partition_of = |t: i64| {
        let b = &b;
        async move {
            b.sql(&format!(
                "SELECT tableoid::regclass::text FROM readings.observations WHERE time_ms = {t}"
            ))
            .await
            .trim()
            .to_owned()
        }
    };
    let now = vigil::domain::now_ms();
    let year_ago = now - 365 * DAY;
    let far = now + 20 * 365 * DAY;
    store
        .insert(
            vec![
                obs("d1", Metric::HeartRate, now, 70.0),
                obs("d1", Metric::HeartRate, year_ago, 71.0),
                obs("d1", Metric::HeartRate, far, 72.0),
            ],
            0,
        )
        .await
        .unwrap();
    let month = |t: i64| vigil::domain::format_rfc3339(t)[..7].replace('-', "_");
    assert_eq!(
        partition_of(now).await,
        format!("readings.observations_{}", month(now))
    );
    assert_eq!(
        partition_of(year_ago).await,
        format!("readings.observations_{}", month(year_ago))
    );
    assert_eq!(partition_of(far).await, "readings.observations_default");
    // A reading that reached the default partition for a month now wanted (as when the clock
    // moved on): the month's partition is made with it inside.
    let two_years_ago = now - 2 * 365 * DAY;
    b.sql(&format!(
        "INSERT INTO readings.observations_default
           (device_id, metric, time_ms, patient_id, value, received_ms)
         VALUES ('d1', 1, {two_years_ago}, 'p1', 69.0, 0)"
    ))
    .await;
    store
        .insert(
            vec![obs("d1", Metric::HeartRate, two_years_ago + 1, 68.0)],
            0,
        )
        .await
        .unwrap();
    let wanted = format!("readings.observations_{}", month(two_years_ago));
    assert_eq!(partition_of(two_years_ago).await, wanted);
    assert_eq!(partition_of(two_years_ago + 1).await, wanted);
    assert_eq!(store.count_observations().await.unwrap(), 5);
    // Retention drops the months wholly before the cut, and deletes within the month it
    // cuts through.
    let removed = store.prune(year_ago + 1).await.unwrap();
    assert!(removed >= 1, "{removed}");
    let tables = b
        .sql(
            "SELECT string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'readings.observations'::regclass",
        )
        .await;
    assert!(
        !tables.contains(&month(two_years_ago)),
        "the old month's partition is dropped: {tables}"
    );
    assert!(tables.contains(&month(now)), "{tables}");
    let left: Vec<f64> = store
        .observations(query(None))
        .await
        .unwrap()
        .iter()
        .map(|o| o.value)
        .collect();
    assert_eq!(left, vec![70.0, 72.0]);
    store.close().await;
}

/// PostgreSQL: several instances write one database at once, each with its own writer, the
/// same readings arriving at more than one (a redelivery to another member of a shared
/// subscription): every reading is stored once, and each instance's counts add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_writing_the_same_readings_at_once_store_each_once() {
    let b = postgres().await;
    let stores = [b.open().await, b.open().await, b.open().await];
    let mut tasks = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut total = Committed::default();
            for batch in 0..20i64 {
                // Each instance sends the same 50 readings per batch, in its own order.
                let mut rows: Vec<Observation> = (0..50)
                    .map(|k| {
                        obs(
                            &format!("d{}", k % 5),
                            Metric::HeartRate,
                            NOV_2026 + batch * 1000 + k,
                            60.0,
                        )
                    })
                    .collect();
                rows.rotate_left(i * 17);
                if i == 1 {
                    rows.reverse();
                }
                let c = store.insert(rows, 0).await.unwrap();
                total.inserted += c.inserted;
                total.duplicates += c.duplicates;
            }
            total
        }));
    }
    let mut inserted = 0;
    let mut duplicates = 0;
    for t in tasks {
        let c = t.await.unwrap();
        inserted += c.inserted;
        duplicates += c.duplicates;
    }
    assert_eq!(
        inserted, 1000,
        "each reading stored by exactly one instance"
    );
    assert_eq!(duplicates, 2000);
    assert_eq!(stores[0].count_observations().await.unwrap(), 1000);
    for s in &stores {
        s.close().await;
    }
}

/// PostgreSQL: the instance evaluating some alert partitions reads their readings in commit
/// order with no gap — a reading whose transaction began earlier but commits later is not
/// skipped (what a sequence number would lose), and none comes twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_feeds_a_partitions_readings_in_commit_order_without_a_gap() {
    use vigil::domain::partition::alert_partition;
    let b = postgres().await;
    let store = b.open().await;
    let (_, url) = b.pg.as_ref().unwrap();
    let p1 = PatientId::parse("p1").unwrap();
    let mine = alert_partition(&p1);
    let other_patient = (0..)
        .map(|i| PatientId::parse(&format!("other-{i}")).unwrap())
        .find(|p| alert_partition(p) != mine)
        .unwrap();
    let start = store.commit_horizon().await.unwrap().unwrap();
    // This month, whose partition the store made when it opened (making one waits for the
    // writers of the default partition, which would include the transaction held open here).
    let now = vigil::domain::now_ms();

    // Another writer's transaction begins first and stays open.
    let pool = vigil::pg::connect(url, None).await.unwrap();
    let mut slow = pool.get().await.unwrap();
    let slow = slow.transaction().await.unwrap();
    slow.execute(
        &format!(
            "INSERT INTO readings.observations
               (device_id, metric, time_ms, patient_id, value, received_ms, part)
             VALUES ('d-slow', 1, {now}, 'p1', 61, 0, {mine})"
        ),
        &[],
    )
    .await
    .unwrap();
    // Then this store commits two readings: one of the partition, one of another.
    let mut theirs = obs("d-other", Metric::HeartRate, now, 70.0);
    theirs.patient_id = other_patient;
    store
        .insert(vec![obs("d-fast", Metric::HeartRate, now, 62.0), theirs], 0)
        .await
        .unwrap();
    let read = |from: i64| {
        let store = store.clone();
        async move {
            let until = store.commit_horizon().await.unwrap().unwrap();
            let fed = store
                .committed_in(vec![mine], from, until)
                .await
                .unwrap()
                .unwrap();
            let devices: Vec<String> = fed
                .readings
                .iter()
                .map(|r| r.observation.device_id.as_str().to_owned())
                .collect();
            (devices, fed.next)
        }
    };
    // While the earlier transaction runs, the later commit waits behind it.
    let (first, next) = read(start).await;
    assert!(
        first.is_empty(),
        "{first:?}: read past a running transaction"
    );
    slow.commit().await.unwrap();
    let (second, next) = read(next).await;
    assert_eq!(
        second,
        ["d-slow", "d-fast"],
        "both, the other partition's not"
    );
    let (third, _) = read(next).await;
    assert!(third.is_empty(), "{third:?}: nothing twice");
    store.close().await;
}
