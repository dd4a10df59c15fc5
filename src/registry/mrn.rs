//! The patient's medical record number (MRN): the identifier the clinic's own record system, and
//! so its FHIR server, knows the patient by. Vigil's FHIR connector finds the patient on the
//! server by it (with `fhir.patient_identifier_system` as its system).
//!
//! An MRN is unique in one Vigil installation (one clinic): two patients with the same MRN would
//! send one patient's readings into the other's chart, so the database refuses the second (a
//! unique index) whatever the API checked first. It is checked once here, at the edge: 1 to 64
//! characters of `A-Z a-z 0-9 . _ - /`, which covers the MRN formats in use (digits, letters,
//! dashes, a site prefix with a slash) and keeps out whitespace and the characters that FHIR
//! search gives a meaning (`| , $ \`).
//!
//! It must never log an MRN: it identifies a person outside Vigil.

use super::error::RegistryError;

/// The longest MRN accepted.
pub const MRN_MAX_CHARS: usize = 64;

/// Checks an MRN as given to the API: `Ok(None)` for an empty one (which clears it), the trimmed
/// MRN otherwise.
pub(super) fn check(mrn: &str) -> Result<Option<String>, RegistryError> {
    let mrn = mrn.trim();
    if mrn.is_empty() {
        return Ok(None);
    }
    if mrn.chars().count() > MRN_MAX_CHARS {
        return Err(RegistryError::Invalid(format!(
            "mrn must be at most {MRN_MAX_CHARS} characters"
        )));
    }
    if let Some(c) = mrn
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
    {
        return Err(RegistryError::Invalid(format!(
            "mrn may contain only A-Z a-z 0-9 . _ - / (found {c:?})"
        )));
    }
    Ok(Some(mrn.to_owned()))
}

/// The error for an MRN another patient has. It names neither that patient nor the MRN.
pub(crate) fn taken() -> RegistryError {
    RegistryError::Exists("another patient with this mrn".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mrns_are_trimmed_and_checked() {
        assert_eq!(check(" 000123 ").unwrap().as_deref(), Some("000123"));
        assert_eq!(
            check("MRN-12/A.b_c").unwrap().as_deref(),
            Some("MRN-12/A.b_c")
        );
        assert_eq!(check("").unwrap(), None);
        assert_eq!(check("   ").unwrap(), None);
        for bad in ["12 34", "a|b", "a,b", "a$b", "a\\b", "é1", "a\tb"] {
            let e = check(bad).unwrap_err().to_string();
            assert!(e.starts_with("mrn may contain only"), "{bad}: {e}");
        }
        assert!(check(&"1".repeat(64)).is_ok());
        assert!(
            check(&"1".repeat(65))
                .unwrap_err()
                .to_string()
                .contains("at most 64")
        );
    }
}
