//! The notification worker (docs/oncall.md): about once a second, on every instance,
//! 1. **schedules**: for each unacknowledged alert, the escalation steps its team's policy says
//!    are due ([`super::plan`]), each written once with its notifications
//!    (`Registry::take_step`: of several instances, one writes it);
//! 2. **sends**: claims due notifications (`Registry::claim_notifications`, one instance each),
//!    cancels those whose alert was acknowledged or resolved meanwhile, sends the rest by their
//!    channel and settles each attempt — delivered, retried with backoff, or failed — with its
//!    timeline entry.
//!
//! Everything it acts on is in the registry, so a Vigil killed between an alert and its
//! notification sends it after restart, and a server that was down gets it when it returns.
//! A process killed after the server accepted a message and before the settlement was written
//! sends it again once the claim lapses (with the same Message-ID and Idempotency-Key, by
//! which receivers may recognise it); that window is the length of one send.

use std::collections::HashMap;
use std::sync::Arc;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::plan::{self, AlertFacts, Context, MAX_ALERT_AGE_MS};
use super::{Channel, Channels, PatientRef, SendError};
use crate::config::RetryConfig;
use crate::crm::record::{AlertQuery, AlertStatus};
use crate::crm::retry::backoff_ms;
use crate::domain::zone::Zone;
use crate::domain::{PatientId, now_ms, parse_rfc3339};
use crate::registry::cover::Cover;
use crate::registry::notifications::{Notification, Settlement};
use crate::registry::{Registry, RegistryError};

/// How long a claim holds: longer than one send with its timeouts.
const CLAIM_MS: i64 = 60_000;
/// Notifications sent per pass.
const BATCH: usize = 20;

/// The worker's parts.
pub struct Worker {
    pub registry: Registry,
    /// Where a later step's `alert.escalated` event goes: the sinks it is queued for, and the
    /// live feed it is announced to.
    pub crm: crate::crm::Crm,
    pub channels: Arc<Channels>,
    pub clinic_zone: Arc<Zone>,
    /// The dashboard's address for links (`http.public_url`); empty: relative links.
    pub public_url: Arc<str>,
    /// Signs each notification's acknowledgement link ([`super::ack`]).
    pub ack_key: Arc<super::ack::AckKey>,
    /// How long a link works, in seconds (`notify.ack_link_hours`).
    pub ack_link_s: i64,
    pub retry: RetryConfig,
}

impl Worker {
    /// Runs until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.schedule(now_ms()).await {
                tracing::warn!(error = %e, "notification steps not scheduled this pass");
            }
            if let Err(e) = self.send(now_ms()).await {
                tracing::warn!(error = %e, "notifications not sent this pass");
            }
        }
    }

    /// Takes the escalation steps due at `now`. Without any channel configured (no `[smtp]`,
    /// no `[sms]`) nobody can be notified, and no step is taken: alerts wait on the dashboard
    /// as before, and the timelines do not fill with people who could not be reached.
    pub async fn schedule(&self, now: i64) -> Result<usize, RegistryError> {
        if self.channels.configured().is_empty() {
            return Ok(0);
        }
        let open: Vec<_> = self
            .registry
            .alerts(AlertQuery {
                status: Some(AlertStatus::Open),
                patient_id: None,
                teams: None,
                limit: 10_000,
            })
            .await?
            .into_iter()
            .filter_map(|a| {
                let opened = parse_rfc3339(&a.opened_at)?;
                (now - opened <= MAX_ALERT_AGE_MS).then_some((a, opened))
            })
            .collect();
        if open.is_empty() {
            return Ok(0);
        }
        let taken = self
            .registry
            .steps_taken(open.iter().map(|(a, _)| a.id.clone()).collect())
            .await?;
        let contacts = self.registry.contacts().await?;
        let mut teams: HashMap<String, (Cover, Vec<String>)> = HashMap::new();
        let mut written = 0;
        for (a, opened_ms) in &open {
            let Ok(pid) = PatientId::parse(&a.patient_id) else {
                continue;
            };
            // A team that set no cover has the default policy and reaches its clinicians (the
            // fallback); a patient with no team reaches nobody, and each step says so — the
            // steps are still taken, as they are the alert's escalations.
            let team = self.registry.patient_team(pid).await?.unwrap_or_default();
            if !teams.contains_key(&team) {
                let cover = if team.is_empty() {
                    (Cover::empty(""), Vec::new())
                } else {
                    let cover = match self.registry.cover(&team).await {
                        Ok(c) => c,
                        Err(RegistryError::NotFound(_)) => Cover::empty(&team),
                        Err(e) => return Err(e),
                    };
                    (cover, self.registry.team_clinicians(&team).await?)
                };
                teams.insert(team.clone(), cover);
            }
            let (cover, clinicians) = &teams[&team];
            let facts = AlertFacts {
                id: &a.id,
                patient_id: &a.patient_id,
                severity: a.severity,
                opened_ms: *opened_ms,
                open: true,
            };
            let cx = Context {
                cover,
                clinicians,
                contacts: &contacts,
                email: self.channels.has(Channel::Email),
                sms: self.channels.has(Channel::Sms),
                clinic_zone: &self.clinic_zone,
            };
            let done = taken.get(&a.id).map(Vec::as_slice).unwrap_or_default();
            for step in plan::steps(&facts, done, &cx, now)? {
                if let Some(events) = self
                    .registry
                    .take_step(step, self.crm.sinks.to_vec())
                    .await?
                {
                    self.crm.announce(events);
                    written += 1;
                }
            }
        }
        Ok(written)
    }

    /// Sends the notifications due at `now`; how many were settled.
    pub async fn send(&self, now: i64) -> Result<usize, RegistryError> {
        let claimed = self
            .registry
            .claim_notifications(now, CLAIM_MS, BATCH)
            .await?;
        let mut settled = 0;
        for n in claimed {
            let outcome = self.attempt(&n).await?;
            if self
                .registry
                .settle_notification(&n.id, outcome, now_ms())
                .await?
            {
                settled += 1;
            }
        }
        Ok(settled)
    }

    /// One attempt at `n`: what became of it.
    async fn attempt(&self, n: &Notification) -> Result<Settlement, RegistryError> {
        let Some(alert) = self.registry.alert(n.alert_id.clone()).await? else {
            return Ok(Settlement::Cancelled {
                why: "the alert is gone".into(),
            });
        };
        match alert.status {
            AlertStatus::Open => {}
            AlertStatus::Acknowledged => {
                return Ok(Settlement::Cancelled {
                    why: "the alert was acknowledged".into(),
                });
            }
            AlertStatus::Resolved => {
                return Ok(Settlement::Cancelled {
                    why: "the alert was resolved".into(),
                });
            }
        }
        let channel = match n.channel.as_str() {
            "email" => Channel::Email,
            "sms" => Channel::Sms,
            other => {
                return Ok(Settlement::Failed {
                    error: format!("no channel {other:?}"),
                });
            }
        };
        let Some(address) = n.address.as_deref() else {
            return Ok(Settlement::Failed {
                error: "no address".into(),
            });
        };
        let name = match PatientId::parse(&alert.patient_id) {
            Ok(pid) => self.registry.patient(pid).await.map(|p| p.name).ok(),
            Err(_) => None,
        }
        .unwrap_or_default();
        // The link acknowledges with one click after sign-in; its token rides in the URL's
        // fragment, which browsers never send to a server or in a `Referer`.
        let token = self.ack_key.sign(&n.id, now_ms() / 1000 + self.ack_link_s);
        let link = format!("{}/#/ack/{token}", self.public_url.trim_end_matches('/'));
        let notice = self.channels.notice_for_alert(
            &n.id,
            &alert,
            PatientRef {
                id: &alert.patient_id,
                name: &name,
            },
            &link,
        );
        let now = now_ms();
        Ok(match self.channels.send(channel, address, &notice).await {
            Ok(sent) => Settlement::Delivered {
                receipt: sent.receipt,
            },
            Err(e @ SendError::Retryable(_)) => {
                let started = parse_rfc3339(&n.created_at).unwrap_or(now);
                let give_up_ms =
                    i64::try_from(self.retry.give_up_after_s).unwrap_or(i64::MAX / 1000) * 1000;
                if now - started >= give_up_ms {
                    Settlement::Failed {
                        error: redacted(&format!("gave up: {e}"), address),
                    }
                } else {
                    Settlement::Retry {
                        at_ms: now + backoff_ms(n.attempts, &self.retry, 0.5),
                        error: redacted(&e.to_string(), address),
                    }
                }
            }
            Err(e) => Settlement::Failed {
                error: redacted(&e.to_string(), address),
            },
        })
    }
}

/// `error` without `address` in it: servers often echo the recipient (`550 <nina@…>: no such
/// user`), and the error goes on the patient's timeline and to every clinician who may see the
/// alert, where staff contact details do not belong (the recipient's name and channel are
/// there).
fn redacted(error: &str, address: &str) -> String {
    if address.is_empty() {
        return error.to_owned();
    }
    // ASCII case folding keeps byte offsets, so the places found in the folded text are the
    // places in `error` (a server may echo `Nina@Clinic.example` as `nina@clinic.example`).
    let (folded, wanted) = (error.to_ascii_lowercase(), address.to_ascii_lowercase());
    let mut out = String::with_capacity(error.len());
    let mut from = 0;
    for (at, _) in folded.match_indices(&wanted) {
        out.push_str(&error[from..at]);
        out.push_str("(the address)");
        from = at + wanted.len();
    }
    out.push_str(&error[from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn an_error_loses_the_address_it_echoes() {
        assert_eq!(
            redacted(
                "550 5.1.1 <nina@clinic.example>: recipient address rejected",
                "nina@clinic.example"
            ),
            "550 5.1.1 <(the address)>: recipient address rejected"
        );
        assert_eq!(
            redacted(
                "rejected Nina@Clinic.Example twice: nina@clinic.example",
                "nina@clinic.example"
            ),
            "rejected (the address) twice: (the address)"
        );
        assert_eq!(redacted("timed out", "+13125550123"), "timed out");
        assert_eq!(redacted("x", ""), "x");
    }
}
