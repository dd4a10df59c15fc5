//! The registry's calls on care teams' cover ([`super::cover`]): setting a team's rota and
//! shifts, checked (the people named must be clinicians of the team), and who is on call.

use super::Registry;
use super::access::Role;
use super::audit::NewAuditLine;
use super::cover::Cover;
use super::error::RegistryError;
use crate::oncall::policy::Policy;
use crate::oncall::{self, OnCall, Rota, Shift};

impl Registry {
    /// The clinicians of `team` (by stored name); `NotFound` when there is no such team.
    pub async fn team_clinicians(&self, team: &str) -> Result<Vec<String>, RegistryError> {
        let teams = self.db.teams().await?;
        let t = teams
            .into_iter()
            .find(|t| t.id == team)
            .ok_or_else(|| RegistryError::NotFound(format!("care team {team}")))?;
        let users = self.db.users().await?;
        Ok(t.members
            .into_iter()
            .filter(|m| {
                users
                    .iter()
                    .any(|u| &u.name == m && u.role == Role::Clinician)
            })
            .collect())
    }

    /// Refuses a name that is not one of `clinicians`.
    fn check_on_team<'a>(
        team: &str,
        clinicians: &[String],
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), RegistryError> {
        for n in names {
            if !clinicians.iter().any(|c| c == n.trim()) {
                return Err(RegistryError::Invalid(format!(
                    "{n:?} is not a clinician of care team {team}: only the team's clinicians \
                     see its patients and can act on their alerts"
                )));
            }
        }
        Ok(())
    }

    /// Sets `team`'s weekly rota, checked, with its audit line.
    pub async fn put_rota(
        &self,
        team: &str,
        rota: Rota,
        by: &str,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<Cover, RegistryError> {
        rota.check()
            .map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let clinicians = self.team_clinicians(team).await?;
        let names = rota.users();
        Self::check_on_team(team, &clinicians, names.iter().map(String::as_str))?;
        self.db
            .put_rota(team.to_owned(), rota, by.to_owned(), now_ms, audit)
            .await?;
        self.cover(team).await
    }

    /// Sets `team`'s shifts (all of them: those not given are removed), checked, with its
    /// audit line.
    pub async fn put_shifts(
        &self,
        team: &str,
        shifts: Vec<Shift>,
        by: &str,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<Cover, RegistryError> {
        oncall::check_shifts(&shifts).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let clinicians = self.team_clinicians(team).await?;
        Self::check_on_team(team, &clinicians, shifts.iter().map(|s| s.user.as_str()))?;
        let shifts = shifts
            .into_iter()
            .map(|s| Shift {
                user: s.user.trim().to_owned(),
                ..s
            })
            .collect();
        self.db
            .put_shifts(team.to_owned(), shifts, by.to_owned(), now_ms, audit)
            .await?;
        self.cover(team).await
    }

    /// Sets `team`'s escalation policy, checked, with its audit line.
    pub async fn put_policy(
        &self,
        team: &str,
        policy: Policy,
        by: &str,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<Cover, RegistryError> {
        policy
            .check()
            .map_err(|e| RegistryError::Invalid(e.to_string()))?;
        self.db
            .put_policy(team.to_owned(), policy, by.to_owned(), now_ms, audit)
            .await?;
        self.cover(team).await
    }

    /// `team`'s cover; `NotFound` when there is no such team.
    pub async fn cover(&self, team: &str) -> Result<Cover, RegistryError> {
        self.db
            .cover(team.to_owned())
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("care team {team}")))
    }

    /// Who is on call for `team` at `at_ms`.
    pub async fn on_call(&self, team: &str, at_ms: i64) -> Result<OnCall, RegistryError> {
        let cover = self.cover(team).await?;
        let clinicians = self.team_clinicians(team).await?;
        oncall::on_call(cover.rota.as_ref(), &cover.shifts, &clinicians, at_ms)
            .map_err(|e| RegistryError::Invalid(e.to_string()))
    }
}
