//! InfluxDB line protocol: how an observation is written as a line (see "Schema" in
//! [`super::influx`]). The store's writer puts the line in the outbox in the same
//! transaction as the observation.

use crate::domain::Observation;

/// Escapes a measurement name (commas and spaces).
fn escape_measurement(s: &str, out: &mut String) {
    for c in s.chars() {
        if matches!(c, ',' | ' ' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Escapes a tag key or value (commas, equals signs and spaces).
fn escape_tag(s: &str, out: &mut String) {
    for c in s.chars() {
        if matches!(c, ',' | '=' | ' ' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// One observation as a line-protocol line with a millisecond timestamp.
pub(super) fn line(measurement: &str, o: &Observation) -> String {
    let mut s = String::with_capacity(96);
    escape_measurement(measurement, &mut s);
    s.push_str(",device=");
    escape_tag(o.device_id.as_str(), &mut s);
    s.push_str(",patient=");
    escape_tag(o.patient_id.as_str(), &mut s);
    s.push(' ');
    s.push_str(o.metric.name());
    s.push('=');
    if o.metric.is_integral() {
        s.push_str(&format!("{}i", o.value as i64));
    } else {
        s.push_str(&format!("{:?}", o.value));
    }
    s.push(' ');
    s.push_str(&o.time_ms.to_string());
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DeviceId, Metric, PatientId};

    fn obs(metric: Metric, value: f64) -> Observation {
        Observation {
            patient_id: PatientId::parse("pat-1").unwrap(),
            device_id: DeviceId::parse("ox-1").unwrap(),
            metric,
            value,
            time_ms: 1_795_611_600_000,
        }
    }

    #[test]
    fn lines_follow_the_documented_schema() {
        assert_eq!(
            line("vitals", &obs(Metric::Spo2, 97.0)),
            "vitals,device=ox-1,patient=pat-1 spo2=97.0 1795611600000"
        );
        assert_eq!(
            line("vitals", &obs(Metric::BodyTemperature, 36.85)),
            "vitals,device=ox-1,patient=pat-1 body_temperature=36.85 1795611600000"
        );
        assert_eq!(
            line("vitals", &obs(Metric::Steps, 4200.0)),
            "vitals,device=ox-1,patient=pat-1 steps=4200i 1795611600000"
        );
        assert_eq!(
            line("my vitals,x", &obs(Metric::Spo2, 97.0)),
            "my\\ vitals\\,x,device=ox-1,patient=pat-1 spo2=97.0 1795611600000"
        );
        let mut t = String::new();
        escape_tag("a b,c=d", &mut t);
        assert_eq!(t, "a\\ b\\,c\\=d");
    }
}
