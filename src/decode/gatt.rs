//! Bluetooth GATT health characteristics: the value bytes a device relays from its sensor.
//!
//! Layouts follow the Bluetooth SIG characteristic definitions (`docs/decoders.md` lists them):
//! a flags byte, then the fields the flags select, in order,
//! little-endian. The payload length is checked against the flags before any field is read,
//! so a short or long payload is reported with the length the flags need; only heart rate's
//! RR intervals may fill the rest of a payload, and when its flag is set at least one must.
//! Every field a flag promises must be there. Reserved flag bits are ignored.
//!
//! Readings carry canonical metric names and the UCUM unit the flags select. Values are not
//! converted between unit systems (kPa stays kPa, °F stays °F); only glucose's SI mass and
//! substance concentrations (kg/L, mol/L), which no one reads, are rescaled to mg/dL and
//! mmol/L by shifting the decimal exponent. Device-reported faults (no sensor contact,
//! control solution, sensor malfunction, invalid measurement …) are errors, not readings.

use time::{Date, Month, PrimitiveDateTime, Time};

use super::reading::{DecodeError, RawReading};
use super::sfloat::{self, SpecialValue};

const HEART_RATE: u16 = 0x2a37;
const BLOOD_PRESSURE: u16 = 0x2a35;
const GLUCOSE: u16 = 0x2a18;
const WEIGHT: u16 = 0x2a9d;
const PLX_SPOT_CHECK: u16 = 0x2a5e;
const PLX_CONTINUOUS: u16 = 0x2a5f;
const TEMPERATURE: u16 = 0x2a1c;

/// Bytes of a GATT DateTime: year u16, month, day, hours, minutes, seconds.
const DATE_TIME: usize = 7;

pub(crate) fn decode(uuid16: u16, payload: &[u8]) -> Result<Vec<RawReading>, DecodeError> {
    match uuid16 {
        HEART_RATE => heart_rate(payload),
        BLOOD_PRESSURE => blood_pressure(payload),
        GLUCOSE => glucose(payload),
        WEIGHT => weight(payload),
        PLX_SPOT_CHECK => plx_spot_check(payload),
        PLX_CONTINUOUS => plx_continuous(payload),
        TEMPERATURE => temperature(payload),
        _ => Err(DecodeError::UnknownCharacteristic { uuid16 }),
    }
}

/// Heart Rate Measurement 0x2A37: flags · HR u8|u16 · energy expended u16 · RR u16 × n,
/// n ≥ 1 when flagged.
fn heart_rate(payload: &[u8]) -> Result<Vec<RawReading>, DecodeError> {
    let mut r = Reader::new(HEART_RATE, payload)?;
    let (wide, energy, rr) = (r.flag(0), r.flag(3), r.flag(4));
    let fixed = 1 + if wide { 2 } else { 1 } + size_if(energy, 2);
    if rr {
        // The flag says "one or more RR values are present": a payload that sets it and
        // stops at the fixed fields is cut short, and its rate is not trusted either.
        r.need_at_least(fixed + 2)?;
        if !payload.len().saturating_sub(fixed).is_multiple_of(2) {
            return Err(DecodeError::Malformed {
                characteristic: HEART_RATE,
                reason: "RR-interval bytes are not a whole number of 16-bit values",
            });
        }
    } else {
        r.need_exactly(fixed)?;
    }
    // Bits 1-2: 0 or 1 = contact detection not supported, 2 = supported but no contact,
    // 3 = contact. Without contact the value is noise.
    if (r.flags >> 1) & 0b11 == 0b10 {
        return Err(r.unusable("sensor not in contact"));
    }
    let bpm = if wide {
        f64::from(r.u16()?)
    } else {
        f64::from(r.u8()?)
    };
    if energy {
        let _energy_kj = r.u16()?;
    }
    while r.remaining() > 0 {
        let _rr_1024ths_s = r.u16()?;
    }
    Ok(vec![reading("heart_rate", bpm, "/min", None)])
}

/// Blood Pressure Measurement 0x2A35: flags · systolic · diastolic · MAP (SFLOAT) ·
/// DateTime · pulse rate SFLOAT · user id u8 · measurement status u16.
fn blood_pressure(payload: &[u8]) -> Result<Vec<RawReading>, DecodeError> {
    let mut r = Reader::new(BLOOD_PRESSURE, payload)?;
    let (kpa, stamped, pulse, user, status) =
        (r.flag(0), r.flag(1), r.flag(2), r.flag(3), r.flag(4));
    r.need_exactly(
        1 + 6
            + size_if(stamped, DATE_TIME)
            + size_if(pulse, 2)
            + size_if(user, 1)
            + size_if(status, 2),
    )?;
    let unit = if kpa { "kPa" } else { "mm[Hg]" };
    let systolic = r.sfloat("systolic")?;
    let diastolic = r.sfloat("diastolic")?;
    // Many cuffs do not compute MAP and send NaN there; the rest of the reading is good.
    let mean = r.optional_sfloat("mean arterial pressure")?;
    let time_ms = if stamped { r.date_time()? } else { None };
    let pulse = if pulse {
        r.optional_sfloat("pulse rate")?
    } else {
        None
    };
    if user {
        let _user_id = r.u8()?;
    }
    if status {
        // Body movement, cuff fit, irregular pulse, position: worth showing one day, but
        // none of them makes the pressures wrong.
        let _measurement_status = r.u16()?;
    }
    let mut readings = Vec::with_capacity(4);
    readings.push(reading("bp_systolic", systolic, unit, time_ms));
    readings.push(reading("bp_diastolic", diastolic, unit, time_ms));
    if let Some(mean) = mean {
        readings.push(reading("bp_mean", mean, unit, time_ms));
    }
    if let Some(pulse) = pulse {
        readings.push(reading("heart_rate", pulse, "/min", time_ms));
    }
    Ok(readings)
}

/// Glucose sensor status annunciation bits that make the concentration untrustworthy.
/// Bit 0 (battery low) does not; bit 11 (time fault) only voids the time.
const GLUCOSE_STATUS_REJECTED: [(u32, &str); 10] = [
    (1 << 1, "sensor status: sensor malfunction (bit 1)"),
    (1 << 2, "sensor status: sample size insufficient (bit 2)"),
    (1 << 3, "sensor status: strip insertion error (bit 3)"),
    (1 << 4, "sensor status: strip type incorrect (bit 4)"),
    (
        1 << 5,
        "sensor status: result above the device's range (bit 5)",
    ),
    (
        1 << 6,
        "sensor status: result below the device's range (bit 6)",
    ),
    (
        1 << 7,
        "sensor status: temperature too high for a valid test (bit 7)",
    ),
    (
        1 << 8,
        "sensor status: temperature too low for a valid test (bit 8)",
    ),
    (1 << 9, "sensor status: strip pulled too soon (bit 9)"),
    (1 << 10, "sensor status: general device fault (bit 10)"),
];
const GLUCOSE_TIME_FAULT: u16 = 1 << 11;
const CONTROL_SOLUTION_TYPE: u8 = 10;
const CONTROL_SOLUTION_LOCATION: u8 = 4;

/// Glucose Measurement 0x2A18: flags · sequence u16 · base DateTime · time offset s16 min ·
/// concentration SFLOAT · type/location u8 · sensor status u16.
fn glucose(payload: &[u8]) -> Result<Vec<RawReading>, DecodeError> {
    let mut r = Reader::new(GLUCOSE, payload)?;
    let (offset, concentration, mol, status) = (r.flag(0), r.flag(1), r.flag(2), r.flag(3));
    r.need_exactly(
        1 + 2 + DATE_TIME + size_if(offset, 2) + size_if(concentration, 3) + size_if(status, 2),
    )?;
    let _sequence_number = r.u16()?;
    let base_ms = r.date_time()?;
    let offset_min = if offset { r.i16()? } else { 0 };
    let concentration = if concentration {
        Some((r.u16()?, r.u8()?))
    } else {
        None
    };
    let status = if status { r.u16()? } else { 0 };

    // The device's own verdict first: it says best why there is no good value.
    if let Some(reason) = first_set(u32::from(status), &GLUCOSE_STATUS_REJECTED) {
        return Err(r.unusable(reason));
    }
    let Some((raw, type_location)) = concentration else {
        return Err(r.unusable("no concentration (flags bit 1 clear)"));
    };
    if type_location & 0x0F == CONTROL_SOLUTION_TYPE
        || type_location >> 4 == CONTROL_SOLUTION_LOCATION
    {
        return Err(r.unusable("control-solution test, not a patient reading"));
    }
    let decimal = sfloat::sfloat_decimal(raw)
        .map_err(|value| r.special("SFLOAT", value, "glucose concentration"))?;
    // kg/L × 10^5 = mg/dL and mol/L × 10^3 = mmol/L, done on the decimal exponent so that
    // 100 × 10^-5 kg/L becomes exactly 100 mg/dL.
    let (value, unit) = if mol {
        (decimal.scaled(3).to_f64(), "mmol/L")
    } else {
        (decimal.scaled(5).to_f64(), "mg/dL")
    };
    let time_ms = match base_ms {
        Some(base) if status & GLUCOSE_TIME_FAULT == 0 => Some(
            base.checked_add(i64::from(offset_min) * 60_000)
                .filter(|t| super::json::ms_in_range(*t))
                .ok_or_else(|| r.invalid_time("plus offset is past year 9999".to_owned()))?,
        ),
        _ => None,
    };
    Ok(vec![reading("glucose", value, unit, time_ms)])
}

/// Weight Measurement 0x2A9D: flags · weight u16 · DateTime · user id u8 · BMI u16 ·
/// height u16.
fn weight(payload: &[u8]) -> Result<Vec<RawReading>, DecodeError> {
    let mut r = Reader::new(WEIGHT, payload)?;
    let (imperial, stamped, user, bmi) = (r.flag(0), r.flag(1), r.flag(2), r.flag(3));
    r.need_exactly(1 + 2 + size_if(stamped, DATE_TIME) + size_if(user, 1) + size_if(bmi, 4))?;
    let raw = r.u16()?;
    let time_ms = if stamped { r.date_time()? } else { None };
    if user {
        let _user_id = r.u8()?;
    }
    if bmi {
        let _bmi_tenths = r.u16()?;
        let _height = r.u16()?;
    }
    if raw == 0xFFFF {
        return Err(r.unusable("measurement unsuccessful (weight 0xFFFF)"));
    }
    // Resolution 0.005 kg or 0.01 lb; not SFLOAT. raw × 5 is exact, so dividing by 1000
    // rounds once: 14100 → 70.5 kg.
    let (value, unit) = if imperial {
        (f64::from(raw) / 100.0, "[lb_av]")
    } else {
        (f64::from(raw) * 5.0 / 1000.0, "kg")
    };
    Ok(vec![reading("body_weight", value, unit, time_ms)])
}

/// PLX measurement status bits (u16) that void a reading.
const PLX_MEASUREMENT_REJECTED: [(u32, &str); 5] = [
    (1 << 15, "measurement status: invalid (bit 15)"),
    (
        1 << 13,
        "measurement status: measurement unavailable (bit 13)",
    ),
    (1 << 12, "measurement status: calibration ongoing (bit 12)"),
    (
        1 << 10,
        "measurement status: data for demonstration (bit 10)",
    ),
    (1 << 11, "measurement status: data for testing (bit 11)"),
];

/// PLX device and sensor status bits (u24) that void a reading.
const PLX_DEVICE_REJECTED: [(u32, &str); 4] = [
    (
        1 << 1,
        "device and sensor status: equipment malfunction detected (bit 1)",
    ),
    (
        1 << 11,
        "device and sensor status: sensor not connected to user (bit 11)",
    ),
    (
        1 << 14,
        "device and sensor status: sensor malfunctioning (bit 14)",
    ),
    (
        1 << 15,
        "device and sensor status: sensor disconnected (bit 15)",
    ),
];

fn check_plx_status(r: &Reader<'_>, measurement: u16, device: u32) -> Result<(), DecodeError> {
    match first_set(u32::from(measurement), &PLX_MEASUREMENT_REJECTED)
        .or_else(|| first_set(device, &PLX_DEVICE_REJECTED))
    {
        Some(reason) => Err(r.unusable(reason)),
        None => Ok(()),
    }
}

/// PLX Spot-check Measurement 0x2A5E: flags · SpO2 · PR (SFLOAT) · DateTime · measurement
/// status u16 · device and sensor status u24 · pulse amplitude index SFLOAT.
fn plx_spot_check(payload: &[u8]) -> Result<Vec<RawReading>, DecodeError> {
    let mut r = Reader::new(PLX_SPOT_CHECK, payload)?;
    let (stamped, measurement, device, pai, clock_not_set) =
        (r.flag(0), r.flag(1), r.flag(2), r.flag(3), r.flag(4));
    r.need_exactly(
        1 + 4
            + size_if(stamped, DATE_TIME)
            + size_if(measurement, 2)
            + size_if(device, 3)
            + size_if(pai, 2),
    )?;
    let spo2 = r.u16()?;
    let pulse = r.u16()?;
    let stamp = if stamped {
        Some(r.take::<DATE_TIME>()?)
    } else {
        None
    };
    let measurement = if measurement { r.u16()? } else { 0 };
    let device = if device { r.u24()? } else { 0 };
    if pai {
        let _pulse_amplitude_index = r.u16()?;
    }
    check_plx_status(&r, measurement, device)?;
    let spo2 = r.sfloat_value(spo2, "SpO2")?;
    let pulse = r.sfloat_value(pulse, "pulse rate")?;
    // Flags bit 4: the device clock is not set, so its timestamp is meaningless (not even
    // validated); the gateway stamps the reading instead.
    let time_ms = match stamp {
        Some(bytes) if !clock_not_set => date_time(PLX_SPOT_CHECK, bytes)?,
        _ => None,
    };
    Ok(vec![
        reading("spo2", spo2, "%", time_ms),
        reading("heart_rate", pulse, "/min", time_ms),
    ])
}

/// PLX Continuous Measurement 0x2A5F: flags · SpO2, PR normal · fast pair · slow pair ·
/// measurement status u16 · device and sensor status u24 · pulse amplitude index SFLOAT.
fn plx_continuous(payload: &[u8]) -> Result<Vec<RawReading>, DecodeError> {
    let mut r = Reader::new(PLX_CONTINUOUS, payload)?;
    let (fast, slow, measurement, device, pai) =
        (r.flag(0), r.flag(1), r.flag(2), r.flag(3), r.flag(4));
    r.need_exactly(
        1 + 4
            + size_if(fast, 4)
            + size_if(slow, 4)
            + size_if(measurement, 2)
            + size_if(device, 3)
            + size_if(pai, 2),
    )?;
    let spo2 = r.u16()?;
    let pulse = r.u16()?;
    if fast {
        let _fast_pair = (r.u16()?, r.u16()?);
    }
    if slow {
        let _slow_pair = (r.u16()?, r.u16()?);
    }
    let measurement = if measurement { r.u16()? } else { 0 };
    let device = if device { r.u24()? } else { 0 };
    if pai {
        let _pulse_amplitude_index = r.u16()?;
    }
    check_plx_status(&r, measurement, device)?;
    let spo2 = r.sfloat_value(spo2, "SpO2")?;
    let pulse = r.sfloat_value(pulse, "pulse rate")?;
    Ok(vec![
        reading("spo2", spo2, "%", None),
        reading("heart_rate", pulse, "/min", None),
    ])
}

/// Temperature Measurement 0x2A1C: flags · temperature FLOAT · DateTime · type u8.
fn temperature(payload: &[u8]) -> Result<Vec<RawReading>, DecodeError> {
    let mut r = Reader::new(TEMPERATURE, payload)?;
    let (fahrenheit, stamped, typed) = (r.flag(0), r.flag(1), r.flag(2));
    r.need_exactly(1 + 4 + size_if(stamped, DATE_TIME) + size_if(typed, 1))?;
    let raw = r.u32()?;
    let time_ms = if stamped { r.date_time()? } else { None };
    if typed {
        let _body_site = r.u8()?;
    }
    let value = sfloat::float(raw).map_err(|value| r.special("FLOAT", value, "temperature"))?;
    let unit = if fahrenheit { "[degF]" } else { "Cel" };
    Ok(vec![reading("body_temperature", value, unit, time_ms)])
}

fn reading(metric: &str, value: f64, unit: &str, time_ms: Option<i64>) -> RawReading {
    RawReading {
        metric: metric.to_owned(),
        value,
        unit: Some(unit.to_owned()),
        time_ms,
    }
}

fn size_if(present: bool, size: usize) -> usize {
    if present { size } else { 0 }
}

/// The reason of the first entry of `table` whose bit is set in `bits`.
fn first_set(bits: u32, table: &[(u32, &'static str)]) -> Option<&'static str> {
    table
        .iter()
        .find(|(bit, _)| bits & bit != 0)
        .map(|&(_, reason)| reason)
}

/// Decodes a GATT DateTime to Unix milliseconds, treated as UTC (devices keep local time,
/// but nothing in the characteristic says which zone). Year, month or day 0 means unknown.
fn date_time(characteristic: u16, bytes: [u8; DATE_TIME]) -> Result<Option<i64>, DecodeError> {
    let [year_lo, year_hi, month, day, hours, minutes, seconds] = bytes;
    let year = u16::from_le_bytes([year_lo, year_hi]);
    let invalid = |reason: String| DecodeError::InvalidTimestamp {
        characteristic,
        reason,
    };
    let checks = [
        (month, 12, "month", "1-12, 0 = unknown"),
        (day, 31, "day", "1-31, 0 = unknown"),
        (hours, 23, "hours", "0-23"),
        (minutes, 59, "minutes", "0-59"),
        (seconds, 59, "seconds", "0-59"),
    ];
    for (value, max, field, range) in checks {
        if value > max {
            return Err(invalid(format!(
                "{field} {value} is out of range ({range})"
            )));
        }
    }
    if year == 0 || month == 0 || day == 0 {
        return Ok(None);
    }
    if !(1582..=9999).contains(&year) {
        return Err(invalid(format!(
            "year {year} is out of range (1582-9999, 0 = unknown)"
        )));
    }
    let date = Month::try_from(month)
        .and_then(|m| Date::from_calendar_date(i32::from(year), m, day))
        .map_err(|_| invalid(format!("day {day} does not exist in {year:04}-{month:02}")))?;
    let time = Time::from_hms(hours, minutes, seconds).map_err(|_| {
        invalid(format!(
            "{hours:02}:{minutes:02}:{seconds:02} is not a time"
        ))
    })?;
    let seconds = PrimitiveDateTime::new(date, time)
        .assume_utc()
        .unix_timestamp();
    seconds
        .checked_mul(1000)
        .map(Some)
        .ok_or_else(|| invalid("is out of range".to_owned()))
}

/// Reads fields in order, every read bounds-checked; errors name the characteristic.
struct Reader<'a> {
    characteristic: u16,
    flags: u8,
    payload: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts after the flags byte.
    fn new(characteristic: u16, payload: &'a [u8]) -> Result<Self, DecodeError> {
        match payload.first() {
            Some(&flags) => Ok(Self {
                characteristic,
                flags,
                payload,
                pos: 1,
            }),
            None => Err(DecodeError::Empty { characteristic }),
        }
    }

    fn flag(&self, bit: u8) -> bool {
        self.flags.checked_shr(u32::from(bit)).unwrap_or(0) & 1 != 0
    }

    fn need_at_least(&self, needed: usize) -> Result<(), DecodeError> {
        if self.payload.len() < needed {
            return Err(self.truncated(needed));
        }
        Ok(())
    }

    fn need_exactly(&self, expected: usize) -> Result<(), DecodeError> {
        self.need_at_least(expected)?;
        if self.payload.len() > expected {
            return Err(DecodeError::TrailingBytes {
                characteristic: self.characteristic,
                flags: self.flags,
                len: self.payload.len(),
                expected,
            });
        }
        Ok(())
    }

    fn remaining(&self) -> usize {
        self.payload.len().saturating_sub(self.pos)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let end = self.pos.saturating_add(N);
        let bytes = self
            .payload
            .get(self.pos..end)
            .and_then(|bytes| <[u8; N]>::try_from(bytes).ok())
            .ok_or_else(|| self.truncated(end))?;
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.take::<1>().map(|[byte]| byte)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.take().map(u16::from_le_bytes)
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        self.take().map(i16::from_le_bytes)
    }

    fn u24(&mut self) -> Result<u32, DecodeError> {
        self.take::<3>()
            .map(|[a, b, c]| u32::from_le_bytes([a, b, c, 0]))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.take().map(u32::from_le_bytes)
    }

    /// Reads an SFLOAT that must be a number.
    fn sfloat(&mut self, field: &'static str) -> Result<f64, DecodeError> {
        let raw = self.u16()?;
        self.sfloat_value(raw, field)
    }

    /// Reads an SFLOAT that the device may leave out as NaN or NRes (`None`); other special
    /// values are errors.
    fn optional_sfloat(&mut self, field: &'static str) -> Result<Option<f64>, DecodeError> {
        match sfloat::sfloat(self.u16()?) {
            Ok(value) => Ok(Some(value)),
            Err(SpecialValue::NaN | SpecialValue::NRes) => Ok(None),
            Err(value) => Err(self.special("SFLOAT", value, field)),
        }
    }

    fn sfloat_value(&self, raw: u16, field: &'static str) -> Result<f64, DecodeError> {
        sfloat::sfloat(raw).map_err(|value| self.special("SFLOAT", value, field))
    }

    fn date_time(&mut self) -> Result<Option<i64>, DecodeError> {
        let bytes = self.take()?;
        date_time(self.characteristic, bytes)
    }

    fn truncated(&self, needed: usize) -> DecodeError {
        DecodeError::Truncated {
            characteristic: self.characteristic,
            flags: self.flags,
            len: self.payload.len(),
            needed,
        }
    }

    fn special(
        &self,
        encoding: &'static str,
        value: SpecialValue,
        field: &'static str,
    ) -> DecodeError {
        DecodeError::SpecialValue {
            characteristic: self.characteristic,
            encoding,
            value,
            field,
        }
    }

    fn unusable(&self, reason: &'static str) -> DecodeError {
        DecodeError::Unusable {
            characteristic: self.characteristic,
            reason,
        }
    }

    fn invalid_time(&self, reason: String) -> DecodeError {
        DecodeError::InvalidTimestamp {
            characteristic: self.characteristic,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::GATT_CHARACTERISTICS;
    use super::super::json::ms_in_range;
    use super::*;
    use proptest::prelude::*;

    /// GATT DateTime 2026-11-25 13:00:00: year 2026 = 0x07EA little-endian, month 11,
    /// day 25, 13:00:00. `date -u -d '2026-11-25 13:00:00' +%s` = 1795611600.
    const T: [u8; 7] = [0xEA, 0x07, 11, 25, 13, 0, 0];
    const T_MS: i64 = 1_795_611_600_000;

    fn r(metric: &str, value: f64, unit: &str, time_ms: Option<i64>) -> RawReading {
        reading(metric, value, unit, time_ms)
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// Every proper prefix of a fixed-length payload is reported as truncated with the
    /// length its flags need, and one extra byte as trailing.
    fn assert_every_cut_and_extension(uuid: u16, full: &[u8]) {
        assert!(decode(uuid, full).is_ok(), "{uuid:04x} {full:02x?}");
        assert_eq!(
            decode(uuid, &[]),
            Err(DecodeError::Empty {
                characteristic: uuid
            })
        );
        for len in 1..full.len() {
            assert_eq!(
                decode(uuid, &full[..len]),
                Err(DecodeError::Truncated {
                    characteristic: uuid,
                    flags: full[0],
                    len,
                    needed: full.len()
                }),
                "{uuid:04x} cut at {len}"
            );
        }
        let longer = cat(&[full, &[0]]);
        assert_eq!(
            decode(uuid, &longer),
            Err(DecodeError::TrailingBytes {
                characteristic: uuid,
                flags: full[0],
                len: full.len() + 1,
                expected: full.len()
            })
        );
    }

    fn unusable(characteristic: u16, reason: &'static str) -> Result<Vec<RawReading>, DecodeError> {
        Err(DecodeError::Unusable {
            characteristic,
            reason,
        })
    }

    fn special(
        characteristic: u16,
        encoding: &'static str,
        value: SpecialValue,
        field: &'static str,
    ) -> Result<Vec<RawReading>, DecodeError> {
        Err(DecodeError::SpecialValue {
            characteristic,
            encoding,
            value,
            field,
        })
    }

    #[test]
    fn dispatch_covers_the_advertised_characteristics() {
        for &uuid in GATT_CHARACTERISTICS {
            assert_eq!(
                decode(uuid, &[]),
                Err(DecodeError::Empty {
                    characteristic: uuid
                })
            );
        }
        // 0x2A36 Intermediate Cuff Pressure shares 0x2A35's layout but is not a final reading.
        let err = decode(0x2a36, &[0, 0x78, 0, 0x50, 0, 0x5d, 0]).unwrap_err();
        assert_eq!(err, DecodeError::UnknownCharacteristic { uuid16: 0x2a36 });
        assert_eq!(
            err.to_string(),
            "no decoder for GATT characteristic 2a36 (supported: 2a37, 2a35, 2a18, 2a9d, 2a5e, 2a5f, 2a1c)"
        );
    }

    // ---- 0x2A37 Heart Rate Measurement ----

    #[test]
    fn heart_rate_vectors() {
        // Bluetooth SIG org.bluetooth.characteristic.heart_rate_measurement, flags 0x00:
        // HR as u8, contact detection not supported; HR 0x48 = 72.
        assert_eq!(
            decode(HEART_RATE, &[0x00, 0x48]),
            Ok(vec![r("heart_rate", 72.0, "/min", None)])
        );
        // Flags b0: HR as u16, 0x012C = 300.
        assert_eq!(
            decode(HEART_RATE, &[0x01, 0x2C, 0x01]),
            Ok(vec![r("heart_rate", 300.0, "/min", None)])
        );
        // Flags b1-2 = 3 (0x06): contact detected. = 1 (0x02): not supported.
        assert!(decode(HEART_RATE, &[0x06, 0x48]).is_ok());
        assert!(decode(HEART_RATE, &[0x02, 0x48]).is_ok());
        // Flags b1-2 = 2 (0x04): supported, no contact.
        assert_eq!(
            decode(HEART_RATE, &[0x04, 0x48]),
            unusable(HEART_RATE, "sensor not in contact")
        );
        // Flags b3: energy expended u16 0x0010 = 16 kJ, parsed, not emitted.
        assert_eq!(
            decode(HEART_RATE, &[0x08, 0x48, 0x10, 0x00]),
            Ok(vec![r("heart_rate", 72.0, "/min", None)])
        );
        // Flags b4: RR intervals fill the rest: 0x0400 = 1024/1024 s, 0x0200 = 0.5 s.
        assert_eq!(
            decode(HEART_RATE, &[0x16, 0x48, 0x00, 0x04, 0x00, 0x02]),
            Ok(vec![r("heart_rate", 72.0, "/min", None)])
        );
        // RR flag set and no interval: the flag says one or more follow, so the payload is
        // cut short (a sensor with none to send clears the flag).
        assert_eq!(
            decode(HEART_RATE, &[0x10, 0x48]),
            Err(DecodeError::Truncated {
                characteristic: HEART_RATE,
                flags: 0x10,
                len: 2,
                needed: 4
            })
        );
        // The same with a u16 rate and contact, 0x0101 = 257 /min: not a heart rate of 257.
        assert_eq!(
            decode(HEART_RATE, &[0x17, 0x01, 0x01]),
            Err(DecodeError::Truncated {
                characteristic: HEART_RATE,
                flags: 0x17,
                len: 3,
                needed: 5
            })
        );
        // RR flag set, half an interval.
        assert_eq!(
            decode(HEART_RATE, &[0x10, 0x48, 0x00]),
            Err(DecodeError::Truncated {
                characteristic: HEART_RATE,
                flags: 0x10,
                len: 3,
                needed: 4
            })
        );
        // RR flag set, an odd byte left over after an interval.
        assert_eq!(
            decode(HEART_RATE, &[0x10, 0x48, 0x00, 0x04, 0x00]),
            Err(DecodeError::Malformed {
                characteristic: HEART_RATE,
                reason: "RR-interval bytes are not a whole number of 16-bit values"
            })
        );
        // Without the RR flag nothing may follow the declared fields.
        assert_eq!(
            decode(HEART_RATE, &[0x00, 0x48, 0x00]),
            Err(DecodeError::TrailingBytes {
                characteristic: HEART_RATE,
                flags: 0,
                len: 3,
                expected: 2
            })
        );
    }

    #[test]
    fn heart_rate_cuts() {
        // Built here: flags 0x19 = u16 HR (b0) + energy (b3) + RR (b4): 1 + 2 + 2 = 5 fixed
        // bytes, then one RR interval.
        let full = [0x19, 0x2C, 0x01, 0x10, 0x00, 0x00, 0x04];
        assert_eq!(
            decode(HEART_RATE, &full),
            Ok(vec![r("heart_rate", 300.0, "/min", None)])
        );
        assert_eq!(
            decode(HEART_RATE, &[]),
            Err(DecodeError::Empty {
                characteristic: HEART_RATE
            })
        );
        // The RR flag promises at least one interval: every cut is short of 7 bytes.
        for len in 1..full.len() {
            assert_eq!(
                decode(HEART_RATE, &full[..len]),
                Err(DecodeError::Truncated {
                    characteristic: HEART_RATE,
                    flags: 0x19,
                    len,
                    needed: 7
                })
            );
        }
        assert!(matches!(
            decode(HEART_RATE, &cat(&[&full, &[0]])),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(decode(HEART_RATE, &cat(&[&full, &[0x00, 0x02]])).is_ok());
        // Without RR the fixed part must be exact: flags 0x09 = u16 HR + energy.
        assert_every_cut_and_extension(HEART_RATE, &[0x09, 0x2C, 0x01, 0x10, 0x00]);
    }

    #[test]
    fn heart_rate_all_flag_combinations() {
        // Built here from the layout; reserved bits 5-7 set on half the cases are ignored.
        for flags in 0u8..=0xFF {
            let mut payload = vec![flags];
            payload.extend_from_slice(if flags & 1 != 0 {
                &[0x48, 0x00]
            } else {
                &[0x48]
            });
            if flags & 0x08 != 0 {
                payload.extend_from_slice(&[0x10, 0x00]);
            }
            if flags & 0x10 != 0 {
                payload.extend_from_slice(&[0x00, 0x04, 0x00, 0x03]);
            }
            let expected = if (flags >> 1) & 3 == 2 {
                unusable(HEART_RATE, "sensor not in contact")
            } else {
                Ok(vec![r("heart_rate", 72.0, "/min", None)])
            };
            assert_eq!(decode(HEART_RATE, &payload), expected, "flags {flags:#04x}");
        }
    }

    // ---- 0x2A35 Blood Pressure Measurement ----

    /// Built here: 120/80 mmHg, MAP 93 as SFLOAT exponent 0 (0x0078, 0x0050, 0x005D).
    const BP_MMHG: [u8; 6] = [0x78, 0x00, 0x50, 0x00, 0x5D, 0x00];

    #[test]
    fn blood_pressure_vectors() {
        // Bluetooth SIG org.bluetooth.characteristic.blood_pressure_measurement, flags 0x00:
        // mmHg, no optional field.
        assert_eq!(
            decode(BLOOD_PRESSURE, &cat(&[&[0x00], &BP_MMHG])),
            Ok(vec![
                r("bp_systolic", 120.0, "mm[Hg]", None),
                r("bp_diastolic", 80.0, "mm[Hg]", None),
                r("bp_mean", 93.0, "mm[Hg]", None),
            ])
        );
        // Flags b0 kPa, values as stated: 16.0 = 160 × 10^-1 → 0xF0A0; 10.7 = 107 × 10^-1 →
        // 0xF06B; 12.5 = 125 × 10^-1 → 0xF07D.
        assert_eq!(
            decode(BLOOD_PRESSURE, &[0x01, 0xA0, 0xF0, 0x6B, 0xF0, 0x7D, 0xF0]),
            Ok(vec![
                r("bp_systolic", 16.0, "kPa", None),
                r("bp_diastolic", 10.7, "kPa", None),
                r("bp_mean", 12.5, "kPa", None),
            ])
        );
        // Flags 0x1E: b1 timestamp, b2 pulse rate 72 (0x0048), b3 user id 1, b4 status
        // 0x0004 (irregular pulse, accepted). 1 + 6 + 7 + 2 + 1 + 2 = 19 bytes, the maximum.
        let full = cat(&[&[0x1E], &BP_MMHG, &T, &[0x48, 0x00], &[0x01], &[0x04, 0x00]]);
        assert_eq!(full.len(), 19);
        assert_eq!(
            decode(BLOOD_PRESSURE, &full),
            Ok(vec![
                r("bp_systolic", 120.0, "mm[Hg]", Some(T_MS)),
                r("bp_diastolic", 80.0, "mm[Hg]", Some(T_MS)),
                r("bp_mean", 93.0, "mm[Hg]", Some(T_MS)),
                r("heart_rate", 72.0, "/min", Some(T_MS)),
            ])
        );
        assert_every_cut_and_extension(BLOOD_PRESSURE, &full);
        assert_every_cut_and_extension(BLOOD_PRESSURE, &cat(&[&[0x01], &BP_MMHG]));
    }

    #[test]
    fn blood_pressure_special_values() {
        let with = |sys: [u8; 2], dia: [u8; 2], map: [u8; 2]| {
            decode(BLOOD_PRESSURE, &cat(&[&[0x00], &sys, &dia, &map]))
        };
        let (sys, dia) = ([0x78, 0x00], [0x50, 0x00]);
        // MAP NaN (0x07FF) or NRes (0x0800): skipped, the pressures stand.
        for map in [[0xFF, 0x07], [0x00, 0x08]] {
            assert_eq!(
                with(sys, dia, map),
                Ok(vec![
                    r("bp_systolic", 120.0, "mm[Hg]", None),
                    r("bp_diastolic", 80.0, "mm[Hg]", None),
                ])
            );
        }
        // MAP +INF (0x07FE): an error.
        assert_eq!(
            with(sys, dia, [0xFE, 0x07]),
            special(
                BLOOD_PRESSURE,
                "SFLOAT",
                SpecialValue::PositiveInfinity,
                "mean arterial pressure"
            )
        );
        // Systolic or diastolic special: an error.
        let nan = with([0xFF, 0x07], dia, [0x5D, 0x00]);
        assert_eq!(
            nan,
            special(BLOOD_PRESSURE, "SFLOAT", SpecialValue::NaN, "systolic")
        );
        assert_eq!(
            nan.unwrap_err().to_string(),
            "2a35: SFLOAT special value NaN in systolic"
        );
        assert_eq!(
            with(sys, [0x00, 0x08], [0x5D, 0x00]),
            special(BLOOD_PRESSURE, "SFLOAT", SpecialValue::NRes, "diastolic")
        );
        // Pulse rate (flags b2) NaN: skipped; -INF (0x0802): an error.
        assert_eq!(
            decode(BLOOD_PRESSURE, &cat(&[&[0x04], &BP_MMHG, &[0xFF, 0x07]])).map(|r| r.len()),
            Ok(3)
        );
        assert_eq!(
            decode(BLOOD_PRESSURE, &cat(&[&[0x04], &BP_MMHG, &[0x02, 0x08]])),
            special(
                BLOOD_PRESSURE,
                "SFLOAT",
                SpecialValue::NegativeInfinity,
                "pulse rate"
            )
        );
    }

    #[test]
    fn blood_pressure_error_messages() {
        // Flags 0x06 (timestamp + pulse) need 1 + 6 + 7 + 2 = 16 bytes.
        assert_eq!(
            decode(BLOOD_PRESSURE, &[0x06, 0x78, 0x00, 0x50, 0x00])
                .unwrap_err()
                .to_string(),
            "2a35: payload is 5 bytes, flags 0x06 need at least 16"
        );
        let month_13 = [0xEA, 0x07, 13, 25, 13, 0, 0];
        assert_eq!(
            decode(BLOOD_PRESSURE, &cat(&[&[0x02], &BP_MMHG, &month_13]))
                .unwrap_err()
                .to_string(),
            "2a35: timestamp month 13 is out of range (1-12, 0 = unknown)"
        );
    }

    #[test]
    fn blood_pressure_all_flag_combinations() {
        for flags in 0u8..=0xFF {
            let mut payload = cat(&[&[flags], &BP_MMHG]);
            if flags & 0x02 != 0 {
                payload.extend_from_slice(&T);
            }
            if flags & 0x04 != 0 {
                payload.extend_from_slice(&[0x48, 0x00]);
            }
            if flags & 0x08 != 0 {
                payload.push(0xFF);
            }
            if flags & 0x10 != 0 {
                payload.extend_from_slice(&[0x3F, 0x00]);
            }
            let unit = if flags & 1 != 0 { "kPa" } else { "mm[Hg]" };
            let time = (flags & 0x02 != 0).then_some(T_MS);
            let mut expected = vec![
                r("bp_systolic", 120.0, unit, time),
                r("bp_diastolic", 80.0, unit, time),
                r("bp_mean", 93.0, unit, time),
            ];
            if flags & 0x04 != 0 {
                expected.push(r("heart_rate", 72.0, "/min", time));
            }
            assert_eq!(
                decode(BLOOD_PRESSURE, &payload),
                Ok(expected),
                "flags {flags:#04x}"
            );
        }
    }

    // ---- 0x2A18 Glucose Measurement ----

    /// Built here: sequence number 1, base time T.
    fn glucose_head(flags: u8) -> Vec<u8> {
        cat(&[&[flags, 0x01, 0x00], &T])
    }

    #[test]
    fn glucose_vectors() {
        // Bluetooth SIG org.bluetooth.characteristic.glucose_measurement, flags 0x02:
        // concentration in kg/L. 100 mg/dL = 0.001 kg/L = 100 × 10^-5 → SFLOAT 0xB064;
        // type/location 0x11 = capillary whole blood (1), finger (1).
        let payload = cat(&[&glucose_head(0x02), &[0x64, 0xB0, 0x11]]);
        assert_eq!(
            decode(GLUCOSE, &payload),
            Ok(vec![r("glucose", 100.0, "mg/dL", Some(T_MS))])
        );
        // Flags b0 time offset +30 min (0x001E): T + 1,800,000 ms.
        let payload = cat(&[&glucose_head(0x03), &[0x1E, 0x00], &[0x64, 0xB0, 0x11]]);
        assert_eq!(
            decode(GLUCOSE, &payload),
            Ok(vec![r("glucose", 100.0, "mg/dL", Some(T_MS + 1_800_000))])
        );
        // Offset -90 min (0xFFA6 as s16).
        let payload = cat(&[&glucose_head(0x03), &[0xA6, 0xFF], &[0x64, 0xB0, 0x11]]);
        assert_eq!(
            decode(GLUCOSE, &payload),
            Ok(vec![r("glucose", 100.0, "mg/dL", Some(T_MS - 5_400_000))])
        );
        // Flags b2 mol/L: 5.6 mmol/L = 0.0056 mol/L = 56 × 10^-4 → SFLOAT 0xC038.
        let payload = cat(&[&glucose_head(0x06), &[0x38, 0xC0, 0x11]]);
        assert_eq!(
            decode(GLUCOSE, &payload),
            Ok(vec![r("glucose", 5.6, "mmol/L", Some(T_MS))])
        );
        // Flags b4 (context follows in 0x2A34) changes nothing here.
        let payload = cat(&[&glucose_head(0x12), &[0x64, 0xB0, 0x11]]);
        assert!(decode(GLUCOSE, &payload).is_ok());
        // Found by the gatt fuzz target: 9999-12-31T23:59 plus 7948 minutes left the
        // representable range (fuzz/artifacts/gatt/crash-c58d2678…, selector byte dropped).
        let crash = [
            0x03, 0x01, 0x00, 0x0f, 0x27, 0x0c, 0x1f, 0x17, 0x3b, 0x00, 0x0c, 0x1f, 0x5f, 0xb0,
            0x11,
        ];
        let err = decode(GLUCOSE, &crash).unwrap_err().to_string();
        assert!(err.contains("past year 9999"), "{err}");

        // Base time unknown (year 0): no time, whatever the offset.
        let payload = cat(&[
            &[0x03, 0x01, 0x00],
            &[0, 0, 0, 0, 0, 0, 0],
            &[0x1E, 0x00],
            &[0x64, 0xB0, 0x11],
        ]);
        assert_eq!(
            decode(GLUCOSE, &payload),
            Ok(vec![r("glucose", 100.0, "mg/dL", None)])
        );
        // All fields: flags 0x0F, 1 + 2 + 7 + 2 + 3 + 2 = 17 bytes.
        let full = cat(&[
            &glucose_head(0x0F),
            &[0x00, 0x00],
            &[0x38, 0xC0, 0x11],
            &[0x00, 0x00],
        ]);
        assert_eq!(full.len(), 17);
        assert_every_cut_and_extension(GLUCOSE, &full);
    }

    #[test]
    fn glucose_rejections() {
        // No concentration (flags b1 clear).
        assert_eq!(
            decode(GLUCOSE, &glucose_head(0x00)),
            unusable(GLUCOSE, "no concentration (flags bit 1 clear)")
        );
        // Type 10 (control solution) at the finger, and location 4 (control solution).
        for type_location in [0x1A, 0x41, 0x4A] {
            let payload = cat(&[&glucose_head(0x02), &[0x64, 0xB0, type_location]]);
            assert_eq!(
                decode(GLUCOSE, &payload),
                unusable(GLUCOSE, "control-solution test, not a patient reading")
            );
        }
        // Concentration NaN.
        let payload = cat(&[&glucose_head(0x02), &[0xFF, 0x07, 0x11]]);
        assert_eq!(
            decode(GLUCOSE, &payload),
            special(
                GLUCOSE,
                "SFLOAT",
                SpecialValue::NaN,
                "glucose concentration"
            )
        );
    }

    #[test]
    fn glucose_sensor_status_bits() {
        let with_status = |status: u16| {
            let payload = cat(&[
                &glucose_head(0x0A),
                &[0x64, 0xB0, 0x11],
                &status.to_le_bytes(),
            ]);
            decode(GLUCOSE, &payload)
        };
        // b0 battery low: accepted.
        assert_eq!(
            with_status(0x0001),
            Ok(vec![r("glucose", 100.0, "mg/dL", Some(T_MS))])
        );
        // b11 time fault: accepted, time unknown.
        assert_eq!(
            with_status(0x0800),
            Ok(vec![r("glucose", 100.0, "mg/dL", None)])
        );
        // RFU bits 12-15 are ignored.
        assert!(with_status(0xF000).is_ok());
        // b1-b10: rejected, naming the bit.
        for (bit, reason) in GLUCOSE_STATUS_REJECTED {
            assert_eq!(with_status(bit as u16 | 0x0001), unusable(GLUCOSE, reason));
            assert!(reason.ends_with(&format!("(bit {})", bit.trailing_zeros())));
        }
        assert_eq!(
            with_status(0x0008).unwrap_err().to_string(),
            "2a18: sensor status: strip insertion error (bit 3)"
        );
        // The status wins over a missing concentration: flags 0x08, status b2.
        let payload = cat(&[&glucose_head(0x08), &[0x04, 0x00]]);
        assert_eq!(
            decode(GLUCOSE, &payload),
            unusable(GLUCOSE, "sensor status: sample size insufficient (bit 2)")
        );
    }

    #[test]
    fn glucose_all_flag_combinations() {
        for flags in 0u8..=0xFF {
            let mut payload = glucose_head(flags);
            if flags & 0x01 != 0 {
                payload.extend_from_slice(&[0x0A, 0x00]);
            }
            if flags & 0x02 != 0 {
                payload.extend_from_slice(&[0x64, 0xB0, 0x11]);
            }
            if flags & 0x08 != 0 {
                payload.extend_from_slice(&[0x01, 0x00]);
            }
            let decoded = decode(GLUCOSE, &payload);
            if flags & 0x02 == 0 {
                assert_eq!(
                    decoded,
                    unusable(GLUCOSE, "no concentration (flags bit 1 clear)")
                );
                continue;
            }
            // 100 × 10^-5 kg/L = 100 mg/dL, or 100 × 10^-5 mol/L = 1 mmol/L.
            let (value, unit) = if flags & 0x04 != 0 {
                (1.0, "mmol/L")
            } else {
                (100.0, "mg/dL")
            };
            let time = T_MS + if flags & 0x01 != 0 { 600_000 } else { 0 };
            assert_eq!(
                decoded,
                Ok(vec![r("glucose", value, unit, Some(time))]),
                "flags {flags:#04x}"
            );
        }
    }

    // ---- 0x2A9D Weight Measurement ----

    #[test]
    fn weight_vectors() {
        // Bluetooth SIG org.bluetooth.characteristic.weight_measurement, flags 0x00 (SI):
        // 70.5 kg / 0.005 = 14100 = 0x3714.
        assert_eq!(
            decode(WEIGHT, &[0x00, 0x14, 0x37]),
            Ok(vec![r("body_weight", 70.5, "kg", None)])
        );
        // Flags b0 imperial: 155.4 lb / 0.01 = 15540 = 0x3CB4.
        assert_eq!(
            decode(WEIGHT, &[0x01, 0xB4, 0x3C]),
            Ok(vec![r("body_weight", 155.4, "[lb_av]", None)])
        );
        // Flags 0x0F: imperial, timestamp, user id 2, BMI 24.3 (243 = 0x00F3) and height
        // 70.0 in (700 = 0x02BC). 1 + 2 + 7 + 1 + 4 = 15 bytes.
        let full = cat(&[&[0x0F, 0xB4, 0x3C], &T, &[0x02], &[0xF3, 0x00, 0xBC, 0x02]]);
        assert_eq!(
            decode(WEIGHT, &full),
            Ok(vec![r("body_weight", 155.4, "[lb_av]", Some(T_MS))])
        );
        assert_every_cut_and_extension(WEIGHT, &full);
        // 0xFFFF: measurement unsuccessful.
        assert_eq!(
            decode(WEIGHT, &[0x00, 0xFF, 0xFF]),
            unusable(WEIGHT, "measurement unsuccessful (weight 0xFFFF)")
        );
        // Largest real values: 0xFFFE × 0.005 = 327.67 kg, × 0.01 = 655.34 lb.
        assert_eq!(
            decode(WEIGHT, &[0x00, 0xFE, 0xFF]),
            Ok(vec![r("body_weight", 327.67, "kg", None)])
        );
        assert_eq!(
            decode(WEIGHT, &[0x01, 0xFE, 0xFF]),
            Ok(vec![r("body_weight", 655.34, "[lb_av]", None)])
        );
    }

    #[test]
    fn weight_all_flag_combinations() {
        for flags in 0u8..=0xFF {
            let mut payload = vec![flags, 0x14, 0x37];
            if flags & 0x02 != 0 {
                payload.extend_from_slice(&T);
            }
            if flags & 0x04 != 0 {
                payload.push(1);
            }
            if flags & 0x08 != 0 {
                payload.extend_from_slice(&[0xF3, 0x00, 0xBC, 0x02]);
            }
            // 14100 × 0.005 kg = 70.5 kg; 14100 × 0.01 lb = 141 lb.
            let (value, unit) = if flags & 1 != 0 {
                (141.0, "[lb_av]")
            } else {
                (70.5, "kg")
            };
            let time = (flags & 0x02 != 0).then_some(T_MS);
            assert_eq!(
                decode(WEIGHT, &payload),
                Ok(vec![r("body_weight", value, unit, time)]),
                "flags {flags:#04x}"
            );
        }
    }

    // ---- 0x2A5E PLX Spot-check and 0x2A5F PLX Continuous ----

    /// Built here: SpO2 97 % (SFLOAT 0x0061), pulse rate 72 /min (0x0048).
    const PLX_PAIR: [u8; 4] = [0x61, 0x00, 0x48, 0x00];

    fn plx(time: Option<i64>) -> Result<Vec<RawReading>, DecodeError> {
        Ok(vec![
            r("spo2", 97.0, "%", time),
            r("heart_rate", 72.0, "/min", time),
        ])
    }

    #[test]
    fn plx_spot_check_vectors() {
        // Bluetooth SIG org.bluetooth.characteristic.plx_spot_check_measurement, flags 0x00.
        assert_eq!(
            decode(PLX_SPOT_CHECK, &cat(&[&[0x00], &PLX_PAIR])),
            plx(None)
        );
        // Flags b0 timestamp.
        assert_eq!(
            decode(PLX_SPOT_CHECK, &cat(&[&[0x01], &PLX_PAIR, &T])),
            plx(Some(T_MS))
        );
        // Flags b4 device clock not set: the timestamp is ignored, even an impossible one.
        assert_eq!(
            decode(
                PLX_SPOT_CHECK,
                &cat(&[&[0x11], &PLX_PAIR, &[0xD0, 0x07, 13, 40, 25, 61, 61]])
            ),
            plx(None)
        );
        // Flags 0x0F: timestamp, measurement status 0x0080 (validated data), device status
        // 0x000020 (low perfusion, accepted), PAI 2.5 % (25 × 10^-1 = 0xF019).
        // 1 + 4 + 7 + 2 + 3 + 2 = 19 bytes.
        let full = cat(&[
            &[0x0F],
            &PLX_PAIR,
            &T,
            &[0x80, 0x00],
            &[0x20, 0x00, 0x00],
            &[0x19, 0xF0],
        ]);
        assert_eq!(decode(PLX_SPOT_CHECK, &full), plx(Some(T_MS)));
        assert_every_cut_and_extension(PLX_SPOT_CHECK, &full);
        // SpO2 NaN: an error.
        assert_eq!(
            decode(PLX_SPOT_CHECK, &[0x00, 0xFF, 0x07, 0x48, 0x00]),
            special(PLX_SPOT_CHECK, "SFLOAT", SpecialValue::NaN, "SpO2")
        );
        assert_eq!(
            decode(PLX_SPOT_CHECK, &[0x00, 0x61, 0x00, 0x00, 0x08]),
            special(PLX_SPOT_CHECK, "SFLOAT", SpecialValue::NRes, "pulse rate")
        );
        // PAI NaN is fine: it is not emitted.
        assert_eq!(
            decode(PLX_SPOT_CHECK, &cat(&[&[0x08], &PLX_PAIR, &[0xFF, 0x07]])),
            plx(None)
        );
    }

    #[test]
    fn plx_status_bits() {
        for (uuid, meas_flag, dev_flag) in
            [(PLX_SPOT_CHECK, 0x02, 0x04), (PLX_CONTINUOUS, 0x04, 0x08)]
        {
            let with_measurement = |status: u16| {
                decode(
                    uuid,
                    &cat(&[&[meas_flag], &PLX_PAIR, &status.to_le_bytes()]),
                )
            };
            let with_device = |status: u32| {
                decode(
                    uuid,
                    &cat(&[&[dev_flag], &PLX_PAIR, &status.to_le_bytes()[..3]]),
                )
            };
            for (bit, reason) in PLX_MEASUREMENT_REJECTED {
                assert_eq!(with_measurement(bit as u16), unusable(uuid, reason));
            }
            // b5 ongoing, b6 early estimate, b7 validated, b8 fully qualified, b9 from
            // storage, b14 questionable: accepted.
            assert_eq!(with_measurement(0x43E0), plx(None));
            for (bit, reason) in PLX_DEVICE_REJECTED {
                assert_eq!(with_device(bit), unusable(uuid, reason));
            }
            // Every other device/sensor bit (b0, b2-b10, b12, b13, b16-b23) is accepted.
            assert_eq!(with_device(0xFF_37FD), plx(None));
        }
        assert_eq!(
            decode(PLX_SPOT_CHECK, &cat(&[&[0x02], &PLX_PAIR, &[0x00, 0x80]]))
                .unwrap_err()
                .to_string(),
            "2a5e: measurement status: invalid (bit 15)"
        );
    }

    #[test]
    fn plx_continuous_vectors() {
        // Bluetooth SIG org.bluetooth.characteristic.plx_continuous_measurement, flags 0x00.
        assert_eq!(
            decode(PLX_CONTINUOUS, &cat(&[&[0x00], &PLX_PAIR])),
            plx(None)
        );
        // Flags 0x1F: fast pair 98/73 (0x0062, 0x0049), slow pair NaN/NaN (skipped, so
        // accepted), measurement status 0, device status 0, PAI 2.5 %.
        // 1 + 4 + 4 + 4 + 2 + 3 + 2 = 20 bytes.
        let full = cat(&[
            &[0x1F],
            &PLX_PAIR,
            &[0x62, 0x00, 0x49, 0x00],
            &[0xFF, 0x07, 0xFF, 0x07],
            &[0x00, 0x00],
            &[0x00, 0x00, 0x00],
            &[0x19, 0xF0],
        ]);
        assert_eq!(decode(PLX_CONTINUOUS, &full), plx(None));
        assert_every_cut_and_extension(PLX_CONTINUOUS, &full);
    }

    #[test]
    fn plx_all_flag_combinations() {
        for flags in 0u8..=0xFF {
            let mut spot = cat(&[&[flags], &PLX_PAIR]);
            if flags & 0x01 != 0 {
                spot.extend_from_slice(&T);
            }
            if flags & 0x02 != 0 {
                spot.extend_from_slice(&[0x80, 0x00]);
            }
            if flags & 0x04 != 0 {
                spot.extend_from_slice(&[0x00, 0x00, 0x00]);
            }
            if flags & 0x08 != 0 {
                spot.extend_from_slice(&[0x19, 0xF0]);
            }
            let time = (flags & 0x01 != 0 && flags & 0x10 == 0).then_some(T_MS);
            assert_eq!(
                decode(PLX_SPOT_CHECK, &spot),
                plx(time),
                "2a5e flags {flags:#04x}"
            );

            let mut continuous = cat(&[&[flags], &PLX_PAIR]);
            for (bit, len) in [(0x01, 4), (0x02, 4), (0x04, 2), (0x08, 3), (0x10, 2)] {
                if flags & bit != 0 {
                    continuous.extend(std::iter::repeat_n(0, len));
                }
            }
            assert_eq!(
                decode(PLX_CONTINUOUS, &continuous),
                plx(None),
                "2a5f flags {flags:#04x}"
            );
        }
    }

    // ---- 0x2A1C Temperature Measurement ----

    #[test]
    fn temperature_vectors() {
        // Bluetooth SIG org.bluetooth.characteristic.temperature_measurement, flags 0x00 (°C):
        // 36.6 = 366 × 10^-1 → FLOAT 0xFF00016E, little-endian 6E 01 00 FF.
        assert_eq!(
            decode(TEMPERATURE, &[0x00, 0x6E, 0x01, 0x00, 0xFF]),
            Ok(vec![r("body_temperature", 36.6, "Cel", None)])
        );
        // Flags b0 °F: 98.6 = 986 × 10^-1 → 0xFF0003DA.
        assert_eq!(
            decode(TEMPERATURE, &[0x01, 0xDA, 0x03, 0x00, 0xFF]),
            Ok(vec![r("body_temperature", 98.6, "[degF]", None)])
        );
        // gatt.md FLOAT example 0xFF000014 = 2.0, as a reading.
        assert_eq!(
            decode(TEMPERATURE, &[0x00, 0x14, 0x00, 0x00, 0xFF]),
            Ok(vec![r("body_temperature", 2.0, "Cel", None)])
        );
        // Flags 0x06: timestamp and type 2 (body). 1 + 4 + 7 + 1 = 13 bytes.
        let full = cat(&[&[0x06, 0x6E, 0x01, 0x00, 0xFF], &T, &[0x02]]);
        assert_eq!(
            decode(TEMPERATURE, &full),
            Ok(vec![r("body_temperature", 36.6, "Cel", Some(T_MS))])
        );
        assert_every_cut_and_extension(TEMPERATURE, &full);
        assert_every_cut_and_extension(
            TEMPERATURE,
            &cat(&[&[0x07, 0xDA, 0x03, 0x00, 0xFF], &T, &[0x06]]),
        );
        // FLOAT NaN 0x007FFFFF.
        let nan = decode(TEMPERATURE, &[0x00, 0xFF, 0xFF, 0x7F, 0x00]);
        assert_eq!(
            nan,
            special(TEMPERATURE, "FLOAT", SpecialValue::NaN, "temperature")
        );
        assert_eq!(
            nan.unwrap_err().to_string(),
            "2a1c: FLOAT special value NaN in temperature"
        );
        // FLOAT -INF 0x00800002.
        assert_eq!(
            decode(TEMPERATURE, &[0x00, 0x02, 0x00, 0x80, 0x00]),
            special(
                TEMPERATURE,
                "FLOAT",
                SpecialValue::NegativeInfinity,
                "temperature"
            )
        );
    }

    #[test]
    fn temperature_all_flag_combinations() {
        for flags in 0u8..=0xFF {
            let mut payload = vec![flags, 0x6E, 0x01, 0x00, 0xFF];
            if flags & 0x02 != 0 {
                payload.extend_from_slice(&T);
            }
            if flags & 0x04 != 0 {
                payload.push(0x06);
            }
            let unit = if flags & 1 != 0 { "[degF]" } else { "Cel" };
            let time = (flags & 0x02 != 0).then_some(T_MS);
            assert_eq!(
                decode(TEMPERATURE, &payload),
                Ok(vec![r("body_temperature", 36.6, unit, time)]),
                "flags {flags:#04x}"
            );
        }
    }

    // ---- DateTime ----

    fn dt(
        year: u16,
        month: u8,
        day: u8,
        hours: u8,
        minutes: u8,
        seconds: u8,
    ) -> Result<Option<i64>, DecodeError> {
        let [lo, hi] = year.to_le_bytes();
        date_time(TEMPERATURE, [lo, hi, month, day, hours, minutes, seconds])
    }

    fn bad(reason: &str) -> Result<Option<i64>, DecodeError> {
        Err(DecodeError::InvalidTimestamp {
            characteristic: TEMPERATURE,
            reason: reason.to_owned(),
        })
    }

    #[test]
    fn date_time_fields() {
        // Expected values from `date -u -d … +%s`.
        assert_eq!(dt(2026, 11, 25, 13, 0, 0), Ok(Some(T_MS)));
        assert_eq!(dt(2024, 2, 29, 23, 59, 59), Ok(Some(1_709_251_199_000)));
        assert_eq!(dt(1582, 1, 1, 0, 0, 0), Ok(Some(-12_244_089_600_000)));
        assert_eq!(dt(9999, 12, 31, 23, 59, 59), Ok(Some(253_402_300_799_000)));
        // GATT DateTime: 0 in year, month or day means unknown.
        assert_eq!(dt(0, 11, 25, 13, 0, 0), Ok(None));
        assert_eq!(dt(2026, 0, 25, 13, 0, 0), Ok(None));
        assert_eq!(dt(2026, 11, 0, 13, 0, 0), Ok(None));
        assert_eq!(dt(0, 0, 0, 0, 0, 0), Ok(None));
        // Out of range, even when the date is unknown.
        assert_eq!(
            dt(2026, 13, 1, 0, 0, 0),
            bad("month 13 is out of range (1-12, 0 = unknown)")
        );
        assert_eq!(
            dt(2026, 1, 32, 0, 0, 0),
            bad("day 32 is out of range (1-31, 0 = unknown)")
        );
        assert_eq!(
            dt(0, 0, 0, 25, 0, 0),
            bad("hours 25 is out of range (0-23)")
        );
        assert_eq!(
            dt(2026, 1, 1, 24, 0, 0),
            bad("hours 24 is out of range (0-23)")
        );
        assert_eq!(
            dt(2026, 1, 1, 0, 60, 0),
            bad("minutes 60 is out of range (0-59)")
        );
        assert_eq!(
            dt(2026, 1, 1, 0, 0, 60),
            bad("seconds 60 is out of range (0-59)")
        );
        assert_eq!(
            dt(1581, 12, 31, 0, 0, 0),
            bad("year 1581 is out of range (1582-9999, 0 = unknown)")
        );
        assert_eq!(
            dt(10000, 1, 1, 0, 0, 0),
            bad("year 10000 is out of range (1582-9999, 0 = unknown)")
        );
        assert_eq!(
            dt(2026, 2, 29, 0, 0, 0),
            bad("day 29 does not exist in 2026-02")
        );
        assert_eq!(
            dt(2026, 4, 31, 0, 0, 0),
            bad("day 31 does not exist in 2026-04")
        );
    }

    // ---- Properties ----

    fn check_output(result: &Result<Vec<RawReading>, DecodeError>) -> Result<(), TestCaseError> {
        if let Ok(readings) = result {
            prop_assert!(!readings.is_empty());
            for reading in readings {
                prop_assert!(reading.value.is_finite());
                prop_assert!(reading.unit.is_some());
                if let Some(ms) = reading.time_ms {
                    prop_assert!(ms_in_range(ms));
                }
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(
            uuid in prop_oneof![proptest::sample::select(GATT_CHARACTERISTICS), any::<u16>()],
            payload in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            check_output(&decode(uuid, &payload))?;
        }

        #[test]
        fn never_panics_on_plausible_lengths(
            uuid in proptest::sample::select(GATT_CHARACTERISTICS),
            flags in any::<u8>(),
            body in proptest::collection::vec(any::<u8>(), 0..24),
        ) {
            // Arbitrary bytes rarely have the exact length the flags need; prefixing every
            // flag value to every short body reaches the value checks too.
            let payload = cat(&[&[flags], &body]);
            check_output(&decode(uuid, &payload))?;
        }

        #[test]
        fn a_heart_rate_is_decoded_only_with_every_field_its_flags_promise(
            flags in any::<u8>(),
            body in proptest::collection::vec(any::<u8>(), 0..12),
        ) {
            let payload = cat(&[&[flags], &body]);
            if decode(HEART_RATE, &payload).is_ok() {
                // Flags, the rate (u16 with b0), energy (b3), and one RR interval (b4).
                let promised = 1
                    + if flags & 0x01 != 0 { 2 } else { 1 }
                    + if flags & 0x08 != 0 { 2 } else { 0 }
                    + if flags & 0x10 != 0 { 2 } else { 0 };
                prop_assert!(payload.len() >= promised, "{payload:02x?}");
            }
        }
    }
}
