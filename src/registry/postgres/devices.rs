//! Devices on PostgreSQL: the rows, the hashes of their secrets, and their status. A change of
//! one device reads its row `FOR UPDATE` first, so a revocation and a rotation from two
//! instances at once apply one after the other. A status batch locks its devices in id order,
//! so two instances' batches never deadlock.

use deadpool_postgres::GenericClient;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Row, Transaction};

use super::audit::append_in;
use super::{PgDb, PgError};
use crate::pg::listen::LIVE_CHANNEL;
use crate::registry::audit::NewAuditLine;
use crate::registry::devices::{
    Device, DeviceRow, DeviceStatus, NewDevice, SecretHashes, StatusChange, StoredCredential,
    device_events, status_after,
};
use crate::registry::error::RegistryError;
use crate::registry::storage::DeviceStore;

const COLUMNS: &str = "id, patient_id, profile, created_ms, online, last_seen_ms, battery, revoked";

/// A battery level as stored (`smallint`); a stored value out of range reads as none.
fn battery(b: Option<i16>) -> Option<u8> {
    b.and_then(|b| u8::try_from(b).ok())
}

fn device(r: &Row) -> Option<Device> {
    DeviceRow {
        id: r.get(0),
        patient_id: r.get(1),
        profile: r.get(2),
        created_ms: r.get(3),
        online: r.get(4),
        last_seen_ms: r.get(5),
        battery: battery(r.get(6)),
        revoked: r.get(7),
    }
    .into_device()
}

/// Device `id`, locked until the transaction ends.
async fn lock(tx: &Transaction<'_>, id: &str) -> Result<Device, RegistryError> {
    tx.query_opt(
        &format!("SELECT {COLUMNS} FROM devices WHERE id = $1 FOR UPDATE"),
        &[&id],
    )
    .await
    .map_err(PgError::from)?
    .as_ref()
    .and_then(device)
    .ok_or_else(|| RegistryError::NotFound(format!("device {id}")))
}

async fn append(tx: &Transaction<'_>, audit: Option<&NewAuditLine>) -> Result<(), PgError> {
    if let Some(line) = audit {
        append_in(tx, line).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl DeviceStore for PgDb {
    async fn create_device(
        &self,
        d: NewDevice,
        audit: Option<NewAuditLine>,
    ) -> Result<Device, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let no_patient = || RegistryError::NotFound(format!("patient {}", d.patient_id));
        let exists = tx
            .query_opt("SELECT 1 FROM patients WHERE id = $1", &[&d.patient_id])
            .await
            .map_err(PgError::from)?;
        if exists.is_none() {
            return Err(no_patient());
        }
        // A taken id is settled by `ON CONFLICT`: of two instances creating one device at once,
        // the second waits for the first to commit and then inserts nothing.
        let inserted = tx
            .query_opt(
                &format!(
                    "INSERT INTO devices (id, patient_id, profile, secret_hash, created_ms, broker_hash)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING
                     RETURNING {COLUMNS}"
                ),
                &[
                    &d.id,
                    &d.patient_id,
                    &d.profile,
                    &&d.secret.sha256[..],
                    &d.created_ms,
                    &d.secret.broker,
                ],
            )
            .await
            .map_err(|e| match PgError::from(e) {
                PgError::Db { code: Some(c), .. } if c == SqlState::FOREIGN_KEY_VIOLATION => {
                    no_patient()
                }
                e => e.into(),
            })?;
        let Some(stored) = inserted else {
            return Err(RegistryError::Exists(format!("device {}", d.id)));
        };
        append(&tx, audit.as_ref()).await?;
        let device = device(&stored)
            .ok_or_else(|| RegistryError::Invalid(format!("{:?} is not a device id", d.id)))?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(device)
    }

    async fn revoke_device(
        &self,
        id: String,
        now_ms: i64,
        audit: Option<NewAuditLine>,
    ) -> Result<Device, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let d = lock(&tx, &id).await?;
        if !d.revoked {
            tx.execute("UPDATE devices SET revoked = true WHERE id = $1", &[&id])
                .await
                .map_err(PgError::from)?;
            let data = serde_json::json!({"device_id": id}).to_string();
            tx.execute(
                "INSERT INTO timeline (patient_id, time_ms, kind, data)
                 VALUES ($1, $2, 'device.revoked', $3)",
                &[&d.patient_id.as_str(), &now_ms, &data],
            )
            .await
            .map_err(PgError::from)?;
        }
        append(&tx, audit.as_ref()).await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(Device { revoked: true, ..d })
    }

    async fn rotate_device_secret(
        &self,
        id: String,
        secret: SecretHashes,
        audit: Option<NewAuditLine>,
    ) -> Result<Device, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let d = lock(&tx, &id).await?;
        if d.revoked {
            return Err(RegistryError::Invalid(format!(
                "device {id} is revoked; provision a new device instead"
            )));
        }
        tx.execute(
            "UPDATE devices SET secret_hash = $2, broker_hash = $3 WHERE id = $1",
            &[&id, &&secret.sha256[..], &secret.broker],
        )
        .await
        .map_err(PgError::from)?;
        append(&tx, audit.as_ref()).await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(d)
    }

    async fn devices(
        &self,
        id: Option<String>,
        patient: Option<String>,
    ) -> Result<Vec<Device>, RegistryError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM devices
                     WHERE ($1::text IS NULL OR id = $1) AND ($2::text IS NULL OR patient_id = $2)
                     ORDER BY patient_id COLLATE \"C\", id COLLATE \"C\""
                ),
                &[&id, &patient],
            )
            .await
            .map_err(PgError::from)?;
        Ok(rows.iter().filter_map(device).collect())
    }

    async fn device_credentials(&self) -> Result<Vec<StoredCredential>, RegistryError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT id, patient_id, profile, secret_hash, revoked FROM devices",
                &[],
            )
            .await
            .map_err(PgError::from)?;
        Ok(rows
            .iter()
            .map(|r| StoredCredential {
                id: r.get(0),
                patient_id: r.get(1),
                profile: r.get(2),
                secret_hash: r.get(3),
                revoked: r.get(4),
            })
            .collect())
    }

    async fn credentials_version(&self) -> Result<Option<i64>, RegistryError> {
        let row = self
            .conn()
            .await?
            .query_one("SELECT version FROM credential_changes", &[])
            .await
            .map_err(PgError::from)?;
        Ok(Some(row.get(0)))
    }

    async fn mark_offline_unless_held_by(&self, live: Vec<String>) -> Result<u64, RegistryError> {
        Ok(self
            .conn()
            .await?
            .execute(
                "UPDATE devices SET online = false
                  WHERE online AND (instance IS NULL OR NOT instance = ANY($1))",
                &[&live],
            )
            .await
            .map_err(PgError::from)?)
    }

    async fn broker_passwords(&self) -> Result<Vec<(String, String)>, RegistryError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT id, broker_hash FROM devices
                 WHERE NOT revoked AND broker_hash IS NOT NULL ORDER BY id COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(PgError::from)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn write_device_status(
        &self,
        mut batch: Vec<StatusChange>,
    ) -> Result<Vec<DeviceStatus>, RegistryError> {
        batch.sort_by(|a, b| a.id.cmp(&b.id));
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let mut written = Vec::new();
        for s in &batch {
            let prior = tx
                .query_opt(
                    "SELECT patient_id, online, battery, instance FROM devices
                      WHERE id = $1 FOR UPDATE",
                    &[&s.id],
                )
                .await
                .map_err(PgError::from)?;
            let Some(prior) = prior else {
                continue;
            };
            let (patient, was_online, was_battery): (String, bool, Option<u8>) =
                (prior.get(0), prior.get(1), battery(prior.get(2)));
            let (online, holder) = status_after(s, was_online, prior.get(3));
            tx.execute(
                "UPDATE devices SET online = $2,
                 battery = coalesce($3, battery),
                 last_seen_ms = greatest(coalesce(last_seen_ms, 0), $4), instance = $5
                 WHERE id = $1",
                &[&s.id, &online, &s.battery.map(i16::from), &s.at_ms, &holder],
            )
            .await
            .map_err(PgError::from)?;
            let told = s.online.map(|_| online);
            for (kind, data) in device_events(&s.id, was_online, was_battery, told, s.battery) {
                tx.execute(
                    "INSERT INTO timeline (patient_id, time_ms, kind, data)
                     VALUES ($1, $2, $3, $4)",
                    &[&patient, &s.at_ms, &kind, &data.to_string()],
                )
                .await
                .map_err(PgError::from)?;
            }
            let status = DeviceStatus {
                device_id: s.id.clone(),
                patient_id: patient,
                online,
                battery: s.battery.or(was_battery),
                last_seen_ms: s.at_ms,
            };
            // Every instance's live feed hears of it once it commits (`pg::listen`); a few
            // hundred bytes at most (ids are at most 64 characters).
            let payload = format!(
                "device {}",
                serde_json::to_string(&status).map_err(|e| RegistryError::Db(e.to_string()))?
            );
            tx.execute("SELECT pg_notify($1, $2)", &[&LIVE_CHANNEL, &payload])
                .await
                .map_err(PgError::from)?;
            written.push(status);
        }
        tx.commit().await.map_err(PgError::from)?;
        Ok(written)
    }
}
