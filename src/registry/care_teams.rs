//! Who looks after each patient: every patient belongs to a care team, and an admin is told of
//! any patient that no clinician can see.
//!
//! A clinician sees the patients of their own care teams and nothing else. A patient on no team,
//! on a team that does not exist, or on a team without a clinician would be seen by admins
//! alone, and its alerts would reach nobody who acts on them. So:
//! - the default care team ([`DEFAULT_TEAM`], "Default care team") always exists: SQLite's
//!   schema version 8 creates it (PostgreSQL's access step too), and no route deletes a team;
//! - a patient created without a team is put on it, the same migration moves an old database's
//!   patients without a team to it, and a patient's team can be changed but never cleared;
//! - a patient's team is a column of `patients` that references `teams` (schema version 11),
//!   so a patient is never put on a team that does not exist;
//! - a clinician created without a team joins it ([`initial_teams`]), so that on a new
//!   installation the first clinician sees the first patients;
//! - [`Registry::unseen_patients`] lists the patients no clinician can see, with their open
//!   alerts, for the admin's dashboard.
//!
//! It must never cache that list: it is read from the database each time it is asked for, so a
//! warning goes as soon as a clinician joins the team and comes back as soon as the last leaves.

use serde::Serialize;

use super::access::Role;
use super::patients::DEFAULT_TEAM;

/// The care teams a new user starts on: those given, or for a clinician given none, the default
/// team. (An admin sees every patient; teams change nothing for them.)
pub fn initial_teams(role: Role, given: Vec<String>) -> Vec<String> {
    if given.is_empty() && role == Role::Clinician {
        vec![DEFAULT_TEAM.to_owned()]
    } else {
        given
    }
}

/// Why no clinician can see a patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnseenReason {
    /// The patient names no care team (a database older than the default team, changed by hand).
    NoTeam,
    /// The patient's care team does not exist.
    NoSuchTeam,
    /// The patient's care team has no clinician.
    NoClinician,
}

/// A patient no clinician can see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnseenPatient {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub care_team: Option<String>,
    pub reason: UnseenReason,
    /// Its open (not yet acknowledged) alerts.
    pub open_alerts: u64,
}

impl UnseenReason {
    /// Why nobody sees a patient on `team` (`team_exists`: whether that team exists) whose team
    /// has no clinician.
    pub fn of(team: Option<&str>, team_exists: bool) -> UnseenReason {
        match (team, team_exists) {
            (None, _) => UnseenReason::NoTeam,
            (Some(_), false) => UnseenReason::NoSuchTeam,
            (Some(_), true) => UnseenReason::NoClinician,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PatientId;
    use crate::registry::patients::{check_not_cleared, on_a_team};
    use crate::registry::{PatientDetails, Profiles, Registry, RegistryError};

    const PASSWORD: &str = "amber kettle orbit meadow";

    #[tokio::test]
    async fn an_old_databases_patients_without_a_team_move_to_the_default_team() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        let v8 = crate::registry::sqlite::schema::SCHEMA
            .iter()
            .position(|s| *s == crate::registry::sqlite::schema::SCHEMA_V8)
            .unwrap();
        {
            // The database as the version before this one left it.
            let c = crate::store::open_db(&path, &crate::registry::sqlite::schema::SCHEMA[..v8])
                .unwrap();
            c.execute_batch(
                "INSERT INTO patients (id, name, created_ms, details) VALUES
                   ('p-none', 'A', 0, NULL),
                   ('p-empty', 'B', 0, '{\"care_team\":\"\",\"phone\":\"1\"}'),
                   ('p-other', 'C', 0, '{\"phone\":\"2\"}'),
                   ('p-north', 'D', 0, '{\"care_team\":\"north\"}');",
            )
            .unwrap();
        }
        let r = Registry::open(dir.path(), Profiles::built_in().unwrap())
            .await
            .unwrap();
        let teams = r.teams().await.unwrap();
        let default = teams.iter().find(|t| t.id == DEFAULT_TEAM).unwrap();
        assert_eq!(default.name, "Default care team");
        let team = |id: &str| {
            let r = r.clone();
            let id = PatientId::parse(id).unwrap();
            async move { r.patient(id).await.unwrap().details }
        };
        for id in ["p-none", "p-empty", "p-other"] {
            assert_eq!(
                team(id).await.care_team.as_deref(),
                Some(DEFAULT_TEAM),
                "{id}"
            );
        }
        // Other details stay; a patient who had a team keeps it.
        assert_eq!(team("p-empty").await.phone.as_deref(), Some("1"));
        assert_eq!(team("p-other").await.phone.as_deref(), Some("2"));
        assert_eq!(team("p-north").await.care_team.as_deref(), Some("north"));
    }

    #[tokio::test]
    async fn the_care_team_column_keeps_each_patients_team_from_the_details() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        let v11 = crate::registry::sqlite::schema::SCHEMA
            .iter()
            .position(|s| *s == crate::registry::sqlite::schema::SCHEMA_V11)
            .unwrap();
        {
            // The database as the version before this one left it.
            let c = crate::store::open_db(&path, &crate::registry::sqlite::schema::SCHEMA[..v11])
                .unwrap();
            c.execute_batch(
                "INSERT INTO teams (id, name, created_ms) VALUES ('north', 'North', 0);
                 INSERT INTO patients (id, name, created_ms, details) VALUES
                   ('p-default', 'A', 0, '{\"care_team\":\"default\"}'),
                   ('p-north', 'B', 0, '{\"care_team\":\"north\",\"phone\":\"1\"}'),
                   ('p-gone', 'C', 0, '{\"care_team\":\"gone\"}'),
                   ('p-none', 'D', 0, NULL),
                   ('p-bad', 'E', 0, 'not json');",
            )
            .unwrap();
        }
        let r = Registry::open(dir.path(), Profiles::built_in().unwrap())
            .await
            .unwrap();
        let rows: Vec<(String, String, Option<String>)> =
            crate::registry::sqlite::with_file(dir.path(), |c| {
                let mut stmt =
                    c.prepare("SELECT id, care_team, details FROM patients ORDER BY id")?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
            .unwrap();
        let row = |id: &str, team: &str, details: Option<&str>| {
            (id.to_owned(), team.to_owned(), details.map(str::to_owned))
        };
        assert_eq!(
            rows,
            [
                row("p-bad", DEFAULT_TEAM, Some("not json")),
                row("p-default", DEFAULT_TEAM, None),
                row("p-gone", "gone", None),
                row("p-none", DEFAULT_TEAM, None),
                row("p-north", "north", Some("{\"phone\":\"1\"}")),
            ]
        );
        // The API shows the team as before, and a team that had gone is back (with no
        // members: its patient stays seen by nobody new).
        let p = r
            .patient(PatientId::parse("p-north").unwrap())
            .await
            .unwrap();
        assert_eq!(p.details.care_team.as_deref(), Some("north"));
        assert_eq!(p.details.phone.as_deref(), Some("1"));
        let gone = r
            .teams()
            .await
            .unwrap()
            .into_iter()
            .find(|t| t.id == "gone")
            .unwrap();
        assert!(gone.members.is_empty());
        let index: i64 = crate::registry::sqlite::with_file(dir.path(), |c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'patients_by_team'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(index, 1);
    }

    #[tokio::test]
    async fn patients_no_clinician_can_see_are_listed_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path(), Profiles::built_in().unwrap())
            .await
            .unwrap();
        r.create_team("north", "North", 0, None).await.unwrap();
        r.create_team("empty", "Nobody yet", 0, None).await.unwrap();
        for (id, team) in [
            ("p-default", None),
            ("p-north", Some("north")),
            ("p-empty", Some("empty")),
        ] {
            let details = PatientDetails {
                care_team: team.map(str::to_owned),
                ..PatientDetails::default()
            };
            let p = r
                .create_patient(
                    PatientId::parse(id).unwrap(),
                    id.into(),
                    None,
                    None,
                    details,
                    0,
                    None,
                )
                .await
                .unwrap();
            assert_eq!(
                p.details.care_team.as_deref(),
                Some(team.unwrap_or(DEFAULT_TEAM))
            );
        }
        // A team that does not exist is refused, not kept as a patient nobody sees.
        let ghost = PatientDetails {
            care_team: Some("ghost".into()),
            ..PatientDetails::default()
        };
        let e = r
            .create_patient(
                PatientId::parse("p-ghost").unwrap(),
                "G".into(),
                None,
                None,
                ghost.clone(),
                0,
                None,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&e, RegistryError::Invalid(m) if m.contains("\"ghost\" does not exist")),
            "{e}"
        );
        let e = r
            .update_patient(
                PatientId::parse("p-north").unwrap(),
                None,
                None,
                None,
                ghost,
                None,
            )
            .await
            .unwrap_err();
        assert!(matches!(e, RegistryError::Invalid(_)), "{e}");
        let reasons = |r: Registry| async move {
            r.unseen_patients()
                .await
                .unwrap()
                .into_iter()
                .map(|u| (u.id, u.reason))
                .collect::<Vec<_>>()
        };
        // No clinicians at all: nobody sees anyone.
        assert_eq!(
            reasons(r.clone()).await,
            [
                ("p-default".into(), UnseenReason::NoClinician),
                ("p-empty".into(), UnseenReason::NoClinician),
                ("p-north".into(), UnseenReason::NoClinician),
            ]
        );
        // Open alerts are counted (acknowledged and resolved ones are not) and come first.
        crate::registry::sqlite::with_file(dir.path(), |c| {
            c.execute_batch(
                "INSERT INTO alerts (id, patient_id, rule_id, kind, severity, status, message,
                                     opened_ms, escalated_ms) VALUES
                   ('a1', 'p-north', 'r1', 'threshold', 'high', 'open', 'm', 0, 0),
                   ('a2', 'p-north', 'r2', 'threshold', 'high', 'open', 'm', 0, 0),
                   ('a3', 'p-north', 'r3', 'threshold', 'high', 'acknowledged', 'm', 0, 0),
                   ('a4', 'p-north', 'r4', 'threshold', 'high', 'resolved', 'm', 0, 0);",
            )?;
            Ok(())
        })
        .await
        .unwrap();
        let first = r.unseen_patients().await.unwrap().remove(0);
        assert_eq!((first.id.as_str(), first.open_alerts), ("p-north", 2));
        // An admin on a team does not count; a clinician created without a team joins the
        // default team; one on north covers north.
        r.add_user("ada", Role::Admin, PASSWORD, 0).await.unwrap();
        r.set_user_teams("ada", vec!["empty".into()]).await.unwrap();
        for (name, teams) in [("nina", vec![]), ("sam", vec!["north".to_owned()])] {
            r.add_user(name, Role::Clinician, PASSWORD, 0)
                .await
                .unwrap();
            r.set_user_teams(name, initial_teams(Role::Clinician, teams))
                .await
                .unwrap();
        }
        assert_eq!(r.user("nina").await.unwrap().teams, [DEFAULT_TEAM]);
        assert_eq!(
            reasons(r.clone()).await,
            [("p-empty".into(), UnseenReason::NoClinician),]
        );
        assert!(initial_teams(Role::Admin, vec![]).is_empty());
    }

    #[test]
    fn a_patients_team_is_never_cleared() {
        let clear = PatientDetails {
            care_team: Some(String::new()),
            ..PatientDetails::default()
        };
        assert!(check_not_cleared(&clear).is_err());
        assert!(check_not_cleared(&PatientDetails::default()).is_ok());
        assert_eq!(on_a_team(clear).care_team.as_deref(), Some(DEFAULT_TEAM));
    }
}
