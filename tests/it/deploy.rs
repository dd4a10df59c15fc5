//! The production deployment files — `docker-compose.yml`, `deploy/` and `dashboards/grafana/`
//! — checked against each other and against Vigil itself: the dashboards are valid Grafana JSON
//! whose Flux queries read only what Vigil writes, through the provisioned data source; the
//! compose file mounts what the configs name; `deploy/vigil.toml` loads; and the Mosquitto and
//! Vigil configs carry a reading from a device over MQTTS into an InfluxDB-compatible store.
//!
//! No Docker here: YAML is read roughly (by indentation), which is enough for these files.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use vigil::config::{Config, LogFormat, MqttMode, Overrides};
use vigil::domain::Metric;

use crate::support::{Gateway, Victoria, eventually, free_port, issue_cert, run};

/// The uid every panel refers to and the data source provisioning gives.
const DATASOURCE_UID: &str = "vigil-influxdb";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ------------------------------------------------------------------------------------------
// Grafana dashboards

/// Every dashboard of `dashboards/grafana/`, parsed, by file name.
fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("dashboards/grafana")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{name} is not valid JSON: {e}"));
            out.push((name, v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    for required in ["patient-vitals.json", "population-overview.json"] {
        assert!(
            out.iter().any(|(n, _)| n == required),
            "dashboards/grafana has no {required}"
        );
    }
    out
}

fn dashboard(name: &str) -> Value {
    dashboards()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap()
}

/// Every panel, the panels nested in rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The Flux queries of one panel.
fn panel_queries(panel: &Value) -> Vec<&str> {
    panel["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            t["query"].as_str().unwrap_or_else(|| {
                panic!(
                    "panel {} target {} has no Flux query",
                    panel["title"], t["refId"]
                )
            })
        })
        .collect()
}

/// Every Flux query of a dashboard (panels and query variables), with where it is.
fn flux_queries(dashboard: &Value) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for q in panel_queries(p) {
            out.push((format!("panel {}", p["title"]), q));
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] == "query" {
            let q = var["query"]
                .as_str()
                .unwrap_or_else(|| panic!("variable {} has no Flux query string", var["name"]));
            out.push((format!("variable {}", var["name"]), q));
        }
    }
    out
}

/// The metrics a Flux query filters on (`r._field == "…"` or `!=`); panics on a field test it
/// cannot read, such as a regular expression.
fn fields_named(query: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for (i, _) in query.match_indices("_field") {
        let rest = query[i + "_field".len()..].trim_start();
        let Some(rest) = rest.strip_prefix("==").or_else(|| rest.strip_prefix("!=")) else {
            // Column lists such as keep(columns: ["_field"]) or rename: not a field test.
            assert!(
                !rest.starts_with("=~") && !rest.starts_with("!~"),
                "field regex in {query}"
            );
            continue;
        };
        let rest = rest
            .trim_start()
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("a _field comparison without a string literal in {query}"));
        out.push(&rest[..rest.find('"').unwrap()]);
    }
    out
}

/// The metrics a panel's queries name.
fn panel_metrics(panel: &Value) -> BTreeSet<Metric> {
    panel_queries(panel)
        .into_iter()
        .flat_map(fields_named)
        .map(|f| Metric::parse(f).unwrap_or_else(|| panic!("{f:?} is not a Vigil metric")))
        .collect()
}

/// The Grafana unit that shows a metric's canonical UCUM unit (`None`: counts and codes).
fn grafana_unit(m: Metric) -> Option<&'static str> {
    match m.unit() {
        "/min" => Some("suffix: /min"),
        "%" => Some("percent"),
        "mm[Hg]" => Some("suffix: mmHg"),
        "Cel" => Some("celsius"),
        "kg" => Some("masskg"),
        "mg/dL" => Some("suffix: mg/dL"),
        _ => None,
    }
}

#[test]
fn dashboards_are_grafana_json_with_unique_panel_ids_and_a_grid_position_each() {
    let mut uids = HashSet::new();
    for (name, d) in dashboards() {
        let schema = d["schemaVersion"].as_u64().unwrap_or(0);
        assert!(schema >= 36, "{name}: schemaVersion {schema} < 36");
        let uid = d["uid"].as_str().unwrap_or_default();
        assert!(!uid.is_empty(), "{name}: no uid");
        assert!(uids.insert(uid.to_owned()), "{name}: uid {uid} used twice");
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{name}: no title"
        );
        let all = panels(&d);
        assert!(!all.is_empty(), "{name}: no panels");
        let mut ids = HashSet::new();
        for p in all {
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: panel {} has no numeric id", p["title"]));
            assert!(ids.insert(id), "{name}: panel id {id} used twice");
            let g = &p["gridPos"];
            let [h, w, x, _y] = ["h", "w", "x", "y"].map(|k| {
                g[k].as_u64()
                    .unwrap_or_else(|| panic!("{name}: panel {id} gridPos.{k} missing: {g}"))
            });
            assert!(
                h > 0 && w > 0 && x + w <= 24,
                "{name}: panel {id} gridPos {g}"
            );
            assert!(
                p["type"].as_str().is_some(),
                "{name}: panel {id} has no type"
            );
        }
    }
}

#[test]
fn every_panel_target_and_variable_uses_the_provisioned_datasource() {
    // The uid the provisioning file gives the InfluxDB data source.
    let yaml = read("deploy/grafana/provisioning/datasources/vigil-influxdb.yaml");
    let pairs = yaml_pairs(&yaml);
    let get = |key: &str| -> Vec<&str> {
        pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(
        get("uid"),
        [DATASOURCE_UID],
        "one data source, uid {DATASOURCE_UID}"
    );
    assert_eq!(get("type"), ["influxdb"]);
    assert_eq!(
        get("version"),
        ["Flux"],
        "the dashboards are written in Flux"
    );
    for key in ["organization", "defaultBucket", "token"] {
        let v = get(key);
        assert!(
            v.len() == 1 && v[0].starts_with("${") && v[0].ends_with('}'),
            "{key} must come from the environment, not be written in the file: {v:?}"
        );
    }

    let mut checked = 0;
    for (name, d) in dashboards() {
        for p in panels(&d) {
            if p["type"] == "row" {
                continue;
            }
            let id = &p["id"];
            assert_eq!(p["datasource"]["uid"], DATASOURCE_UID, "{name}: panel {id}");
            assert_eq!(p["datasource"]["type"], "influxdb", "{name}: panel {id}");
            let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            assert!(!targets.is_empty(), "{name}: panel {id} has no query");
            for t in targets {
                assert_eq!(
                    t["datasource"]["uid"], DATASOURCE_UID,
                    "{name}: panel {id} target {}",
                    t["refId"]
                );
                checked += 1;
            }
        }
        for var in d["templating"]["list"].as_array().into_iter().flatten() {
            if var["type"] == "query" {
                assert_eq!(
                    var["datasource"]["uid"], DATASOURCE_UID,
                    "{name}: {}",
                    var["name"]
                );
            }
        }
    }
    assert!(checked >= 10, "only {checked} targets found");
}

#[test]
fn flux_queries_read_the_vitals_measurement_and_name_only_vigil_metrics() {
    let mut named = BTreeSet::new();
    for (name, d) in dashboards() {
        let queries = flux_queries(&d);
        assert!(!queries.is_empty(), "{name}: no Flux queries");
        for (at, q) in queries {
            assert!(
                q.contains(r#"from(bucket: "vitals")"#),
                "{name} {at}: does not read bucket vitals:\n{q}"
            );
            assert!(
                q.contains(r#"r._measurement == "vitals""#),
                "{name} {at}: does not filter measurement vitals:\n{q}"
            );
            assert!(
                q.contains("v.timeRangeStart") || q.contains("v.timeRangeStop"),
                "{name} {at}: ignores the dashboard's time range:\n{q}"
            );
            for f in fields_named(q) {
                assert!(
                    Metric::parse(f).is_some(),
                    "{name} {at}: {f:?} is not a Vigil metric name"
                );
                named.insert(f.to_owned());
            }
        }
    }
    assert!(named.len() >= 7, "the dashboards name only {named:?}");
}

#[test]
fn panels_show_each_metric_in_its_canonical_unit() {
    let mut checked = 0;
    for (name, d) in dashboards() {
        for p in panels(&d) {
            let metrics = panel_metrics(p);
            let units: Vec<Option<&str>> = metrics
                .iter()
                .map(|m| grafana_unit(*m))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            // A panel showing values of one measured quantity carries its unit (counts of
            // patients or readings have none); tables carry it per column.
            let counts = panel_queries(p)
                .iter()
                .any(|q| q.contains("count()") || q.contains("fn: count"));
            if let [Some(unit)] = units[..]
                && p["type"] != "table"
                && !counts
            {
                assert_eq!(
                    p["fieldConfig"]["defaults"]["unit"], unit,
                    "{name}: panel {} shows {metrics:?}",
                    p["title"]
                );
                checked += 1;
            }
            for o in p["fieldConfig"]["overrides"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let Some(metric) = o["matcher"]["options"].as_str().and_then(Metric::parse) else {
                    continue;
                };
                let unit = o["properties"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|prop| prop["id"] == "unit")
                    .map(|prop| &prop["value"]);
                assert_eq!(
                    unit.and_then(Value::as_str),
                    grafana_unit(metric),
                    "{name}: panel {} column {}",
                    p["title"],
                    metric.name()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 14, "only {checked} panels or columns checked");
}

#[test]
fn dashboards_cover_the_population_and_each_patient_s_vitals() {
    // Population: latest SpO2, heart rate, systolic BP and temperature per patient; readings
    // over time; how many patients reported in the last 24 h.
    let pop = dashboard("population-overview.json");
    let pop_metrics: BTreeSet<Metric> = panels(&pop).into_iter().flat_map(panel_metrics).collect();
    for m in [
        Metric::Spo2,
        Metric::HeartRate,
        Metric::BpSystolic,
        Metric::BodyTemperature,
    ] {
        assert!(pop_metrics.contains(&m), "population overview lacks {m}");
    }
    let pop_queries = flux_queries(&pop);
    assert!(
        pop_queries
            .iter()
            .any(|(_, q)| q.contains(r#"distinct(column: "patient")"#)
                && q.contains("24h")
                && q.contains("count()")),
        "no count of patients reporting in the last 24 h"
    );
    assert!(
        pop_queries
            .iter()
            .any(|(_, q)| q.contains("aggregateWindow(") && q.contains("fn: count")),
        "no readings-over-time panel"
    );

    // Patient: a `patient` variable from the tag's values, every panel filtered by it, a panel
    // per vital, BP systolic and diastolic together, dense series aggregated.
    let pat = dashboard("patient-vitals.json");
    let vars = pat["templating"]["list"].as_array().unwrap();
    let var = vars
        .iter()
        .find(|v| v["name"] == "patient")
        .expect("a patient variable");
    let var_query = var["query"].as_str().unwrap();
    assert!(
        var_query.contains(r#"distinct(column: "patient")"#),
        "the patient variable lists the patient tag's values: {var_query}"
    );
    let all = panels(&pat);
    for p in &all {
        for q in panel_queries(p) {
            assert!(
                q.contains(r#"r.patient == "${patient}""#),
                "panel {} is not filtered by the patient variable:\n{q}",
                p["title"]
            );
        }
    }
    let charts: Vec<BTreeSet<Metric>> = all
        .iter()
        .filter(|p| p["type"] == "timeseries")
        .map(|p| panel_metrics(p))
        .collect();
    for m in [
        Metric::HeartRate,
        Metric::Spo2,
        Metric::BodyTemperature,
        Metric::BodyWeight,
        Metric::Glucose,
    ] {
        assert!(
            charts.iter().any(|c| c.contains(&m)),
            "no time series of {m}"
        );
    }
    assert!(
        charts
            .iter()
            .any(|c| c.contains(&Metric::BpSystolic) && c.contains(&Metric::BpDiastolic)),
        "systolic and diastolic blood pressure are not charted together"
    );
    for p in all.iter().filter(|p| p["type"] == "timeseries") {
        let dense = panel_metrics(p)
            .iter()
            .any(|m| matches!(m, Metric::HeartRate | Metric::Spo2 | Metric::Glucose));
        if dense {
            for q in panel_queries(p) {
                assert!(
                    q.contains("aggregateWindow(every: v.windowPeriod"),
                    "dense series of panel {} are not aggregated:\n{q}",
                    p["title"]
                );
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Rough YAML: the compose file and Grafana's provisioning files

/// `key: value` pairs of a simple YAML file (list dashes and quotes removed, comments dropped).
fn yaml_pairs(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.trim_start_matches("- "))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), unquote(v.trim()).to_owned()))
        .collect()
}

fn unquote(s: &str) -> &str {
    s.trim_matches('"').trim_matches('\'')
}

/// The lines of one service of docker-compose.yml.
fn service(compose: &str, name: &str) -> Vec<String> {
    let header = format!("  {name}:");
    let mut lines = compose.lines().skip_while(|l| *l != header);
    assert!(
        lines.next().is_some(),
        "docker-compose.yml has no service {name}"
    );
    lines
        .take_while(|l| l.trim().is_empty() || l.starts_with("    "))
        .map(str::to_owned)
        .collect()
}

/// The items of a list or map under `key:` (4-space indent) in a service's lines, comments
/// dropped.
fn section<'a>(service: &'a [String], key: &str) -> Vec<&'a str> {
    let header = format!("    {key}:");
    service
        .iter()
        .skip_while(|l| **l != header)
        .skip(1)
        .take_while(|l| l.starts_with("      "))
        .map(|l| l.trim())
        .filter(|l| !l.starts_with('#'))
        .collect()
}

/// A service's mounts as (source, target).
fn mounts(service: &[String]) -> Vec<(String, String)> {
    section(service, "volumes")
        .into_iter()
        .filter_map(|l| l.strip_prefix("- "))
        .map(|m| {
            let mut parts = unquote(m).split(':');
            let source = parts.next().unwrap().to_owned();
            let target = parts.next().unwrap_or_default().to_owned();
            (source, target)
        })
        .collect()
}

fn target_of<'a>(mounts: &'a [(String, String)], source: &str) -> &'a str {
    mounts
        .iter()
        .find(|(s, _)| s == source)
        .map(|(_, t)| t.as_str())
        .unwrap_or_else(|| panic!("{source} is not mounted: {mounts:?}"))
}

/// A service's environment as written (values uninterpolated).
fn environment(service: &[String]) -> BTreeMap<String, String> {
    section(service, "environment")
        .into_iter()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), unquote(v).to_owned()))
        .collect()
}

/// `deploy/env.example` as a map.
fn env_example() -> BTreeMap<String, String> {
    read("deploy/env.example")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Compose's interpolation of a value (each `${A}`, `${A:-default}`, `${A:?error}` in it) from
/// `vars`.
fn interpolate(value: &str, vars: &BTreeMap<String, String>) -> String {
    let Some((before, rest)) = value.split_once("${") else {
        return value.to_owned();
    };
    let (inner, after) = rest.split_once('}').expect("a closed ${");
    let (name, default) = match inner.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (inner.split(":?").next().unwrap(), None),
    };
    let v = vars
        .get(name)
        .filter(|v| !v.is_empty())
        .cloned()
        .or(default.map(str::to_owned))
        .unwrap_or_default();
    format!("{before}{v}{}", interpolate(after, vars))
}

/// Every variable docker-compose.yml interpolates (`$$` is a literal dollar).
fn compose_variables(compose: &str) -> BTreeSet<String> {
    let text = compose.replace("$$", "");
    text.match_indices("${")
        .map(|(i, _)| {
            text[i + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn compose_mounts_what_the_configs_name() {
    let compose = read("docker-compose.yml");
    let cfg = load_deploy_config();

    // Vigil: the config file it is started with, the broker's CA, its data volume.
    let vigil = service(&compose, "vigil");
    let vm = mounts(&vigil);
    let config_path = target_of(&vm, "./deploy/vigil.toml");
    let command = vigil
        .iter()
        .find(|l| l.trim_start().starts_with("command:"));
    assert!(
        command.is_some_and(|c| c.contains(&format!(r#""--config", "{config_path}""#))),
        "vigil is not started with --config {config_path}: {command:?}"
    );
    assert_eq!(
        Some(Path::new(target_of(&vm, "./deploy/certs/ca.crt"))),
        cfg.mqtt.ca_file.as_deref(),
        "mqtt.ca_file is not where the CA is mounted"
    );
    assert_eq!(
        Path::new(target_of(&vm, "vigil-data")),
        cfg.data_dir,
        "data_dir is not on the vigil-data volume"
    );

    // Mosquitto: its config, its certificates where the config looks for them, and Vigil's
    // generated files at the same path in both containers (vigil.conf names absolute paths).
    let mosquitto = service(&compose, "mosquitto");
    let mm = mounts(&mosquitto);
    assert_eq!(
        target_of(&mm, "./deploy/mosquitto/mosquitto.conf"),
        "/mosquitto/config/mosquitto.conf"
    );
    let conf = read("deploy/mosquitto/mosquitto.conf");
    let conf_value = |key: &str| -> Vec<&str> {
        conf.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .map(str::trim)
            .collect()
    };
    let certs = target_of(&mm, "./deploy/certs");
    for file in conf_value("certfile")
        .into_iter()
        .chain(conf_value("keyfile"))
    {
        assert!(
            file.starts_with(&format!("{certs}/")),
            "{file} is not in the mounted {certs}"
        );
    }
    for port in ["1883", "8883"] {
        assert!(
            conf_value("listener").contains(&port),
            "mosquitto.conf has no listener {port}"
        );
    }
    let include = conf_value("include_dir");
    assert_eq!(include.len(), 1, "one include_dir: {include:?}");
    assert_eq!(target_of(&vm, "mosquitto-auth"), include[0]);
    assert_eq!(target_of(&mm, "mosquitto-auth"), include[0]);
    assert!(
        read("Dockerfile").contains(include[0]),
        "the image does not create {} for the vigil user",
        include[0]
    );

    // Grafana: the provisioned data source and dashboard provider, and the dashboards where
    // the provider reads them.
    let grafana = service(&compose, "grafana");
    let gm = mounts(&grafana);
    assert_eq!(
        target_of(&gm, "./deploy/grafana/provisioning/datasources"),
        "/etc/grafana/provisioning/datasources"
    );
    assert_eq!(
        target_of(&gm, "./deploy/grafana/provisioning/dashboards"),
        "/etc/grafana/provisioning/dashboards"
    );
    let provider = yaml_pairs(&read("deploy/grafana/provisioning/dashboards/vigil.yaml"));
    let path = provider
        .iter()
        .find(|(k, _)| k == "path")
        .map(|(_, v)| v.as_str());
    assert_eq!(Some(target_of(&gm, "./dashboards/grafana")), path);

    // Only MQTTS and the video relay's UDP range (the browsers' media must reach it) face the
    // network; the API, Grafana, InfluxDB and plain MQTT stay on loopback. The range published
    // is the one Vigil's config binds.
    let relay = "40000-40099:40000-40099/udp";
    assert!(
        read("deploy/vigil.toml").contains(r#"udp_ports = "40000-40099""#),
        "deploy/vigil.toml's video.udp_ports is not the range the compose file publishes"
    );
    for name in ["vigil", "mosquitto", "influxdb", "grafana"] {
        for port in section(&service(&compose, name), "ports") {
            let port = unquote(port.trim_start_matches("- "));
            assert!(
                port.starts_with("127.0.0.1:")
                    || port == "8883:8883"
                    || (name == "vigil" && port == relay),
                "{name} publishes {port} beyond the host's loopback"
            );
        }
    }
    assert!(
        section(&vigil, "ports").contains(&r#"- "127.0.0.1:8080:8080""#),
        "the API is not on the host's 127.0.0.1:8080"
    );
}

#[test]
fn compose_secrets_come_from_env_example_and_vigil_accepts_its_environment() {
    let compose = read("docker-compose.yml");
    let example = env_example();
    for var in compose_variables(&compose) {
        assert!(
            example.contains_key(&var),
            "deploy/env.example does not document {var}"
        );
    }
    for (k, v) in &example {
        if k.contains("PASSWORD") || k.contains("TOKEN") {
            assert!(
                v.contains("CHANGE-ME"),
                "{k} in env.example looks like a real secret"
            );
        }
    }
    for name in [
        "vigil",
        "mosquitto",
        "influxdb",
        "grafana",
        "postgres",
        "vigil1",
        "vigil2",
        "vigil3",
        "haproxy",
    ] {
        for (k, v) in environment(&service(&compose, name)) {
            if k.contains("PASSWORD") || k.contains("TOKEN") {
                assert!(
                    v.starts_with("${"),
                    "{name}: {k} is written in the compose file"
                );
            }
        }
    }

    // Every VIGIL_* variable the compose file gives Vigil is one its loader accepts (an
    // unknown key stops start-up), and the secrets replace the file's placeholders.
    let env: Vec<(String, String)> = environment(&service(&compose, "vigil"))
        .iter()
        .map(|(k, v)| (k.clone(), interpolate(v, &example)))
        .collect();
    for k in ["VIGIL_MQTT__PASSWORD", "VIGIL_INFLUXDB__TOKEN"] {
        assert!(env.iter().any(|(n, _)| n == k), "vigil does not get {k}");
    }
    let cfg = Config::load(
        Some(&root().join("deploy/vigil.toml")),
        env.clone(),
        &Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("vigil rejects its compose environment {env:?}: {e}"));
    let value = |k: &str| env.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(cfg.mqtt.password, Some(value("VIGIL_MQTT__PASSWORD")));
    assert_eq!(cfg.influxdb.unwrap().token, value("VIGIL_INFLUXDB__TOKEN"));

    // Grafana's data source reads its org, bucket and token from the grafana service.
    let grafana_env = environment(&service(&compose, "grafana"));
    let yaml = read("deploy/grafana/provisioning/datasources/vigil-influxdb.yaml");
    for var in compose_variables(&yaml) {
        assert!(
            grafana_env.contains_key(&var),
            "the data source uses {var}, which the grafana service does not set"
        );
    }
}

// ------------------------------------------------------------------------------------------
// The cluster profile

/// The lines of a top-level extension block (`x-…: &anchor`) of docker-compose.yml.
fn extension(compose: &str, name: &str) -> Vec<String> {
    let mut lines = compose
        .lines()
        .skip_while(|l| !l.starts_with(&format!("{name}:")));
    assert!(lines.next().is_some(), "docker-compose.yml has no {name}");
    lines
        .take_while(|l| l.trim().is_empty() || l.starts_with("  "))
        .map(|l| format!("  {l}"))
        .collect()
}

/// The profiles a service is in, its own or its extension's (`<<: *anchor`).
fn profiles(compose: &str, service_lines: &[String]) -> String {
    let own = |lines: &[String]| {
        lines.iter().find_map(|l| {
            l.trim()
                .strip_prefix("profiles:")
                .map(|p| p.trim().to_owned())
        })
    };
    own(service_lines)
        .or_else(|| {
            let anchor = service_lines
                .iter()
                .find_map(|l| l.trim().strip_prefix("<<: *").map(str::to_owned))?;
            let block = compose
                .lines()
                .find(|l| l.ends_with(&format!("&{anchor}")))?
                .split(':')
                .next()?
                .to_owned();
            own(&extension(compose, &block))
        })
        .unwrap_or_default()
}

/// The `cluster` profile: PostgreSQL, three Vigil instances on it and HAProxy in front, wired
/// to each other as deploy/vigil-cluster.toml and deploy/haproxy.cfg expect, with the single
/// stack's own services in the other profile, and the HAProxy config accepted by HAProxy
/// itself with the compose file's environment.
#[tokio::test]
async fn the_cluster_profile_puts_three_instances_on_postgresql_behind_haproxy() {
    let compose = read("docker-compose.yml");
    let example = env_example();
    assert_eq!(
        example.get("COMPOSE_PROFILES").map(String::as_str),
        Some("single"),
        "env.example chooses a profile"
    );
    for name in ["vigil", "mosquitto"] {
        assert_eq!(
            profiles(&compose, &service(&compose, name)),
            "[single]",
            "{name}"
        );
    }
    for name in ["postgres", "vigil1", "vigil2", "vigil3", "haproxy"] {
        assert_eq!(
            profiles(&compose, &service(&compose, name)),
            "[cluster]",
            "{name}"
        );
    }
    for name in ["influxdb", "grafana"] {
        assert_eq!(
            profiles(&compose, &service(&compose, name)),
            "",
            "{name}: both stacks"
        );
    }

    let pg = environment(&service(&compose, "postgres"));
    let pg_value = |k: &str| interpolate(&pg[k], &example);
    let instance_block = extension(&compose, "x-vigil-instance");
    let command = instance_block
        .iter()
        .find(|l| l.trim_start().starts_with("command:"))
        .expect("the instances' command");
    let haproxy_env: BTreeMap<String, String> = environment(&service(&compose, "haproxy"))
        .into_iter()
        .map(|(k, v)| (k, interpolate(&v, &example)))
        .collect();
    let mut ranges = BTreeSet::new();
    for n in 1..=3 {
        let name = format!("vigil{n}");
        let svc = service(&compose, &name);
        let env: Vec<(String, String)> = environment(&svc)
            .iter()
            .map(|(k, v)| (k.clone(), interpolate(v, &example)))
            .collect();
        let vm = mounts(&svc);
        let config_path = target_of(&vm, "./deploy/vigil-cluster.toml");
        assert!(
            command.contains(&format!(r#""--config", "{config_path}""#)),
            "{name} is not started with --config {config_path}: {command}"
        );
        let cfg = Config::load(
            Some(&root().join("deploy/vigil-cluster.toml")),
            env.clone(),
            &Overrides::default(),
        )
        .unwrap_or_else(|e| panic!("{name} rejects its compose environment {env:?}: {e}"));
        assert_eq!(cfg.mqtt.mode, MqttMode::Embedded, "{name}");
        let db = cfg.database.as_ref().expect("a database").url.clone();
        assert_eq!(
            db,
            format!(
                "postgres://{}:{}@postgres:5432/{}?sslmode=disable",
                pg_value("POSTGRES_USER"),
                pg_value("POSTGRES_PASSWORD"),
                pg_value("POSTGRES_DB")
            ),
            "{name}: the database the postgres service creates"
        );
        let http_port = cfg.http_addr().port();
        assert_eq!(cfg.http.internal_url, format!("http://{name}:{http_port}"));
        assert_eq!(
            Path::new(target_of(&vm, &format!("{name}-data"))),
            cfg.data_dir,
            "{name}: data_dir on its own volume"
        );
        let tls = cfg.mqtt.tls.as_ref().expect("MQTTS");
        assert!(tls.only, "{name}: MQTTS only");
        assert_eq!(
            Some(Path::new(target_of(&vm, "./deploy/certs"))),
            tls.cert.parent(),
            "{name}: the certificate where the certs are mounted"
        );
        let mqtt_port: u16 = tls.listen.rsplit_once(':').unwrap().1.parse().unwrap();
        // Its UDP range is its own and published as it is.
        let range = cfg.video.udp_ports.clone();
        assert!(
            ranges.insert(range.clone()),
            "{name}: {range} is another's too"
        );
        let ports: Vec<String> = section(&svc, "ports")
            .into_iter()
            .map(|p| unquote(p.trim_start_matches("- ")).to_owned())
            .collect();
        assert_eq!(ports, [format!("{range}:{range}/udp")], "{name} publishes");
        // HAProxy sends devices and people to it, and checks its health where it answers.
        assert_eq!(
            haproxy_env[&format!("VIGIL{n}_MQTT")],
            format!("{name}:{mqtt_port}")
        );
        assert_eq!(
            haproxy_env[&format!("VIGIL{n}_HTTP")],
            format!("{name}:{http_port}")
        );
        assert_eq!(
            haproxy_env[&format!("VIGIL{n}_HTTP_PORT")],
            http_port.to_string()
        );
    }
    assert!(
        section(&service(&compose, "postgres"), "ports").is_empty(),
        "PostgreSQL stays inside"
    );
    let haproxy = service(&compose, "haproxy");
    assert_eq!(
        target_of(&mounts(&haproxy), "./deploy/haproxy.cfg"),
        "/usr/local/etc/haproxy/haproxy.cfg"
    );
    let ports = section(&haproxy, "ports");
    assert!(ports.contains(&r#"- "8883:8883""#), "{ports:?}");
    assert!(ports.contains(&r#"- "127.0.0.1:8080:8080""#), "{ports:?}");
    let cfg_text = read("deploy/haproxy.cfg");
    for var in compose_variables(&cfg_text) {
        assert!(
            haproxy_env.contains_key(&var) || cfg_text.contains(&format!("${{{var}-")),
            "haproxy.cfg uses {var}, which the haproxy service does not set"
        );
    }

    // HAProxy itself accepts the file with that environment (names it cannot resolve here
    // start disabled and are looked up again, as in the compose network).
    let mut check = tokio::process::Command::new("/usr/sbin/haproxy");
    check
        .args(["-c", "-f"])
        .arg(root().join("deploy/haproxy.cfg"))
        .envs(&haproxy_env)
        .env("VIGIL_LB_MQTT", format!("127.0.0.1:{}", free_port()))
        .env("VIGIL_LB_HTTP", format!("127.0.0.1:{}", free_port()));
    let out = check
        .output()
        .await
        .expect("haproxy (./scripts/test installs it)");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains("Configuration file is valid"),
        "{said}"
    );
}

// ------------------------------------------------------------------------------------------
// deploy/vigil.toml

fn load_deploy_config() -> Config {
    Config::load(
        Some(&root().join("deploy/vigil.toml")),
        std::iter::empty(),
        &Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("deploy/vigil.toml: {e}"))
}

#[test]
fn deploy_vigil_toml_loads_in_external_mode_with_influxdb_and_every_key_commented() {
    let cfg = load_deploy_config();
    assert_eq!(cfg.mqtt.mode, MqttMode::External);
    assert!(
        cfg.mqtt.url.starts_with("mqtts://mosquitto:"),
        "{}",
        cfg.mqtt.url
    );
    assert!(cfg.mqtt.ca_file.is_some(), "mqtts without the broker's CA");
    assert!(cfg.mqtt.username.is_some());
    let password = cfg.mqtt.password.as_deref().unwrap_or_default();
    assert!(
        password.contains("change-me"),
        "mqtt.password is not a placeholder"
    );
    let influx = cfg.influxdb.as_ref().expect("an [influxdb] section");
    assert_eq!(influx.bucket, "vitals", "the dashboards read bucket vitals");
    assert_eq!(
        influx.measurement, "vitals",
        "the dashboards read measurement vitals"
    );
    assert!(
        influx.token.contains("change-me"),
        "influxdb.token is not a placeholder"
    );
    assert_eq!(cfg.log.format, LogFormat::Json);
    assert!(
        cfg.store.retention_days > 0,
        "no retention for the embedded store"
    );

    let text = read("deploy/vigil.toml");
    let mut previous = "";
    for line in text.lines() {
        let is_key = line.split_once(" = ").is_some_and(|(k, _)| {
            !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        });
        if is_key {
            assert!(
                previous.starts_with('#'),
                "deploy/vigil.toml: {line:?} has no comment above it"
            );
        }
        previous = line;
    }
}

// ------------------------------------------------------------------------------------------
// The stack without Docker: Mosquitto on deploy/mosquitto/mosquitto.conf and Vigil on
// deploy/vigil.toml (only paths, ports and secrets changed), a device over MQTTS, the reading
// in VictoriaMetrics through the InfluxDB write API.

const BROKER_PASSWORD: &str = "deploy-test-broker-password";

/// A CA and a server certificate for `mosquitto` and `localhost` (test fixture).
async fn make_certs(dir: &Path) {
    issue_cert(
        dir,
        "ca",
        "server",
        "mosquitto",
        Some("DNS:mosquitto,DNS:localhost"),
    )
    .await;
}

/// Replaces `from` by `to`, which must occur exactly `n` times (so a changed file fails here
/// instead of being tested half-rewritten).
fn swap(text: &str, from: &str, to: &str, n: usize) -> String {
    assert_eq!(
        text.matches(from).count(),
        n,
        "mosquitto.conf: expected {n} × {from:?}"
    );
    text.replace(from, to)
}

/// `vigil broker mosquitto-config` with deploy/vigil.toml, as the first-run steps run it.
async fn broker_config(data_dir: &Path, out: &Path) {
    let result = tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["broker", "mosquitto-config", "--config"])
        .arg(root().join("deploy/vigil.toml"))
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--out")
        .arg(out)
        .env("VIGIL_MQTT__PASSWORD", BROKER_PASSWORD)
        .output()
        .await
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let passwd = std::fs::read_to_string(out.join("passwd")).unwrap();
    assert!(passwd.starts_with("vigil-gateway:$7$"), "{passwd}");
}

async fn reload(broker: &tokio::process::Child) {
    let pid = broker.id().expect("mosquitto is running").to_string();
    assert!(run("kill", &["-HUP", &pid], None).await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_crosses_the_stack_configured_by_these_files() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, auth, persist) = (
        dir.path().join("certs"),
        dir.path().join("auth"),
        dir.path().join("data"),
    );
    for d in [&certs, &auth, &persist] {
        std::fs::create_dir(d).unwrap();
    }
    make_certs(&certs).await;

    // Mosquitto on the production config; paths and ports moved into the test's reach.
    let (plain, tls) = (free_port(), free_port());
    let conf = read("deploy/mosquitto/mosquitto.conf");
    let conf = swap(
        &conf,
        "include_dir /etc/mosquitto/vigil\n",
        &format!("include_dir {}\n", auth.display()),
        1,
    );
    let conf = swap(
        &conf,
        "persistence_location /mosquitto/data/\n",
        &format!("persistence_location {}/\n", persist.display()),
        1,
    );
    let conf = swap(
        &conf,
        "/etc/mosquitto/certs/",
        &format!("{}/", certs.display()),
        2,
    );
    let conf = swap(
        &conf,
        "listener 1883\n",
        &format!("listener {plain} 127.0.0.1\n"),
        1,
    );
    let mut conf = swap(
        &conf,
        "listener 8883\n",
        &format!("listener {tls} 127.0.0.1\n"),
        1,
    );
    // Tests may run as root: keep root so the 0600 files stay readable (the image instead
    // gives Vigil the uid of Mosquitto's user).
    conf.push_str("user root\n");
    let conf_path = dir.path().join("mosquitto.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let log_path = dir.path().join("mosquitto.log");
    let broker = tokio::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::from(std::fs::File::create(&log_path).unwrap()))
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto starts (./scripts/test installs it)");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    eventually(
        Duration::from_secs(10),
        "mosquitto listening",
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", tls))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;

    // Before Vigil's files exist nobody gets in; the compose healthcheck relies on that answer.
    let port = plain.to_string();
    let probe = run(
        "mosquitto_sub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "$SYS/broker/uptime",
            "-C",
            "1",
            "-W",
            "5",
        ],
        None,
    )
    .await;
    assert!(
        !probe.ok && probe.stderr.contains("not authorised"),
        "anonymous client: {probe:?}\n{}",
        log()
    );

    // First run: Vigil's own broker user, reload, then Vigil on deploy/vigil.toml.
    let data = Arc::new(tempfile::tempdir().unwrap());
    broker_config(data.path(), &auth).await;
    reload(&broker).await;
    let vm = Victoria::start().await;
    let env = vec![
        (
            "VIGIL_MQTT__URL".to_owned(),
            format!("mqtts://localhost:{tls}"),
        ),
        (
            "VIGIL_MQTT__CA_FILE".to_owned(),
            certs.join("ca.crt").display().to_string(),
        ),
        (
            "VIGIL_MQTT__PASSWORD".to_owned(),
            BROKER_PASSWORD.to_owned(),
        ),
        ("VIGIL_INFLUXDB__URL".to_owned(), vm.url()),
        (
            "VIGIL_INFLUXDB__TOKEN".to_owned(),
            "deploy-test-token".to_owned(),
        ),
    ];
    let flags = Overrides {
        data_dir: Some(data.path().to_path_buf()),
        http_listen: Some("127.0.0.1:0".into()),
        mqtt_listen: None,
    };
    let cfg = Config::load(Some(&root().join("deploy/vigil.toml")), env, &flags).unwrap();
    let gw = Gateway::start_again(cfg, data.clone()).await;
    let metrics = format!("http://{}/metrics", gw.http);
    eventually(
        Duration::from_secs(20),
        "vigil subscribed at mosquitto over TLS",
        || {
            let url = metrics.clone();
            async move {
                let text = reqwest::get(url).await.ok()?.text().await.ok()?;
                text.contains("vigil_mqtt_broker_subscribed 1")
                    .then_some(())
            }
        },
    )
    .await;

    // Provision a device through the API, regenerate the broker's files, reload.
    gw.client.patient("pat-deploy").await;
    let secret = gw
        .client
        .device("ox-deploy", "pat-deploy", "pulse-oximeter")
        .await;
    broker_config(data.path(), &auth).await;
    reload(&broker).await;

    // The device publishes over MQTTS (retried until the reload has taken effect).
    let time = vigil::domain::now_ms() / 1000 - 60;
    let payload = format!(r#"{{"metric":"spo2","value":96,"time":{time}}}"#);
    let ca = certs.join("ca.crt").display().to_string();
    let tls_port = tls.to_string();
    eventually(
        Duration::from_secs(20),
        "the device's publish accepted",
        || {
            let (payload, ca, port, secret) = (
                payload.clone(),
                ca.clone(),
                tls_port.clone(),
                secret.clone(),
            );
            async move {
                let args = [
                    "-h",
                    "localhost",
                    "-p",
                    &port,
                    "--cafile",
                    &ca,
                    "-V",
                    "mqttv311",
                    "-q",
                    "1",
                    "-i",
                    "ox-deploy",
                    "-u",
                    "ox-deploy",
                    "-P",
                    &secret,
                    "-t",
                    "vigil/v1/devices/ox-deploy/readings",
                    "-m",
                    &payload,
                ];
                run("mosquitto_pub", &args, None).await.ok.then_some(())
            }
        },
    )
    .await;

    // Stored by Vigil, and in the InfluxDB-compatible store as measurement vitals, field spo2,
    // tags patient and device: what the dashboards query.
    let stored = eventually(Duration::from_secs(20), "the reading stored", || {
        let client = gw.client.clone();
        async move {
            let o = client.observations("pat-deploy", "metric=spo2").await;
            (!o.is_empty()).then_some(o)
        }
    })
    .await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["value"], 96.0);
    let samples = eventually(Duration::from_secs(30), "the reading in InfluxDB", || {
        let vm = &vm;
        async move {
            let s = vm.export("vitals_spo2").await;
            (!s.is_empty()).then_some(s)
        }
    })
    .await;
    assert_eq!(samples.len(), 1, "{samples:?}");
    let (labels, value, ms) = &samples[0];
    assert_eq!(labels["patient"], "pat-deploy", "{labels}");
    assert_eq!(labels["device"], "ox-deploy", "{labels}");
    assert_eq!((*value, *ms), (96.0, time * 1000));

    gw.stop().await;
    drop(broker);
}
