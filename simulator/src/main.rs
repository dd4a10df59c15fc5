//! `vigil-sim`: virtual patients and devices for Vigil's tests, demos and benchmarks. It speaks
//! only Vigil's public contract: the HTTP API and MQTT.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vigil_sim::fleet::{self, Counters, Plan, Target};
use vigil_sim::provision::{self, Api, Credentials};
use vigil_sim::scenario::Scenario;

#[derive(Parser)]
#[command(
    name = "vigil-sim",
    version,
    about = "Virtual patients and devices for Vigil"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create patients and their devices through the API; save the credentials.
    Provision {
        /// Vigil's HTTP base URL, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: String,
        /// An admin bearer token (or set VIGIL_TOKEN).
        #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long, default_value_t = 10)]
        patients: usize,
        /// Where to write the credentials (JSON, owner-readable only).
        #[arg(long)]
        out: PathBuf,
        /// Patient ids are PREFIX-0001, PREFIX-0002, …
        #[arg(long, default_value = "sim")]
        prefix: String,
        /// The care team the patients join (created when missing); its clinicians see them.
        /// Without it they join Vigil's default team, `default`.
        #[arg(long)]
        team: Option<String>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Connect the fleet over MQTT and play the patients' days.
    Run {
        #[arg(long)]
        credentials: PathBuf,
        /// mqtt://host:port or mqtts://host:port.
        #[arg(long)]
        mqtt: String,
        /// CA certificate (PEM) for mqtts://.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Real time the run lasts, e.g. 20s, 5m, 1h.
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        duration: Duration,
        /// Simulated seconds per real second. 1 is real time: the run starts now and each
        /// reading is stamped when it is sent. Faster (e.g. 600) replays DURATION × SPEED of
        /// the past, catching up with the clock as the run ends; slower starts now and falls
        /// behind the clock. No reading is ever stamped ahead of the clock.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Every patient's story (stable, deterioration, heart-failure, hypoglycaemia,
        /// hypertensive-crisis, device-silent, low-battery, clock-skew, malformed), or `mix`
        /// for one per patient in turn.
        #[arg(long, default_value = "stable")]
        scenario: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Admin token, to add the rules a story needs (device-silent) to its patients' plans.
        #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Also write the summary (with the expected alerts) to this file.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Fill in the past: enroll every patient of a credentials file from DAYS ago, record
    /// their devices' set-up, publish the readings of an adherence persona each (adherent,
    /// dropout, sporadic, barely) with the devices' own past times, and log the care team's
    /// time (past video visits as video time). Prints a JSON summary.
    Backfill {
        #[arg(long)]
        credentials: PathBuf,
        /// Vigil's HTTP base URL (default: the one in the credentials file).
        #[arg(long)]
        url: Option<String>,
        /// mqtt://host:port or mqtts://host:port.
        #[arg(long)]
        mqtt: String,
        /// CA certificate (PEM) for mqtts://.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// An admin bearer token (or set VIGIL_TOKEN).
        #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
        token: String,
        /// Days before today to start from (the enrollment's start); today is filled in too,
        /// up to now.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=365))]
        days: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The programme to enroll in (GET /api/v1/programs lists them).
        #[arg(long, default_value = "hypertension")]
        program: String,
        /// Set every patient's time zone (an IANA name, e.g. America/Chicago); without it each
        /// patient keeps theirs (their record's, else the clinic's).
        #[arg(long, value_parser = parse_zone)]
        timezone: Option<String>,
        /// The practitioner responsible for billing, on the enrollments.
        #[arg(long, default_value = "Dr Sim Okafor")]
        practitioner: String,
    },
    /// Video visits as load: N concurrent 1:1 visits (VP8 + audio both ways through Vigil's
    /// relay), or with --step, growing N until the loss exceeds --max-loss. Prints a markdown
    /// table.
    Visits {
        /// Vigil's HTTP base URL, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: String,
        /// An admin bearer token (or set VIGIL_TOKEN).
        #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
        token: String,
        /// Concurrent visits (two peers each).
        #[arg(long, default_value_t = 1)]
        visits: usize,
        /// Grow the number of visits (1, 2, 4, 8, 12, 16, 24, …) until the loss exceeds
        /// --max-loss; print the largest that stayed within it.
        #[arg(long)]
        step: bool,
        /// The largest step.
        #[arg(long, default_value_t = 64)]
        max_visits: usize,
        /// Measurement window of each step, seconds (after every visit is established).
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Video bitrate per peer, kbit/s.
        #[arg(long, default_value_t = 1000)]
        kbps: u32,
        /// Video frames per second.
        #[arg(long, default_value_t = 30)]
        fps: u32,
        /// Loss (percent) a step may have and still count.
        #[arg(long, default_value_t = 1.0)]
        max_loss: f64,
        /// Vigil's process id, to report its CPU (same machine only).
        #[arg(long)]
        vigil_pid: Option<u32>,
    },
    /// Measure Vigil end to end (see the README).
    Bench {
        /// A short run for the test suite (no timing assertions).
        #[arg(long)]
        quick: bool,
        /// Idle devices to connect for the memory measurement (default: 300 quick, 10000 full).
        #[arg(long)]
        idle_devices: Option<usize>,
        /// Instead: Vigil as one gateway of 1, 2, … N instances on one PostgreSQL (each count
        /// on a throw-away server started by scripts/pg-temp): readings/s stored and publish →
        /// alert latency for each.
        #[arg(long, value_name = "N")]
        cluster: Option<usize>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 20s, 5m or 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unit must be ms, s, m or h")),
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("{s:?} must be more than zero"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_zone(s: &str) -> Result<String, String> {
    jiff::tz::TimeZone::get(s)
        .map(|_| s.to_owned())
        .map_err(|_| format!("{s:?} is not an IANA time-zone name like America/Chicago"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-sim: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Provision {
            url,
            token,
            patients,
            out,
            prefix,
            team,
            seed,
        } => {
            let api = Api::new(&url, &token);
            let tty = std::io::stderr().is_terminal();
            let creds =
                provision::provision(&api, &url, patients, &prefix, team.as_deref(), seed, |n| {
                    if tty {
                        eprint!("\rprovisioned {n}/{patients} patients");
                    }
                })
                .await?;
            if tty {
                eprintln!();
            }
            creds.save(&out)?;
            eprintln!(
                "vigil-sim: {} patients on care team {}, {} devices; credentials in {}",
                creds.patients.len(),
                team.as_deref().unwrap_or("default"),
                creds.device_count(),
                out.display()
            );
            Ok(())
        }
        Command::Run {
            credentials,
            mqtt,
            ca,
            duration,
            speed,
            scenario,
            seed,
            token,
            report,
        } => {
            let creds = Credentials::load(&credentials)?;
            let target = Target::parse(&mqtt, ca.as_deref())?;
            if !(speed.is_finite() && speed > 0.0) {
                anyhow::bail!("--speed must be more than zero");
            }
            let scenario = match scenario.as_str() {
                "mix" => None,
                name => Some(Scenario::parse(name).with_context(|| {
                    format!(
                        "--scenario {name:?} is not one of mix, {}",
                        Scenario::ALL.map(Scenario::name).join(", ")
                    )
                })?),
            };
            let (sim_start, sim_end) = Plan::window(now_ms(), duration, speed);
            let plan = Plan {
                sim_start,
                sim_end,
                speed,
                seed,
                scenario,
            };
            add_story_rules(&creds, &plan, token.as_deref()).await?;
            let counters = Arc::new(Counters::default());
            let progress = tokio::spawn(show_progress(
                counters.clone(),
                duration,
                creds.device_count() as u64,
            ));
            let summary = fleet::run(&creds, &target, &plan, counters).await?;
            progress.abort();
            let text = serde_json::to_string_pretty(&summary)?;
            if let Some(path) = report {
                std::fs::write(&path, &text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            println!("{text}");
            eprintln!(
                "vigil-sim: {} publishes ({} readings, {} malformed on purpose), {} acknowledged, in {:.1} s",
                summary.published,
                summary.readings,
                summary.malformed,
                summary.acknowledged,
                summary.real_seconds
            );
            Ok(())
        }
        Command::Backfill {
            credentials,
            url,
            mqtt,
            ca,
            token,
            days,
            seed,
            program,
            timezone,
            practitioner,
        } => {
            let creds = Credentials::load(&credentials)?;
            let target = Target::parse(&mqtt, ca.as_deref())?;
            let api = Api::new(url.as_deref().unwrap_or(&creds.api), &token);
            let options = vigil_sim::backfill::Options {
                days,
                seed,
                program,
                timezone,
                practitioner,
            };
            let summary =
                vigil_sim::backfill::run(&creds, &api, &target, &options, now_ms()).await?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            eprintln!(
                "vigil-sim: {} patients from {} to {} ({}), {} readings published, {} set-ups and {} time entries logged ({} minutes), {} already there",
                summary.patients,
                summary.start,
                summary.today,
                summary
                    .personas
                    .iter()
                    .map(|(p, n)| format!("{n} {p}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                summary.readings,
                summary.setups,
                summary.time_entries,
                summary.minutes,
                summary.already_logged
            );
            Ok(())
        }
        Command::Bench {
            quick,
            idle_devices,
            cluster: Some(n),
        } => {
            let _ = idle_devices;
            vigil_sim::bench_cluster::run(n, quick).await
        }
        Command::Bench {
            quick,
            idle_devices,
            cluster: None,
        } => vigil_sim::bench::run(quick, idle_devices).await,
        Command::Visits {
            url,
            token,
            visits,
            step,
            max_visits,
            seconds,
            kbps,
            fps,
            max_loss,
            vigil_pid,
        } => {
            if !(seconds.is_finite() && seconds > 0.0) {
                anyhow::bail!("--seconds must be more than zero");
            }
            if visits == 0 || kbps == 0 || fps == 0 {
                anyhow::bail!("--visits, --kbps and --fps must be more than zero");
            }
            let o = vigil_sim::visit_load::LoadOptions {
                url,
                token,
                visits,
                step,
                max_visits,
                seconds,
                kbps,
                fps,
                max_loss_pct: max_loss,
                vigil_pid,
            };
            let results = vigil_sim::visit_load::run(&o).await?;
            print!("{}", vigil_sim::visit_load::markdown(&o, &results));
            Ok(())
        }
    }
}

/// Adds the rules a story needs (e.g. `hr-silent` for device-silent) to the default plan of
/// the patients living it.
async fn add_story_rules(
    creds: &Credentials,
    plan: &Plan,
    token: Option<&str>,
) -> anyhow::Result<()> {
    for (i, p) in creds.patients.iter().enumerate() {
        let extra = plan.scenario_of(i).extra_rules();
        if extra.is_empty() {
            continue;
        }
        let Some(token) = token else {
            eprintln!(
                "vigil-sim: patient {} lives {:?}, whose rule needs --token to be added; skipped",
                p.id,
                plan.scenario_of(i).name()
            );
            continue;
        };
        let api = Api::new(&creds.api, token);
        let current = api
            .call(
                reqwest::Method::GET,
                &format!("/patients/{}/care-plan", p.id),
                None,
            )
            .await?;
        let mut rules: Vec<serde_json::Value> = current["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| !extra.iter().any(|x| x["id"] == r["id"]))
            .collect();
        rules.extend(extra);
        api.call(
            reqwest::Method::PUT,
            &format!("/patients/{}/care-plan", p.id),
            Some(serde_json::json!({ "rules": rules })),
        )
        .await?;
    }
    Ok(())
}

/// A progress bar and live summary on standard error (a line every 5 s when not a terminal).
async fn show_progress(c: Arc<Counters>, duration: Duration, devices: u64) {
    let started = std::time::Instant::now();
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(5)
    };
    loop {
        tokio::time::sleep(every).await;
        let f = (started.elapsed().as_secs_f64() / duration.as_secs_f64()).min(1.0);
        let bar: String = (0..30)
            .map(|i| if (i as f64) < f * 30.0 { '#' } else { '.' })
            .collect();
        let line = format!(
            "[{bar}] {:3.0}%  connected {}/{devices}  published {}  acked {}  readings {}  malformed {}  errors {}",
            f * 100.0,
            c.connected.load(Ordering::Relaxed),
            c.published.load(Ordering::Relaxed),
            c.acked.load(Ordering::Relaxed),
            c.readings.load(Ordering::Relaxed),
            c.malformed.load(Ordering::Relaxed),
            c.connect_errors.load(Ordering::Relaxed),
        );
        if tty {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
    }
}
