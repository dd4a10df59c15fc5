//! `vigil-sim bench --cluster N`: Vigil as one gateway made of 1, 2, … N instances on one
//! PostgreSQL, measured the way `vigil-sim bench` measures one (`super::bench`).
//!
//! For each count of instances, on a PostgreSQL of its own (started with `scripts/pg-temp`, so
//! no run inherits another's data): the instances start on one database; the bench devices are
//! provisioned through the first and connect to the instances' embedded endpoints in turn (as
//! a load balancer spreads them); each publishes its QoS 1 readings as fast as 100 in flight
//! allow. The figure is readings per second *stored* (each instance's PUBACK follows its
//! commit; counted by `vigil_readings_accepted_total` summed over the instances), from the
//! first publish to the last reading landing. Then, under half that load on the first
//! instance, publish → stored and publish → alert latency for a probe patient, whose alert
//! partition any instance may hold (so the alert may be decided elsewhere and read back
//! through the database).
//!
//! All instances share this machine's cores with PostgreSQL and the load generator: the
//! figures say what the design costs and how it behaves, not how it scales on separate hosts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::bench::{
    Cred, Gateway, Latency, Sizes, probe_latency, provision, provision_probe, stream,
};
use crate::fleet::rfc3339;

/// One count of instances' outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterRow {
    pub instances: usize,
    pub readings: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub publish_to_stored: Option<Latency>,
    pub publish_to_alert: Option<Latency>,
    pub background_per_second: f64,
}

/// A throw-away PostgreSQL (`scripts/pg-temp`), stopped when dropped.
struct TempPg {
    script: PathBuf,
    dir: tempfile_dir::Dir,
    url: String,
}

/// A directory removed when dropped (the simulator does not depend on `tempfile`).
mod tempfile_dir {
    pub(super) struct Dir(pub(super) std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl TempPg {
    async fn start(work: &Path, name: &str) -> anyhow::Result<TempPg> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-temp");
        let dir = tempfile_dir::Dir(work.join(name));
        std::fs::create_dir_all(&dir.0)?;
        let out = tokio::process::Command::new(&script)
            .arg("start")
            .arg(dir.0.join("pg"))
            .output()
            .await
            .with_context(|| format!("cannot run {}", script.display()))?;
        if !out.status.success() {
            bail!(
                "scripts/pg-temp start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let url = String::from_utf8(out.stdout)?.trim().to_owned();
        Ok(TempPg { script, dir, url })
    }
}

impl Drop for TempPg {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.script)
            .arg("stop")
            .arg(self.dir.0.join("pg"))
            .output();
    }
}

/// Waits until every instance accepts the device `cred` (instances learn of devices made
/// through another within a couple of seconds).
async fn known_everywhere(endpoints: &[SocketAddr], cred: &Cred) -> anyhow::Result<()> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
    for addr in endpoints {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let mut opts = MqttOptions::new(
                format!("{}-ready", cred.0),
                addr.ip().to_string(),
                addr.port(),
            );
            opts.set_credentials(cred.0.clone(), cred.1.clone());
            let (client, mut events) = AsyncClient::new(opts, 10);
            let accepted = matches!(
                tokio::time::timeout(Duration::from_secs(5), events.poll()).await,
                Ok(Ok(Event::Incoming(Packet::ConnAck(_))))
            );
            let _ = client.disconnect().await;
            if accepted {
                break;
            }
            if Instant::now() > end {
                bail!("{addr} did not accept a device made through another instance within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Streams each device's readings to the instances' endpoints in turn; the instant of the
/// first publish.
async fn stream_spread(
    endpoints: &[SocketAddr],
    creds: &[Cred],
    per_device: usize,
    base_ms: i64,
) -> anyhow::Result<Instant> {
    let mut groups: Vec<Vec<Cred>> = vec![Vec::new(); endpoints.len()];
    for (i, c) in creds.iter().enumerate() {
        groups[i % endpoints.len()].push(c.clone());
    }
    let mut tasks = Vec::new();
    for (i, (addr, group)) in endpoints.iter().zip(groups).enumerate() {
        let addr = *addr;
        // Each group's readings in its own stretch of time.
        let base = base_ms + i as i64 * 1_000_000_000;
        tasks.push(tokio::spawn(async move {
            stream(addr, &group, per_device, base).await
        }));
    }
    let mut first: Option<Instant> = None;
    for t in tasks {
        let (from, _) = t.await??;
        first = Some(first.map_or(from, |f| f.min(from)));
    }
    first.context("no instance")
}

/// Runs the bench for 1..=`max` instances; prints the table and writes
/// `bench/results/<timestamp>-cluster.json` and `.md`.
pub async fn run(max: usize, quick: bool) -> anyhow::Result<()> {
    if max == 0 {
        bail!("--cluster needs at least one instance");
    }
    let sizes = Sizes::new(quick);
    let total = (sizes.devices * sizes.per_device) as u64;
    let work = std::env::temp_dir().join(format!("vigil-sim-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let _work = tempfile_dir::Dir(work.clone());
    let now = crate::fleet::wall_ms();
    eprintln!(
        "vigil-sim bench --cluster {max}{}: {} devices × {} QoS 1 readings, instances on one PostgreSQL",
        if quick { " --quick" } else { "" },
        sizes.devices,
        sizes.per_device
    );
    let mut rows = Vec::new();
    for n in 1..=max {
        let pg = TempPg::start(&work, &format!("pg{n}")).await?;
        let env = vec![
            ("VIGIL_DATABASE__URL", pg.url.clone()),
            ("VIGIL_ALERTS__TICK_MS", "100".to_owned()),
        ];
        let mut gws = Vec::new();
        for i in 0..n {
            gws.push(Gateway::start(&work.join(format!("data{n}-{i}")), &env).await?);
        }
        let api = &gws[0].api;
        let creds = provision(api, "bench", sizes.devices).await?;
        let probe_secret = provision_probe(api).await?;
        let endpoints: Vec<SocketAddr> = gws
            .iter()
            .map(|g| g.mqtt.context("an instance without an embedded endpoint"))
            .collect::<anyhow::Result<_>>()?;
        if let Some(last) = creds.last() {
            known_everywhere(&endpoints, last).await?;
        }
        // Every instance evaluating its share of the alert partitions before the clock starts.
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let mut held = 0.0;
            for g in &gws {
                held += g.metric("vigil_alert_partitions_held").await;
            }
            if held >= 32.0 {
                break;
            }
            if Instant::now() > end {
                bail!("the instances did not take the alert partitions within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let base = now - 30 * 86_400_000;
        let from = stream_spread(&endpoints, &creds, sizes.per_device, base).await?;
        let end = Instant::now() + Duration::from_secs(900);
        let to = loop {
            let mut accepted = 0.0;
            for g in &gws {
                accepted += g.metric("vigil_readings_accepted_total").await;
            }
            if accepted >= total as f64 {
                break Instant::now();
            }
            if Instant::now() > end {
                bail!("{n} instances stored {accepted} of {total} within 900 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let seconds = to.duration_since(from).as_secs_f64().max(1e-6);
        let per_second = total as f64 / seconds;
        eprintln!("  {n} instance(s): {per_second:.0} readings/s stored");
        let (stored, alert, _live, background) = probe_latency(
            &gws[0],
            endpoints[0],
            &creds,
            ("probe-app", &probe_secret),
            per_second / n as f64 / 2.0,
            sizes.probes,
            base + 20 * 86_400_000,
        )
        .await?;
        rows.push(ClusterRow {
            instances: n,
            readings: total,
            seconds,
            per_second,
            publish_to_stored: stored,
            publish_to_alert: alert,
            background_per_second: background,
        });
        for g in gws {
            g.stop().await?;
        }
        drop(pg);
    }
    let md = markdown(&rows, &sizes, quick, &rfc3339(now));
    let dir = PathBuf::from("bench/results");
    std::fs::create_dir_all(&dir)?;
    let stamp: String = rfc3339(now)
        .chars()
        .take(19)
        .filter(char::is_ascii_alphanumeric)
        .chain(['Z'])
        .collect();
    let stamp = format!("{stamp}-cluster{}", if quick { "-quick" } else { "" });
    std::fs::write(
        dir.join(format!("{stamp}.json")),
        serde_json::to_string_pretty(&rows)?,
    )?;
    std::fs::write(dir.join(format!("{stamp}.md")), &md)?;
    println!("{md}");
    eprintln!("results: bench/results/{stamp}.json and .md");
    Ok(())
}

fn markdown(rows: &[ClusterRow], sizes: &Sizes, quick: bool, when: &str) -> String {
    let lat = |l: &Option<Latency>| {
        l.as_ref().map_or("–".into(), |l| {
            format!("{:.1} / {:.1}", l.p50_ms, l.p99_ms)
        })
    };
    let mut s = format!(
        "## vigil-sim bench --cluster{} — {when}\n\n{} devices × {} QoS 1 readings, spread over the instances' embedded endpoints; every instance and PostgreSQL on this one machine ({}).\n\n| instances | readings/s stored | publish → stored p50 / p99 ms | publish → alert p50 / p99 ms | background readings/s |\n| ---: | ---: | --- | --- | ---: |\n",
        if quick { " --quick" } else { "" },
        sizes.devices,
        sizes.per_device,
        crate::bench::machine()
    );
    for r in rows {
        s += &format!(
            "| {} | {:.0} | {} | {} | {:.0} |\n",
            r.instances,
            r.per_second,
            lat(&r.publish_to_stored),
            lat(&r.publish_to_alert),
            r.background_per_second
        );
    }
    s
}
