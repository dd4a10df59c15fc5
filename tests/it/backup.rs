//! `vigil db backup` while the gateway runs and a device keeps publishing: the snapshot passes
//! SQLite's integrity check, holds every reading acknowledged before the backup began, and a
//! gateway started on it serves the same patient, whose device connects with its old secret.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::support::{Gateway, publish_readings, run};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");
/// Readings in each publish.
const BATCH: usize = 20;

/// A batch of heart-rate readings, `n`th of the series, each at its own second.
fn batch(start_ms: i64, n: usize) -> Value {
    let r: Vec<Value> = (0..BATCH)
        .map(|i| {
            let t = start_ms + ((n * BATCH + i) as i64) * 1000;
            json!({"metric": "heart_rate", "value": 70, "time": vigil::domain::format_rfc3339(t)})
        })
        .collect();
    Value::from(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_readings_arrive_holds_every_acknowledged_one_and_restores() {
    let gw = Gateway::start().await;
    gw.client.patient("p-bak").await;
    let secret = gw.client.device("ox-bak", "p-bak", "pulse-oximeter").await;
    let start_ms = vigil::domain::now_ms() - 3_600_000;

    // A device publishing without pause; `acked` counts the readings it was told are stored.
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let publisher = {
        let (acked, stop, mqtt, secret) = (acked.clone(), stop.clone(), gw.mqtt, secret.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.is_cancelled() {
                publish_readings(mqtt, "ox-bak", &secret, &batch(start_ms, n)).await;
                n += 1;
                acked.store(n * BATCH, Ordering::SeqCst);
            }
        })
    };
    crate::support::eventually(
        std::time::Duration::from_secs(30),
        "a few batches acknowledged",
        || async { (acked.load(Ordering::SeqCst) >= 3 * BATCH).then_some(()) },
    )
    .await;

    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("vigil-backup.tar");
    let before = acked.load(Ordering::SeqCst);
    let data_dir = gw.dir.path().to_str().unwrap().to_owned();
    let r = run(
        VIGIL,
        &[
            "db",
            "backup",
            "--data-dir",
            &data_dir,
            "--to",
            file.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert!(r.ok, "vigil db backup: {}", r.stderr);
    assert!(
        r.stdout.contains("registry.db") && r.stdout.contains("store.db"),
        "{}",
        r.stdout
    );
    // The device went on publishing during the backup.
    crate::support::eventually(
        std::time::Duration::from_secs(30),
        "more readings after the backup",
        || async { (acked.load(Ordering::SeqCst) > before + BATCH).then_some(()) },
    )
    .await;
    stop.cancel();
    publisher.await.unwrap();
    let (mut cfg, _old) = gw.stop_keeping_data().await;

    // Unpacked into a new data directory, as a restore would.
    let restored = Arc::new(tempfile::tempdir().unwrap());
    tar::Archive::new(std::fs::File::open(&file).unwrap())
        .unpack(restored.path())
        .unwrap();
    let store = rusqlite::Connection::open(restored.path().join("store.db")).unwrap();
    let check: String = store
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let held: i64 = store
        .query_row(
            "SELECT count(*) FROM observations WHERE device_id = 'ox-bak'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(store);
    assert!(
        held >= before as i64,
        "the backup holds {held} readings; {before} were acknowledged before it began"
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(restored.path().join("backup.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["databases"][1]["name"], "registry.db");

    // A gateway on the restored directory: the same patient, the device's old secret works.
    cfg.data_dir = restored.path().to_path_buf();
    let gw = Gateway::start_again(cfg, restored).await;
    let before_restart = gw.client.observations("p-bak", "limit=100000").await.len();
    assert_eq!(before_restart as i64, held);
    // Readings from before all the others: new to the restored store.
    publish_readings(gw.mqtt, "ox-bak", &secret, &batch(start_ms - 100_000, 0)).await;
    assert_eq!(
        gw.client.observations("p-bak", "limit=100000").await.len(),
        before_restart + BATCH
    );
    gw.stop().await;
}
