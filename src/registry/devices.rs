//! Devices as the storage seam ([`super::storage::DeviceStore`]) takes and returns them, and
//! the pure rules about them: the secret a device is given, and the timeline entries a change
//! of its status makes.
//!
//! It never touches a database, and it never holds a stored secret in the clear: a device
//! arrives at the seam with the SHA-256 of its secret (and the broker's salted hash of it).

use base64::Engine as _;
use serde::Serialize;

use super::error::RegistryError;
use crate::domain::{DeviceId, PatientId, format_rfc3339};

/// A device as the API shows it (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    pub id: DeviceId,
    pub patient_id: PatientId,
    pub profile: String,
    pub created_at: String,
    pub online: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery: Option<u8>,
    pub revoked: bool,
}

/// A device's status as just written: for the live view (and, read back, for the live views
/// of the other instances sharing the database).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DeviceStatus {
    pub device_id: String,
    pub patient_id: String,
    pub online: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery: Option<u8>,
    pub last_seen_ms: i64,
}

/// The prefix of every device secret: it makes a leaked secret recognisable to secret
/// scanners, and keeps command-line tools from mistaking a secret for an option.
pub const SECRET_PREFIX: &str = "vgd_";

/// A new random device secret: `vgd_` and 32 bytes from the OS in URL-safe base64
/// (47 characters).
pub(super) fn new_secret() -> Result<String, RegistryError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| RegistryError::Db(format!("no randomness: {e}")))?;
    Ok(format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// Battery level at or below which the record notes "battery low".
pub const BATTERY_LOW_PERCENT: u8 = 20;

/// The timeline entries a device's status change makes: offline, back online, battery low
/// (once, when it crosses the threshold).
pub fn device_events(
    id: &str,
    was_online: bool,
    was_battery: Option<u8>,
    online: Option<bool>,
    battery: Option<u8>,
) -> Vec<(&'static str, serde_json::Value)> {
    let mut out = Vec::new();
    match online {
        Some(false) if was_online => out.push((
            "device.offline",
            serde_json::json!({"device_id": id, "battery": battery.or(was_battery)}),
        )),
        Some(true) if !was_online => {
            out.push(("device.online", serde_json::json!({"device_id": id})));
        }
        _ => {}
    }
    if let Some(b) = battery
        && b <= BATTERY_LOW_PERCENT
        && was_battery.is_none_or(|w| w > BATTERY_LOW_PERCENT)
    {
        out.push((
            "device.battery_low",
            serde_json::json!({"device_id": id, "battery": b}),
        ));
    }
    out
}

/// A device to create, with what is kept of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice {
    pub id: String,
    pub patient_id: String,
    pub profile: String,
    pub created_ms: i64,
    pub secret: SecretHashes,
}

/// What is kept of a device's secret: its SHA-256 (checked by the embedded endpoint) and its
/// salted hash in Mosquitto's format (for an external broker's password file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretHashes {
    pub sha256: [u8; 32],
    pub broker: String,
}

/// A device's row as a backend reads it; [`DeviceRow::into_device`] makes the API's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    pub id: String,
    pub patient_id: String,
    pub profile: String,
    pub created_ms: i64,
    pub online: bool,
    pub last_seen_ms: Option<i64>,
    pub battery: Option<u8>,
    pub revoked: bool,
}

impl DeviceRow {
    /// The device as the API shows it; `None` for a row whose ids do not parse (written by
    /// hand).
    pub fn into_device(self) -> Option<Device> {
        Some(Device {
            id: DeviceId::parse(&self.id).ok()?,
            patient_id: PatientId::parse(&self.patient_id).ok()?,
            profile: self.profile,
            created_at: format_rfc3339(self.created_ms),
            online: self.online,
            last_seen: self.last_seen_ms.map(format_rfc3339),
            battery: self.battery,
            revoked: self.revoked,
        })
    }
}

/// What the in-memory credential cache is loaded from: one device's id, patient, profile, the
/// SHA-256 of its secret and whether it is revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredential {
    pub id: String,
    pub patient_id: String,
    pub profile: String,
    pub secret_hash: Vec<u8>,
    pub revoked: bool,
}

/// One device's status change in a batch (the newest of each device): `None` leaves a field as
/// it is; the last-seen time only moves forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub id: String,
    pub online: Option<bool>,
    pub battery: Option<u8>,
    pub at_ms: i64,
    /// The instance that reports it: the one holding the device's connection.
    pub instance: String,
}

/// The device's online state and the instance holding it after `change`, given what was
/// stored: an instance that no longer holds the connection (`held_by` is another: the device
/// reconnected there) cannot take the device offline.
pub fn status_after(
    change: &StatusChange,
    was_online: bool,
    held_by: Option<String>,
) -> (bool, Option<String>) {
    match change.online {
        Some(true) => (true, Some(change.instance.clone())),
        Some(false) if held_by.as_deref().is_none_or(|h| h == change.instance) => (false, None),
        _ => (was_online, held_by),
    }
}
