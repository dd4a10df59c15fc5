//! Device profiles: what a type of device may send, in which format, and how often.
//!
//! The profiles in `devices/*.toml` are compiled into the binary so `vigil serve` needs no files
//! beside it; each is checked at start-up (and by a unit test) against the metric table.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::Metric;

/// The payload format of a device's `readings` topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum PayloadFormat {
    #[serde(rename = "vigil-json")]
    VigilJson,
    #[serde(rename = "senml-json")]
    SenmlJson,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    id: String,
    name: String,
    format: PayloadFormat,
    metrics: Vec<String>,
    gatt: Vec<String>,
    reporting_interval_s: u64,
    #[serde(default)]
    manual_entry: bool,
    #[serde(default)]
    spot_check: bool,
    #[serde(default)]
    aliases: BTreeMap<String, String>,
}

/// A checked device profile.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub id: String,
    pub name: String,
    pub format: PayloadFormat,
    pub metrics: Vec<Metric>,
    /// GATT characteristics (16-bit UUIDs) the device type has.
    pub gatt: Vec<u16>,
    pub reporting_interval_s: u64,
    /// Readings are typed in by a person (the patient app), not measured and sent by the
    /// device itself: they are kept and alerted on, but are not remote physiologic monitoring
    /// and never count as a day of device data for billing (docs/billing.md).
    pub manual_entry: bool,
    /// The device connects for a reading and goes (a cuff, a scale, a meter): being offline
    /// between readings is as expected until `reporting_interval_s` has passed twice
    /// (docs/dashboard.md, "Devices as expected").
    pub spot_check: bool,
    #[serde(skip)]
    aliases: HashMap<String, Metric>,
}

impl Profile {
    /// Resolves a metric name as a device of this type may send it: a canonical name or one of
    /// the profile's aliases, and only metrics the profile allows.
    pub fn metric(&self, name: &str) -> Option<Metric> {
        let m = Metric::parse(name).or_else(|| self.aliases.get(name).copied())?;
        self.metrics.contains(&m).then_some(m)
    }

    pub fn accepts_gatt(&self, uuid16: u16) -> bool {
        self.gatt.contains(&uuid16)
    }
}

/// The set of known profiles, by id.
#[derive(Debug, Clone)]
pub struct Profiles(Arc<BTreeMap<String, Arc<Profile>>>);

const BUILT_IN: &[(&str, &str)] = &[
    ("bp-cuff.toml", include_str!("../../devices/bp-cuff.toml")),
    ("cgm.toml", include_str!("../../devices/cgm.toml")),
    (
        "glucose-meter.toml",
        include_str!("../../devices/glucose-meter.toml"),
    ),
    (
        "patient-app.toml",
        include_str!("../../devices/patient-app.toml"),
    ),
    (
        "pulse-oximeter.toml",
        include_str!("../../devices/pulse-oximeter.toml"),
    ),
    ("scale.toml", include_str!("../../devices/scale.toml")),
    (
        "smartwatch.toml",
        include_str!("../../devices/smartwatch.toml"),
    ),
    (
        "thermometer.toml",
        include_str!("../../devices/thermometer.toml"),
    ),
];

/// Why a profile file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("device profile {file}: {reason}")]
    Invalid { file: String, reason: String },
}

fn parse(file: &str, text: &str) -> Result<Profile, ProfileError> {
    let bad = |reason: String| ProfileError::Invalid {
        file: file.to_owned(),
        reason,
    };
    let raw: ProfileFile = toml::from_str(text).map_err(|e| bad(e.message().to_owned()))?;
    let metric =
        |name: &str| Metric::parse(name).ok_or_else(|| bad(format!("unknown metric {name:?}")));
    let metrics = raw
        .metrics
        .iter()
        .map(|m| metric(m))
        .collect::<Result<Vec<_>, _>>()?;
    let gatt = raw
        .gatt
        .iter()
        .map(|u| {
            u16::from_str_radix(u, 16)
                .ok()
                .filter(|n| crate::decode::GATT_CHARACTERISTICS.contains(n) && u.len() == 4)
                .ok_or_else(|| bad(format!("unsupported GATT characteristic {u:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut aliases = HashMap::new();
    for (alias, target) in raw.aliases {
        let m = metric(&target)?;
        if !metrics.contains(&m) {
            return Err(bad(format!(
                "alias {alias:?} names {target:?}, which the profile does not allow"
            )));
        }
        aliases.insert(alias, m);
    }
    Ok(Profile {
        id: raw.id,
        name: raw.name,
        format: raw.format,
        metrics,
        gatt,
        reporting_interval_s: raw.reporting_interval_s,
        manual_entry: raw.manual_entry,
        spot_check: raw.spot_check,
        aliases,
    })
}

impl Profiles {
    /// The profiles shipped in `devices/`.
    pub fn built_in() -> Result<Profiles, ProfileError> {
        let mut map = BTreeMap::new();
        for (file, text) in BUILT_IN {
            let p = parse(file, text)?;
            map.insert(p.id.clone(), Arc::new(p));
        }
        Ok(Profiles(Arc::new(map)))
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Profile>> {
        self.0.get(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_profile_parses_and_the_contract_ids_exist() {
        let p = Profiles::built_in().unwrap();
        for id in [
            "pulse-oximeter",
            "bp-cuff",
            "glucose-meter",
            "cgm",
            "scale",
            "thermometer",
            "smartwatch",
        ] {
            assert!(p.get(id).is_some(), "{id}");
        }
    }

    #[test]
    fn every_file_in_devices_is_compiled_in() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/devices");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".toml"))
            .collect();
        on_disk.sort();
        let built: Vec<&str> = BUILT_IN.iter().map(|(f, _)| *f).collect();
        assert_eq!(on_disk, built);
    }

    #[test]
    fn aliases_resolve_only_to_allowed_metrics() {
        let p = Profiles::built_in().unwrap();
        let bp = p.get("bp-cuff").unwrap();
        assert_eq!(bp.metric("systolic"), Some(Metric::BpSystolic));
        assert_eq!(bp.metric("heart_rate"), Some(Metric::HeartRate));
        assert_eq!(bp.metric("glucose"), None);
    }

    #[test]
    fn a_profile_naming_an_unknown_metric_is_refused() {
        let text = "id='x'\nname='x'\nformat='vigil-json'\nmetrics=['pulse']\ngatt=[]\nreporting_interval_s=1\n";
        let err = parse("x.toml", text).unwrap_err().to_string();
        assert!(err.contains("unknown metric \"pulse\""), "{err}");
    }
}
