//! `vigil-sim provision`: creates patients and their devices through Vigil's HTTP API and
//! saves what the fleet needs to connect (the device secrets, shown by Vigil only once) to a
//! credentials file, readable by its owner only.

use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::device;
use crate::rng::{Rng, hash};

/// The credentials file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    /// Vigil's HTTP base URL.
    pub api: String,
    pub seed: u64,
    pub patients: Vec<SimPatient>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimPatient {
    pub id: String,
    /// The patient's physiology seed.
    pub seed: u64,
    pub devices: Vec<SimDevice>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimDevice {
    pub id: String,
    pub profile: String,
    pub password: String,
}

impl Credentials {
    pub fn load(path: &Path) -> anyhow::Result<Credentials> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read credentials {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a vigil-sim credentials file", path.display()))
    }

    /// Writes the file with owner-only permissions: it holds device secrets.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        use std::io::Write as _;
        opts.open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn device_count(&self) -> usize {
        self.patients.iter().map(|p| p.devices.len()).sum()
    }
}

/// A small client for the parts of the API the simulator uses.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    /// One request; a non-2xx answer becomes an error with Vigil's one-sentence reason.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let (status, value) = self.request(method.clone(), path, body).await?;
        if !status.is_success() {
            bail!(
                "{method} {path}: {status}: {}",
                value["error"].as_str().unwrap_or("no reason given")
            );
        }
        Ok(value)
    }

    /// One request, answered with its status and body (`null` when not JSON), whatever the
    /// status; only a failure to reach Vigil is an error.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach Vigil at {}", self.base))?;
        let status = resp.status();
        let value: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        Ok((status, value))
    }
}

/// Makes sure care team `id` exists: created, with its id as its name, when it does not.
async fn ensure_team(api: &Api, id: &str) -> anyhow::Result<()> {
    let teams = api.call(reqwest::Method::GET, "/teams", None).await?;
    let exists = teams["teams"]
        .as_array()
        .is_some_and(|t| t.iter().any(|x| x["id"] == id));
    if !exists {
        api.call(
            reqwest::Method::POST,
            "/teams",
            Some(json!({"id": id, "name": id})),
        )
        .await?;
    }
    Ok(())
}

/// Creates `patients` patients (ids `{prefix}-0001` …) with their devices, on care team `team`
/// (created when missing), or without one on Vigil's default team.
pub async fn provision(
    api: &Api,
    base_url: &str,
    patients: usize,
    prefix: &str,
    team: Option<&str>,
    seed: u64,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<Credentials> {
    if let Some(t) = team {
        ensure_team(api, t).await?;
    }
    let mut out = Vec::with_capacity(patients);
    for i in 0..patients {
        let id = format!("{prefix}-{:04}", i + 1);
        let pseed = Rng::derive(seed, hash(&id)).next_u64();
        let mut patient = json!({"id": id, "name": format!("Simulated patient {}", i + 1)});
        if let Some(t) = team {
            patient["care_team"] = json!(t);
        }
        api.call(reqwest::Method::POST, "/patients", Some(patient))
            .await?;
        let mut devices = Vec::new();
        // Every third patient might need glucose monitoring in a story: give them a CGM.
        for profile in device::devices_for(pseed, i % 3 == 0) {
            let did = format!("{id}-{profile}");
            let v = api
                .call(
                    reqwest::Method::POST,
                    "/devices",
                    Some(json!({"id": did, "patient_id": id, "profile": profile})),
                )
                .await?;
            let password = v["mqtt"]["password"]
                .as_str()
                .context("Vigil's answer has no mqtt.password")?
                .to_owned();
            devices.push(SimDevice {
                id: did,
                profile: profile.to_owned(),
                password,
            });
        }
        out.push(SimPatient {
            id,
            seed: pseed,
            devices,
        });
        progress(i + 1);
    }
    Ok(Credentials {
        api: base_url.trim_end_matches('/').to_owned(),
        seed,
        patients: out,
    })
}
