//! Devices on SQLite: the rows, the hashes of their secrets, and their status, which the
//! registry's status writer hands over in batches.

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};

use super::SqliteDb;
use super::audit::append_in;
use crate::registry::audit::NewAuditLine;
use crate::registry::devices::{
    Device, DeviceRow, DeviceStatus, NewDevice, SecretHashes, StatusChange, StoredCredential,
    device_events, status_after,
};
use crate::registry::error::RegistryError;
use crate::registry::storage::DeviceStore;

/// Devices: one by id, those of one patient, or all.
fn devices_where(
    c: &Connection,
    id: Option<&str>,
    patient: Option<&str>,
) -> Result<Vec<Device>, RegistryError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, patient_id, profile, created_ms, online, last_seen_ms, battery, revoked
         FROM devices WHERE (?1 IS NULL OR id = ?1) AND (?2 IS NULL OR patient_id = ?2)
         ORDER BY patient_id, id",
    )?;
    let rows = stmt.query_map(params![id, patient], |r| {
        Ok(DeviceRow {
            id: r.get(0)?,
            patient_id: r.get(1)?,
            profile: r.get(2)?,
            created_ms: r.get(3)?,
            online: r.get(4)?,
            last_seen_ms: r.get(5)?,
            battery: r.get(6)?,
            revoked: r.get(7)?,
        })
    })?;
    let mut out = Vec::new();
    for row in rows {
        out.extend(row?.into_device());
    }
    Ok(out)
}

fn one(c: &Connection, id: &str) -> Result<Device, RegistryError> {
    devices_where(c, Some(id), None)?
        .pop()
        .ok_or_else(|| RegistryError::NotFound(format!("device {id}")))
}

#[async_trait::async_trait]
impl DeviceStore for SqliteDb {
    async fn create_device(
        &self,
        d: NewDevice,
        audit: Option<NewAuditLine>,
    ) -> Result<Device, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let exists: bool = tx
                .query_row(
                    "SELECT 1 FROM patients WHERE id = ?1",
                    [&d.patient_id],
                    |_| Ok(true),
                )
                .optional()?
                .unwrap_or(false);
            if !exists {
                return Err(RegistryError::NotFound(format!("patient {}", d.patient_id)));
            }
            let n = tx.execute(
                "INSERT INTO devices (id, patient_id, profile, secret_hash, created_ms, broker_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                params![
                    d.id,
                    d.patient_id,
                    d.profile,
                    &d.secret.sha256[..],
                    d.created_ms,
                    d.secret.broker
                ],
            )?;
            if n == 0 {
                return Err(RegistryError::Exists(format!("device {}", d.id)));
            }
            if let Some(line) = &audit {
                append_in(&tx, line)?;
            }
            let device = one(&tx, &d.id)?;
            tx.commit()?;
            Ok(device)
        })
        .await
    }

    async fn revoke_device(
        &self,
        id: String,
        now_ms: i64,
        audit: Option<NewAuditLine>,
    ) -> Result<Device, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let d = one(&tx, &id)?;
            if !d.revoked {
                tx.execute("UPDATE devices SET revoked = 1 WHERE id = ?1", [&id])?;
                tx.execute(
                    "INSERT INTO timeline (patient_id, time_ms, kind, data)
                     VALUES (?1, ?2, 'device.revoked', ?3)",
                    params![
                        d.patient_id.as_str(),
                        now_ms,
                        serde_json::json!({"device_id": id}).to_string()
                    ],
                )?;
            }
            if let Some(line) = &audit {
                append_in(&tx, line)?;
            }
            tx.commit()?;
            Ok(Device { revoked: true, ..d })
        })
        .await
    }

    async fn rotate_device_secret(
        &self,
        id: String,
        secret: SecretHashes,
        audit: Option<NewAuditLine>,
    ) -> Result<Device, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let d = one(&tx, &id)?;
            if d.revoked {
                return Err(RegistryError::Invalid(format!(
                    "device {id} is revoked; provision a new device instead"
                )));
            }
            tx.execute(
                "UPDATE devices SET secret_hash = ?2, broker_hash = ?3 WHERE id = ?1",
                params![id, &secret.sha256[..], secret.broker],
            )?;
            if let Some(line) = &audit {
                append_in(&tx, line)?;
            }
            tx.commit()?;
            Ok(d)
        })
        .await
    }

    async fn devices(
        &self,
        id: Option<String>,
        patient: Option<String>,
    ) -> Result<Vec<Device>, RegistryError> {
        self.with(move |c| devices_where(c, id.as_deref(), patient.as_deref()))
            .await
    }

    async fn device_credentials(&self) -> Result<Vec<StoredCredential>, RegistryError> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT id, patient_id, profile, secret_hash, revoked FROM devices")?;
            let rows = stmt.query_map([], |r| {
                Ok(StoredCredential {
                    id: r.get(0)?,
                    patient_id: r.get(1)?,
                    profile: r.get(2)?,
                    secret_hash: r.get(3)?,
                    revoked: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn credentials_version(&self) -> Result<Option<i64>, RegistryError> {
        Ok(None)
    }

    async fn mark_offline_unless_held_by(&self, live: Vec<String>) -> Result<u64, RegistryError> {
        self.with(move |c| {
            let live = serde_json::to_string(&live).unwrap_or_else(|_| "[]".into());
            Ok(c.execute(
                "UPDATE devices SET online = 0
                  WHERE online = 1
                    AND (instance IS NULL OR instance NOT IN (SELECT value FROM json_each(?1)))",
                [live],
            )? as u64)
        })
        .await
    }

    async fn broker_passwords(&self) -> Result<Vec<(String, String)>, RegistryError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, broker_hash FROM devices
                 WHERE revoked = 0 AND broker_hash IS NOT NULL ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn write_device_status(
        &self,
        batch: Vec<StatusChange>,
    ) -> Result<Vec<DeviceStatus>, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut written = Vec::new();
            {
                let mut before = tx.prepare_cached(
                    "SELECT patient_id, online, battery, instance FROM devices WHERE id = ?1",
                )?;
                let mut stmt = tx.prepare_cached(
                    "UPDATE devices SET online = ?2, battery = coalesce(?3, battery),
                     last_seen_ms = max(coalesce(last_seen_ms, 0), ?4), instance = ?5
                     WHERE id = ?1",
                )?;
                let mut timeline = tx.prepare_cached(
                    "INSERT INTO timeline (patient_id, time_ms, kind, data) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for s in &batch {
                    let prior: Option<(String, bool, Option<u8>, Option<String>)> = before
                        .query_row([&s.id], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                        })
                        .optional()?;
                    let Some((patient, was_online, was_battery, held_by)) = prior else {
                        continue;
                    };
                    let (online, holder) = status_after(s, was_online, held_by);
                    stmt.execute(params![s.id, online, s.battery, s.at_ms, holder])?;
                    let told = s.online.map(|_| online);
                    for (kind, data) in device_events(&s.id, was_online, was_battery, told, s.battery)
                    {
                        timeline.execute(params![patient, s.at_ms, kind, data.to_string()])?;
                    }
                    written.push(DeviceStatus {
                        device_id: s.id.clone(),
                        patient_id: patient,
                        online,
                        battery: s.battery.or(was_battery),
                        last_seen_ms: s.at_ms,
                    });
                }
            }
            tx.commit()?;
            Ok(written)
        })
        .await
    }
}
