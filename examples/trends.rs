//! The trend rules measured on the simulator: the scenarios of `vigil_sim::trends::cases`
//! (heart-failure decompensation, blood pressure creeping up, glucose falling to a low, and a
//! stable fleet) replayed through Vigil's own alert engine under the programme care plans as
//! shipped (`care-plans/*.json`), and reported per rule by `vigil_sim::trends::report`:
//! sensitivity, false alerts per patient-month, lead time against the fixed rule.
//!
//! Each patient has an engine of their own with the default `[alerts]` settings. Every reading
//! is judged at the moment it was taken (`now` = its time), after a tick at that moment, as a
//! running gateway judges a reading that arrives promptly and ticks while it waits; alerts are
//! the engine's `Open` effects. Why this replays the engine in-process instead of publishing to
//! a running `vigil serve`: docs/alerts.md, "Measured on the simulator".
//!
//! Run: `cargo run --example trends -- [--seed N] [--cases N] [--stable P] [--days D]
//! [--out DIR]`; prints the Markdown table and writes `<DIR>/<UTC stamp>-trends.{md,json}`
//! (DIR: `bench/results`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;
use vigil::alerts::engine::{Effect, Engine, Input, Settings};
use vigil::alerts::rules::CarePlan;
use vigil::domain::{DeviceId, Metric, Observation, PatientId};
use vigil_sim::trends::cases::{self, Case, Programme};
use vigil_sim::trends::report::{Alert, RULES, Report, rows};

#[derive(Parser)]
#[command(about = "Trend rules measured on simulated patients through Vigil's alert engine")]
struct Args {
    /// Seed of every simulated patient.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Scenario patients per condition.
    #[arg(long, default_value_t = 40)]
    cases: usize,
    /// Stable patients per programme.
    #[arg(long, default_value_t = 40)]
    stable: usize,
    /// Days each stable patient is counted (after a 35-day warm-up).
    #[arg(long, default_value_t = 90)]
    days: u32,
    /// Where the report is written.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

/// A programme's care plan as shipped.
fn plan(p: Programme) -> anyhow::Result<Arc<CarePlan>> {
    let json: &str = match p {
        Programme::HeartFailure => include_str!("../care-plans/heart-failure.json"),
        Programme::Hypertension => include_str!("../care-plans/hypertension.json"),
        Programme::Diabetes => include_str!("../care-plans/diabetes.json"),
    };
    let plan = CarePlan::parse(json.as_bytes())
        .with_context(|| format!("care-plans/{}.json", p.name()))?;
    Ok(Arc::new(plan))
}

/// Replays one patient's readings through an engine of their own; the alerts it opens.
fn replay(plan: &Arc<CarePlan>, case: &Case) -> anyhow::Result<Vec<Alert>> {
    let s = &case.subject;
    let patient = PatientId::parse(&s.patient).context("patient id")?;
    let device_id = DeviceId::parse("sim-device").context("device id")?;
    let Some(metric) = Metric::parse(s.programme.metric()) else {
        bail!("unknown metric {}", s.programme.metric());
    };
    let mut engine = Engine::new(Settings::default(), plan.clone());
    let start = case.readings.first().map_or(s.count_from_ms, |r| r.time_ms);
    engine.add_patient(patient.clone(), Some(plan.clone()), start);
    let mut alerts = Vec::new();
    let mut keep = |effects: Vec<Effect>| {
        for e in effects {
            if let Effect::Open {
                rule_id,
                message,
                at_ms,
                ..
            } = e
            {
                alerts.push(Alert {
                    patient: s.patient.clone(),
                    rule_id,
                    opened_ms: at_ms,
                    message,
                });
            }
        }
    };
    for r in &case.readings {
        let obs = Observation {
            patient_id: patient.clone(),
            device_id: device_id.clone(),
            metric,
            value: r.value,
            time_ms: r.time_ms,
        };
        keep(engine.handle(Input::Tick, r.time_ms));
        keep(engine.handle(Input::Observation(&obs), r.time_ms));
    }
    keep(engine.handle(Input::Tick, s.end_ms));
    Ok(alerts)
}

/// What the stable fleet's glucose forecasts were about: a fall or a rise.
fn forecast_note(alerts: &[Alert], cases: &[Case]) -> String {
    let stable: std::collections::HashSet<&str> = cases
        .iter()
        .filter(|c| c.subject.truth.is_none() && c.subject.programme == Programme::Diabetes)
        .map(|c| c.subject.patient.as_str())
        .collect();
    let counted: Vec<&Alert> = cases
        .iter()
        .filter(|c| stable.contains(c.subject.patient.as_str()))
        .flat_map(|c| {
            alerts.iter().filter(move |a| {
                a.patient == c.subject.patient
                    && a.rule_id == "glucose-forecast"
                    && (c.subject.count_from_ms..=c.subject.end_ms).contains(&a.opened_ms)
            })
        })
        .collect();
    let falling = counted
        .iter()
        .filter(|a| a.message.contains("falling"))
        .count();
    let rising = counted
        .iter()
        .filter(|a| a.message.contains("rising"))
        .count();
    format!(
        "`glucose-forecast` on the stable fleet: {} alerts, {falling} on a falling glucose \
         (a forecast below 70 mg/dL), {rising} on a rising one (above 250 mg/dL), {} steady.",
        counted.len(),
        counted.len() - falling - rising
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = cases::Settings {
        seed: args.seed,
        cases: args.cases,
        stable: args.stable,
        days: args.days,
    };
    let plans: Vec<(Programme, Arc<CarePlan>)> = Programme::ALL
        .into_iter()
        .map(|p| plan(p).map(|plan| (p, plan)))
        .collect::<anyhow::Result<_>>()?;
    let all = cases::all(&settings);
    let mut alerts = Vec::new();
    let mut readings = 0;
    for case in &all {
        let Some((_, plan)) = plans.iter().find(|(p, _)| *p == case.subject.programme) else {
            continue;
        };
        readings += case.readings.len();
        alerts.extend(replay(plan, case)?);
    }
    let subjects: Vec<_> = all.iter().map(|c| c.subject.clone()).collect();
    let now = jiff::Timestamp::now();
    let report = Report {
        generated_at: now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        seed: args.seed,
        cases: args.cases,
        stable: args.stable,
        days: args.days,
        engine: format!(
            "Rules as in `care-plans/<programme>.json`, judged by Vigil's alert engine \
             (`vigil::alerts::engine`, default `[alerts]` settings) in-process, each reading at \
             the time it was taken; {readings} readings, {} alerts opened.",
            alerts.len()
        ),
        rows: rows(&RULES, &subjects, &alerts),
        notes: vec![forecast_note(&alerts, &all)],
    };
    let md = report.markdown();
    print!("{md}");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let stamp = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let md_path = args.out.join(format!("{stamp}-trends.md"));
    let json_path = args.out.join(format!("{stamp}-trends.json"));
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(&json_path, json + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    eprintln!("wrote {} and {}", md_path.display(), json_path.display());
    Ok(())
}
