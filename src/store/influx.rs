//! The InfluxDB 2 writer: line protocol over HTTPS, from the durable outbox.
//!
//! Every observation newly committed to the store (SQLite or PostgreSQL) also gets a line in the
//! `influx_outbox` table, in the same transaction, so the outbox is a durable spool: while
//! InfluxDB is unreachable lines wait there (across restarts too) and are sent in order once
//! it is back. A batch leaves the outbox only after InfluxDB answered 2xx: nothing is lost, and
//! since a redelivered reading never reaches the outbox, nothing is duplicated. With several
//! instances on one database, the one holding the `influx` lease writes (docs/scaling.md).
//!
//! ## Schema
//! One measurement (`vitals` by default), tags `patient` and `device`, one field per metric
//! (`spo2=97`, `steps=4200i`), millisecond timestamps. Patient and device as tags make "one
//! patient, one metric, a time range" a single-series read, the query every chart and rule
//! makes; series cardinality is patients × devices × metrics actually reported (a few per
//! device), well inside InfluxDB's comfortable range even for large programmes. Values and
//! times are never tags. Counts and codes (`steps`, `consciousness`, `on_oxygen`) are integer
//! fields, everything else float, so a field's type never changes.
//!
//! ## Answers
//! 2xx: delivered. 429 and 503: wait as `Retry-After` says (else back off). Other 5xx and
//! network errors: back off exponentially with jitter, up to a minute. 400, 413 (after halving
//! the batch down to one line) and 422: the lines are kept in `influx_rejected` with InfluxDB's
//! reason and leave the outbox. 401, 403, 404: a configuration problem — logged as an error,
//! retried, nothing dropped.

use std::io::Write as _;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Store, StoreError};
use crate::cluster::HeldLease;
use crate::config::InfluxConfig;
use crate::domain::now_ms;
use crate::registry::Registry;
use crate::telemetry::Metrics;

/// What InfluxDB's answer means for the batch.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Delivered,
    /// Try again after this long.
    Retry(Option<Duration>),
    /// The batch is too large: send fewer lines.
    Split,
    /// InfluxDB refused these lines for good.
    Rejected(String),
    /// Credentials, organisation or bucket wrong: keep the lines, keep trying, shout.
    Misconfigured(String),
}

fn verdict(status: u16, retry_after: Option<&str>, body: &str) -> Verdict {
    let reason = || {
        let b = body.trim();
        let b = if b.len() > 500 { &b[..500] } else { b };
        format!("InfluxDB answered {status}: {b}")
    };
    match status {
        200..=299 => Verdict::Delivered,
        429 | 503 => Verdict::Retry(
            retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        ),
        413 => Verdict::Split,
        400 | 422 => Verdict::Rejected(reason()),
        401 | 403 | 404 => Verdict::Misconfigured(reason()),
        _ => Verdict::Retry(None),
    }
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(body)?;
    enc.finish()
}

/// The wait before the next try, doubling the one after it (up to a minute).
fn next_backoff(backoff: &mut Duration) -> Duration {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(Duration::from_secs(60));
    wait
}

/// Backoff with full jitter: a random wait up to `base`.
fn jittered(base: Duration) -> Duration {
    let r = getrandom::u32().unwrap_or(u32::MAX / 2);
    base.mul_f64(0.5 + f64::from(r) / f64::from(u32::MAX) / 2.0)
}

/// Sends the outbox to InfluxDB until `stop`.
pub async fn run(
    store: Store,
    registry: Registry,
    cfg: InfluxConfig,
    metrics: Metrics,
    stop: CancellationToken,
) {
    // One instance writes the copy at a time (on PostgreSQL the outbox is everyone's).
    let mut lease = HeldLease::new(
        "influx",
        "writing the InfluxDB copy",
        LEASE_TTL_MS,
        &metrics,
    );
    write(&store, &registry, &cfg, &metrics, &stop, &mut lease).await;
    lease.release(&registry).await;
}

/// How long the InfluxDB lease lasts unless renewed, and how often another instance asks.
const LEASE_TTL_MS: i64 = 15_000;
const LEASE_RETRY: Duration = Duration::from_secs(2);

async fn write(
    store: &Store,
    registry: &Registry,
    cfg: &InfluxConfig,
    metrics: &Metrics,
    stop: &CancellationToken,
    lease: &mut HeldLease,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(cfg.timeout_s))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "influxdb writer cannot start");
            return;
        }
    };
    let url = format!("{}/api/v2/write", cfg.url.trim_end_matches('/'));
    let query = [
        ("org", cfg.org.as_str()),
        ("bucket", cfg.bucket.as_str()),
        ("precision", "ms"),
    ];
    let flush = Duration::from_millis(cfg.flush_interval_ms);
    let mut limit = cfg.batch_max;
    let mut backoff = Duration::from_millis(250);
    let mut waited = false;
    while !stop.is_cancelled() {
        if !lease.ensure(registry).await {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(LEASE_RETRY) => continue,
            }
        }
        let batch = match store.outbox_batch(limit).await {
            Ok(b) => b,
            Err(StoreError::Closed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "influxdb outbox read failed");
                Vec::new()
            }
        };
        if let Ok(depth) = store.outbox_depth().await {
            metrics.spool_depth.set(depth);
        }
        if batch.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = store.outbox_ready() => {}
                _ = tokio::time::sleep(flush) => {}
            }
            continue;
        }
        if batch.len() < limit && !waited {
            // Batching by size and age: let a small batch grow for one flush interval.
            waited = true;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(flush) => {}
            }
            continue;
        }
        waited = false;
        let sent = send_batch(
            &client,
            &url,
            &query,
            cfg,
            store,
            metrics,
            batch,
            &mut limit,
            &mut backoff,
            stop,
        )
        .await;
        if !sent {
            return;
        }
    }
}

/// Sends one batch and acts on the answer; `false` when stopping.
#[allow(clippy::too_many_arguments)]
async fn send_batch(
    client: &reqwest::Client,
    url: &str,
    query: &[(&str, &str)],
    cfg: &InfluxConfig,
    store: &Store,
    metrics: &Metrics,
    batch: Vec<(i64, String)>,
    limit: &mut usize,
    backoff: &mut Duration,
    stop: &CancellationToken,
) -> bool {
    let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
    let mut body = String::with_capacity(batch.len() * 96);
    for (_, l) in &batch {
        body.push_str(l);
        body.push('\n');
    }
    let Ok(gz) = gzip(body.as_bytes()) else {
        return true;
    };
    let answer = client
        .post(url)
        .query(query)
        .header("authorization", format!("Token {}", cfg.token))
        .header("content-encoding", "gzip")
        .header("content-type", "text/plain; charset=utf-8")
        .body(gz)
        .send()
        .await;
    let v = match answer {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned);
            let text = resp.text().await.unwrap_or_default();
            verdict(status, retry_after.as_deref(), &text)
        }
        Err(e) => {
            tracing::warn!(error = %e, lines = batch.len(), "influxdb unreachable; lines stay in the spool");
            Verdict::Retry(None)
        }
    };
    let wait = match v {
        Verdict::Delivered => {
            *backoff = Duration::from_millis(250);
            *limit = cfg.batch_max;
            metrics.influx_lines_written.inc_by(batch.len() as u64);
            if let Err(e) = store
                .outbox_done(ids, Vec::new(), String::new(), now_ms())
                .await
            {
                tracing::warn!(error = %e, "delivered lines not cleared; they will be sent again");
                return !matches!(e, StoreError::Closed);
            }
            return true;
        }
        Verdict::Split if batch.len() > 1 => {
            *limit = (batch.len() / 2).max(1);
            return true;
        }
        Verdict::Split => {
            reject(
                store,
                metrics,
                batch,
                "InfluxDB answered 413: line too large".into(),
            )
            .await;
            return true;
        }
        Verdict::Rejected(reason) => {
            tracing::error!(%reason, lines = batch.len(), "influxdb refused lines; kept in influx_rejected");
            reject(store, metrics, batch, reason).await;
            return true;
        }
        Verdict::Misconfigured(reason) => {
            tracing::error!(%reason, "influxdb refused the credentials, organisation or bucket; check [influxdb]");
            next_backoff(backoff)
        }
        Verdict::Retry(Some(after)) => after.min(Duration::from_secs(300)),
        Verdict::Retry(None) => next_backoff(backoff),
    };
    metrics.influx_write_failures.inc();
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(jittered(wait)) => true,
    }
}

async fn reject(store: &Store, metrics: &Metrics, batch: Vec<(i64, String)>, reason: String) {
    metrics.influx_lines_rejected.inc_by(batch.len() as u64);
    let (ids, lines) = batch.into_iter().unzip();
    if let Err(e) = store.outbox_done(ids, lines, reason, now_ms()).await {
        tracing::warn!(error = %e, "rejected lines not moved out of the spool");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_decide_what_happens_to_the_batch() {
        assert_eq!(verdict(204, None, ""), Verdict::Delivered);
        assert_eq!(
            verdict(429, Some("7"), ""),
            Verdict::Retry(Some(Duration::from_secs(7)))
        );
        assert_eq!(
            verdict(503, Some("Wed, 21 Oct 2026 07:28:00 GMT"), ""),
            Verdict::Retry(None)
        );
        assert_eq!(verdict(500, None, ""), Verdict::Retry(None));
        assert_eq!(verdict(413, None, ""), Verdict::Split);
        assert!(
            matches!(verdict(400, None, "partial write: field type conflict"), Verdict::Rejected(r) if r.contains("field type conflict"))
        );
        assert!(matches!(
            verdict(401, None, "unauthorized"),
            Verdict::Misconfigured(_)
        ));
    }
}
