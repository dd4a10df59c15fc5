//! The whole decode + validate pipeline, `vigil::ingest::pipeline::process`, as a publish
//! from a device of any built-in profile.
//!
//! Input: a 3-byte header, then the payload.
//! - byte 0: the profile, `b0 % 8` over the built-in profiles sorted by id (bp-cuff, cgm,
//!   glucose-meter, patient-app, pulse-oximeter, scale, smartwatch, thermometer);
//! - byte 1: the topic, `b1 % 4`: 0 or 1 readings, 2 `gatt/<uuid>` with
//!   `GATT_CHARACTERISTICS[(b1 / 4) % 7]`, 3 status;
//! - byte 2: the MQTT 5 content type, `b2 % 4`: none, `application/senml+json`,
//!   `Application/SenML+JSON`, `application/json`.
//!
//! Besides not panicking, what the pipeline accepts obeys its rules: each observation is a
//! metric of the device's profile, finite, in canonical units within the metric's plausible
//! range (whole where the metric is integral), timed from 2000-01-01 to 5 minutes after now,
//! and attributed to the device and patient it came from; a status has battery 0-100; a
//! rejection has a label and a reason.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use vigil::decode::GATT_CHARACTERISTICS;
use vigil::domain::{DeviceId, PatientId};
use vigil::ingest::pipeline::{Accepted, EARLIEST_MS, MAX_FUTURE_MS, Source, process};
use vigil::ingest::topic::TopicKind;
use vigil::registry::{Profile, Profiles};
use vigil_fuzz::NOW_MS;

struct Fixture {
    profiles: Vec<Arc<Profile>>,
    device: DeviceId,
    patient: PatientId,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let built_in = Profiles::built_in().expect("built-in profiles load");
        let profiles: Vec<Arc<Profile>> = built_in
            .ids()
            .map(|id| Arc::clone(built_in.get(id).expect("listed profile exists")))
            .collect();
        assert!(!profiles.is_empty());
        Fixture {
            profiles,
            device: DeviceId::parse("fuzz-dev-1").expect("valid device id"),
            patient: PatientId::parse("fuzz-patient-1").expect("valid patient id"),
        }
    })
}

const CONTENT_TYPES: [Option<&str>; 4] = [
    None,
    Some("application/senml+json"),
    Some("Application/SenML+JSON"),
    Some("application/json"),
];

fuzz_target!(|data: &[u8]| {
    let [b0, b1, b2, payload @ ..] = data else {
        return;
    };
    let fx = fixture();
    let profile = &fx.profiles[usize::from(*b0) % fx.profiles.len()];
    let kind = match b1 % 4 {
        0 | 1 => TopicKind::Readings,
        2 => {
            TopicKind::Gatt(GATT_CHARACTERISTICS[usize::from(b1 / 4) % GATT_CHARACTERISTICS.len()])
        }
        _ => TopicKind::Status,
    };
    let content_type = CONTENT_TYPES[usize::from(*b2) % CONTENT_TYPES.len()];
    let src = Source {
        device_id: &fx.device,
        patient_id: &fx.patient,
        profile,
    };

    match process(&src, kind, payload, content_type, NOW_MS) {
        Ok(Accepted::Readings(observations)) => {
            assert_ne!(kind, TopicKind::Status, "readings from a status topic");
            assert!(!observations.is_empty(), "accepted no observation");
            for o in &observations {
                assert!(
                    profile.metrics.contains(&o.metric),
                    "{} not in profile {}: {o:?}",
                    o.metric,
                    profile.id
                );
                assert!(o.value.is_finite(), "not finite: {o:?}");
                let (lo, hi) = o.metric.plausible_range();
                assert!(
                    (lo..=hi).contains(&o.value),
                    "outside plausible range {lo}..={hi}: {o:?}"
                );
                if o.metric.is_integral() {
                    assert_eq!(o.value.fract(), 0.0, "integral metric not whole: {o:?}");
                }
                assert!(
                    (EARLIEST_MS..=NOW_MS + MAX_FUTURE_MS).contains(&o.time_ms),
                    "time outside 2000-01-01 .. now + 5 min: {o:?}"
                );
                assert_eq!(o.device_id, fx.device);
                assert_eq!(o.patient_id, fx.patient);
            }
        }
        Ok(Accepted::Status(status)) => {
            assert_eq!(kind, TopicKind::Status, "status from a readings topic");
            if let Some(battery) = status.battery {
                assert!(battery <= 100, "battery {battery}");
            }
        }
        Err(rejection) => {
            assert!(!rejection.label.is_empty(), "{rejection:?}");
            assert!(!rejection.reason.is_empty(), "{rejection:?}");
        }
    }
});
