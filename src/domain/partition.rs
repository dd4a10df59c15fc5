//! Alert partitions: patients hash into a fixed number of partitions, so that with several
//! instances each partition's alert rules are evaluated by one instance at a time (the one
//! holding its lease). The hash is FNV-1a (64-bit) of the patient id's bytes: stable across
//! builds, machines and restarts, which is what matters here (not resistance to collisions).

use super::PatientId;

/// How many alert partitions there are. Fixed: changing it moves patients between partitions,
/// so it is a migration, not a setting.
pub const ALERT_PARTITIONS: u16 = 32;

/// The alert partition of a patient, `0..ALERT_PARTITIONS`.
pub fn alert_partition(patient: &PatientId) -> u16 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in patient.as_str().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(ALERT_PARTITIONS)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patient_always_falls_in_the_same_partition_and_patients_spread() {
        let p = |s: &str| alert_partition(&PatientId::parse(s).unwrap());
        // Pinned: a change here moves every patient's alerting to another partition.
        assert_eq!(p("p1"), p("p1"));
        assert_eq!(
            [p("p1"), p("mig-0001"), p("pat-42")],
            [
                fnv_reference("p1"),
                fnv_reference("mig-0001"),
                fnv_reference("pat-42")
            ]
        );
        let mut counts = [0u32; ALERT_PARTITIONS as usize];
        for i in 0..32_000 {
            counts[usize::from(p(&format!("pat-{i}")))] += 1;
        }
        assert!(
            counts.iter().all(|&n| (800..1200).contains(&n)),
            "about 1,000 each: {counts:?}"
        );
    }

    /// FNV-1a 64 as its authors publish it, written out independently.
    fn fnv_reference(s: &str) -> u16 {
        let h = s.bytes().fold(14_695_981_039_346_656_037u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(1_099_511_628_211)
        });
        (h % 32) as u16
    }
}
