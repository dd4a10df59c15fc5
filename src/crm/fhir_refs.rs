//! How the FHIR connector finds the server's own records of Vigil's patients and devices: the
//! decisions, with no I/O (the connector, [`super::fhir_sink`], asks the server and the
//! registry; this module says what to ask and what the answers mean).
//!
//! - A patient is searched by identifier, `Patient?identifier=system|value`: first by the MRN
//!   with `fhir.patient_identifier_system` (the identifier the clinic's record knows them by),
//!   then by Vigil's own `urn:vigil:patient|{id}` (a Patient Vigil created earlier, or one the
//!   clinic loaded with Vigil's ids). The first search that finds exactly one Patient decides;
//!   one that finds several is refused (Vigil never guesses between two patients). When none
//!   finds one, Vigil creates the Patient if `fhir.create_patients` says so, else the delivery
//!   fails with a reason that names what was searched and what to do ([`unknown_patient`]).
//! - A device is created by conditional create on `urn:vigil:device|{id}` (which finds one that
//!   exists), unless `fhir.create_devices` is off.
//! - What was found is cached ([`RefCache`]), keyed by the patient's id *and* MRN, so a changed
//!   MRN is searched afresh. When the server refuses a write that used a cached reference in a
//!   way a gone or wrong reference would explain ([`worth_looking_up_again`]), the connector
//!   forgets it and looks it up again once.
//!
//! It must never match a patient by anything weaker than a whole identifier (system and value):
//! a name or a birth date can be shared, and a wrong match files one patient's data in another's
//! chart.

use std::collections::HashMap;

use super::fhir::{Ident, ServerRef, patient_ident};
use crate::domain::PatientId;

/// The most patients (and, apart, devices) remembered; beyond it the cache starts again (one
/// search per patient then, which is cheap) rather than grow without bound.
const CACHE_MAX: usize = 50_000;

/// How the clinic wants patients and devices matched (from `[fhir]`).
#[derive(Debug, Clone, Default)]
pub struct Matching {
    /// `fhir.patient_identifier_system`; `None` when empty.
    pub patient_system: Option<String>,
    pub create_patients: bool,
    pub create_devices: bool,
}

impl Matching {
    /// The patient's MRN as an identifier in the clinic's system, when both are known.
    pub fn mrn_ident(&self, mrn: Option<&str>) -> Option<Ident> {
        Some(Ident::new(self.patient_system.as_deref()?, mrn?))
    }

    /// The identifiers to search a patient by, in order.
    pub fn search_order(&self, id: &PatientId, mrn: Option<&str>) -> Vec<Ident> {
        let mut order: Vec<Ident> = self.mrn_ident(mrn).into_iter().collect();
        order.push(patient_ident(id));
        order
    }
}

/// What one identifier search found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    One(String),
    None,
    Many(usize),
}

impl Found {
    /// From the ids a search matched.
    pub fn of(ids: Vec<String>) -> Found {
        match ids.len() {
            0 => Found::None,
            1 => Found::One(ids.into_iter().next().unwrap_or_default()),
            n => Found::Many(n),
        }
    }
}

/// The reason of a delivery whose patient the server does not know: what was searched, and what
/// the clinic can do about it. (An MRN it names goes to the delivery's `last_error`, shown to
/// admins, never to the logs.)
pub fn unknown_patient(
    m: &Matching,
    id: &PatientId,
    mrn: Option<&str>,
    searched: &[Ident],
) -> String {
    let tokens: Vec<String> = searched.iter().map(Ident::token).collect();
    let what = format!(
        "the FHIR server has no Patient with identifier {}",
        tokens.join(" nor ")
    );
    let fix = match (mrn, &m.patient_system) {
        (None, _) => format!(
            "set the patient's MRN (PATCH /api/v1/patients/{id} {{\"mrn\": \"…\"}}, or in the \
             dashboard) to the one the clinic's record has"
        ),
        (Some(_), None) => "set fhir.patient_identifier_system to the system of the clinic's \
                            MRNs, so that the patient's MRN is searched"
            .to_owned(),
        (Some(_), Some(_)) => "check the patient's MRN against the clinic's record".to_owned(),
    };
    format!(
        "{what}: {fix}, or set fhir.create_patients = true for Vigil to create it; then retry this delivery"
    )
}

/// The reason of a delivery whose patient's identifier matches several Patients.
pub fn ambiguous_patient(ident: &Ident, n: usize) -> String {
    format!(
        "the FHIR server has {n} Patients with identifier {}; Vigil will not choose between \
         them: have the duplicates merged on the server (or correct the patient's MRN), then \
         retry this delivery",
        ident.token()
    )
}

/// Whether a refusal of a write that carried a cached reference may mean the reference is no
/// longer good (the resource was deleted, merged or never there: 404, 410; or the server
/// checks references and refuses the resource: 400, 409, 412, 422), so that looking the
/// patient and device up again is worth one more try.
pub fn worth_looking_up_again(status: u16) -> bool {
    matches!(status, 400 | 404 | 409 | 410 | 412 | 422)
}

/// The patient a cached reference is for: their id and the MRN it was found with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PatientKey {
    pub id: PatientId,
    pub mrn: Option<String>,
}

/// The server's ids of patients and devices found so far.
#[derive(Debug, Default)]
pub struct RefCache {
    patients: HashMap<PatientKey, ServerRef>,
    devices: HashMap<String, ServerRef>,
}

impl RefCache {
    pub fn patient(&self, key: &PatientKey) -> Option<ServerRef> {
        self.patients.get(key).cloned()
    }

    pub fn put_patient(&mut self, key: PatientKey, r: ServerRef) {
        if self.patients.len() >= CACHE_MAX {
            self.patients.clear();
        }
        self.patients.insert(key, r);
    }

    /// Forgets every reference to the patient (under any MRN); whether there was one.
    pub fn forget_patient(&mut self, id: &PatientId) -> bool {
        let before = self.patients.len();
        self.patients.retain(|k, _| k.id != *id);
        self.patients.len() != before
    }

    pub fn device(&self, id: &str) -> Option<ServerRef> {
        self.devices.get(id).cloned()
    }

    pub fn put_device(&mut self, id: &str, r: ServerRef) {
        if self.devices.len() >= CACHE_MAX {
            self.devices.clear();
        }
        self.devices.insert(id.to_owned(), r);
    }

    pub fn forget_device(&mut self, id: &str) -> bool {
        self.devices.remove(id).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clinic() -> Matching {
        Matching {
            patient_system: Some("urn:oid:1.2.3".into()),
            create_patients: false,
            create_devices: true,
        }
    }

    #[test]
    fn the_mrn_is_searched_first_and_vigils_id_after() {
        let id = PatientId::parse("p-1").unwrap();
        let order = clinic().search_order(&id, Some("M-9"));
        assert_eq!(
            order.iter().map(Ident::token).collect::<Vec<_>>(),
            ["urn:oid:1.2.3|M-9", "urn:vigil:patient|p-1"]
        );
        // No MRN, or no system to search it in: Vigil's own id only.
        assert_eq!(clinic().search_order(&id, None).len(), 1);
        let no_system = Matching::default();
        assert_eq!(
            no_system.search_order(&id, Some("M-9"))[0].token(),
            "urn:vigil:patient|p-1"
        );
        assert_eq!(Found::of(vec![]), Found::None);
        assert_eq!(Found::of(vec!["a".into()]), Found::One("a".into()));
        assert_eq!(Found::of(vec!["a".into(), "b".into()]), Found::Many(2));
    }

    #[test]
    fn an_unknown_patient_names_the_identifiers_and_the_fix() {
        let id = PatientId::parse("p-1").unwrap();
        let m = clinic();
        let r = unknown_patient(&m, &id, None, &m.search_order(&id, None));
        assert!(
            r.starts_with("the FHIR server has no Patient with identifier urn:vigil:patient|p-1: set the patient's MRN"),
            "{r}"
        );
        assert!(r.contains("fhir.create_patients = true"), "{r}");
        assert!(r.ends_with("then retry this delivery"), "{r}");
        let searched = m.search_order(&id, Some("M-9"));
        let r = unknown_patient(&m, &id, Some("M-9"), &searched);
        assert!(
            r.contains("urn:oid:1.2.3|M-9 nor urn:vigil:patient|p-1: check the patient's MRN"),
            "{r}"
        );
        let r = unknown_patient(&Matching::default(), &id, Some("M-9"), &searched[1..]);
        assert!(r.contains("set fhir.patient_identifier_system"), "{r}");
        let r = ambiguous_patient(&searched[0], 2);
        assert!(
            r.contains("2 Patients with identifier urn:oid:1.2.3|M-9"),
            "{r}"
        );
    }

    #[test]
    fn the_cache_is_keyed_by_mrn_and_forgets_on_demand() {
        let id = PatientId::parse("p-1").unwrap();
        let r = |i: &str| ServerRef {
            kind: "Patient",
            id: i.into(),
            ident: patient_ident(&id),
        };
        let key = |mrn: Option<&str>| PatientKey {
            id: id.clone(),
            mrn: mrn.map(str::to_owned),
        };
        let mut c = RefCache::default();
        c.put_patient(key(None), r("1"));
        assert_eq!(c.patient(&key(None)).unwrap().id, "1");
        assert_eq!(
            c.patient(&key(Some("M-9"))),
            None,
            "a new MRN is searched afresh"
        );
        c.put_patient(key(Some("M-9")), r("2"));
        assert!(c.forget_patient(&id));
        assert!(!c.forget_patient(&id));
        assert_eq!(c.patient(&key(Some("M-9"))), None);
        c.put_device("ox-1", r("3"));
        assert!(c.forget_device("ox-1"));
        assert!(!c.forget_device("ox-1"));
        for status in [404, 410, 422] {
            assert!(worth_looking_up_again(status));
        }
        for status in [401, 403, 429, 500] {
            assert!(!worth_looking_up_again(status));
        }
    }
}
