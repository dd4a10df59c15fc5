//! The ingest hot path, per reading: decode + validate (pure), decode + validate + durable
//! store (group commit into the embedded SQLite store, fsync included), and the alert engine's
//! judgement of a committed reading under the default care plan (pure).
//!
//! Run: `cargo bench --bench ingest`. Throughput is printed in elements (readings) per second.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil::domain::{DeviceId, PatientId};
use vigil::ingest::pipeline::{self, Accepted, Source};
use vigil::ingest::topic::TopicKind;
use vigil::registry::Profiles;
use vigil::store::{Store, StoreOptions};
use vigil::telemetry::Metrics;

const NOW: i64 = 1_795_611_600_000;

/// One payload to measure: name, device profile, topic kind, bytes.
struct Case {
    name: &'static str,
    profile: &'static str,
    kind: TopicKind,
    payload: Vec<u8>,
}

fn payloads() -> Vec<Case> {
    vec![
        Case {
            name: "vigil-json object",
            profile: "pulse-oximeter",
            kind: TopicKind::Readings,
            payload: br#"{"metric":"spo2","value":97,"unit":"%","time":"2026-11-25T12:59:00Z"}"#.to_vec(),
        },
        Case {
            name: "senml 2 records",
            profile: "smartwatch",
            kind: TopicKind::Readings,
            payload: br#"[{"bn":"w/","bt":1795611500,"n":"heart_rate","u":"beat/min","v":64},{"n":"steps","u":"count","v":1200}]"#.to_vec(),
        },
        Case {
            name: "gatt 2a35 full",
            profile: "bp-cuff",
            kind: TopicKind::Gatt(0x2a35),
            // flags 0x1e; 120/80/93 mmHg; 2026-11-25 12:58:00; pulse 72; user 1; status 0
            payload: vec![0x1e, 0x78, 0, 0x50, 0, 0x5d, 0, 0xea, 0x07, 11, 25, 12, 58, 0, 0x48, 0, 1, 0, 0],
        },
        Case {
            name: "gatt 2a5e",
            profile: "pulse-oximeter",
            kind: TopicKind::Gatt(0x2a5e),
            payload: vec![0x00, 0x61, 0x00, 0x44, 0x00],
        },
    ]
}

fn decode_validate(c: &mut Criterion) {
    let profiles = Profiles::built_in().unwrap();
    let d = DeviceId::parse("dev-1").unwrap();
    let p = PatientId::parse("pat-1").unwrap();
    let mut g = c.benchmark_group("decode+validate");
    for Case {
        name,
        profile,
        kind,
        payload,
    } in payloads()
    {
        let src = Source {
            device_id: &d,
            patient_id: &p,
            profile: profiles.get(profile).unwrap(),
        };
        g.throughput(Throughput::Elements(1));
        g.bench_function(name, |b| {
            b.iter(|| pipeline::process(&src, kind, black_box(&payload), None, NOW).unwrap())
        });
    }
    g.finish();
}

/// Decode, validate and commit `n` readings, each its own publish, as concurrent devices would;
/// then the same with `fhir.all_readings` on, where each reading's key also goes into the FHIR
/// spool in the same transaction (what every-reading write-back costs the ingest path).
fn store(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("decode+validate+store");
    for (name, fhir_spool) in [
        ("20k vigil-json publishes, group commit, fsync", false),
        (
            "20k vigil-json publishes, group commit, fsync, FHIR spool",
            true,
        ),
    ] {
        store_case(&rt, &mut g, name, fhir_spool);
    }
    g.finish();
}

fn store_case(
    rt: &tokio::runtime::Runtime,
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    fhir_spool: bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(async {
            let options = StoreOptions {
                fhir_readings: fhir_spool,
                ..StoreOptions::new(4096, 16_384)
            };
            Store::open_sqlite(dir.path(), options, Metrics::new())
        })
        .unwrap();
    let profiles = Profiles::built_in().unwrap();
    let profile = profiles.get("pulse-oximeter").unwrap().clone();
    let p = PatientId::parse("pat-1").unwrap();
    let devices: Vec<DeviceId> = (0..100)
        .map(|i| DeviceId::parse(&format!("dev-{i}")).unwrap())
        .collect();
    let n: u64 = 20_000;
    let mut round = 0i64;
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);
    g.bench_function(name, |b| {
        b.iter(|| {
            round += 1;
            let base = 1_700_000_000_000 + round * 1_000_000_000;
            rt.block_on(async {
                let mut pending = Vec::with_capacity(n as usize);
                for i in 0..n as i64 {
                    let d = &devices[(i % 100) as usize];
                    let src = Source {
                        device_id: d,
                        patient_id: &p,
                        profile: &profile,
                    };
                    let payload = format!(
                        r#"{{"metric":"heart_rate","value":{},"time":{}}}"#,
                        60 + i % 40,
                        (base + i * 1000) / 1000
                    );
                    let Ok(Accepted::Readings(obs)) = pipeline::process(
                        &src,
                        TopicKind::Readings,
                        payload.as_bytes(),
                        None,
                        NOW + round * 2_000_000_000_000,
                    ) else {
                        panic!("rejected");
                    };
                    pending.push(store.submit(obs, NOW).await.unwrap());
                }
                for rx in pending {
                    rx.await.unwrap().unwrap();
                }
            })
        })
    });
    rt.block_on(store.close());
}

/// The alert engine on a stream of normal readings from 1,000 patients under the default care
/// plan (8 rules): what evaluation costs per reading when nothing fires, and a tick over all.
fn engine(c: &mut Criterion) {
    use std::sync::Arc;
    use vigil::alerts::engine::{Engine, Input, Settings};
    use vigil::alerts::rules::CarePlan;
    use vigil::domain::{Metric, Observation};

    let plan = Arc::new(CarePlan::default_plan());
    let mut e = Engine::new(Settings::default(), plan);
    let patients: Vec<PatientId> = (0..1000)
        .map(|i| PatientId::parse(&format!("p{i}")).unwrap())
        .collect();
    for p in &patients {
        e.add_patient(p.clone(), None, NOW);
    }
    let device = DeviceId::parse("d").unwrap();
    let metrics = [
        (Metric::HeartRate, 72.0),
        (Metric::Spo2, 97.0),
        (Metric::RespiratoryRate, 16.0),
        (Metric::BodyTemperature, 36.8),
        (Metric::Glucose, 110.0),
        (Metric::BodyWeight, 80.0),
    ];
    let obs: Vec<Observation> = (0..6000)
        .map(|i| Observation {
            patient_id: patients[i % patients.len()].clone(),
            device_id: device.clone(),
            metric: metrics[i % metrics.len()].0,
            value: metrics[i % metrics.len()].1,
            time_ms: NOW + i as i64,
        })
        .collect();
    let mut g = c.benchmark_group("alert engine");
    g.throughput(Throughput::Elements(obs.len() as u64));
    let mut t = NOW;
    g.bench_function("6k readings, default plan, nothing fires", |b| {
        b.iter(|| {
            for o in &obs {
                let mut o = o.clone();
                t += 1;
                o.time_ms = t;
                black_box(e.handle(Input::Observation(&o), t));
            }
        })
    });
    g.throughput(Throughput::Elements(patients.len() as u64));
    g.bench_function("tick over 1k patients", |b| {
        b.iter(|| black_box(e.handle(Input::Tick, t)))
    });
    g.finish();
}

criterion_group!(benches, decode_validate, store, engine);
criterion_main!(benches);
