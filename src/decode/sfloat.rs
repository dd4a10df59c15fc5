//! IEEE 11073-20601 (MDER) SFLOAT and FLOAT, the number encodings of the Bluetooth health
//! characteristics.
//!
//! Both are decimal: mantissa × 10^exponent. The value is computed as that decimal would be
//! rounded to the nearest `f64` (one exact multiplication or division by an exact power of
//! ten), so 0xF003 reads as 0.3, not 0.30000000000000004 (3 × 0.1). Special values (NaN, NRes, ±INF,
//! reserved) are reported as [`SpecialValue`]; callers decide whether one is an error.

use std::fmt;

/// An IEEE 11073 encoding that carries no number: the device says why there is no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialValue {
    /// Not a Number: the device has no valid value.
    NaN,
    /// Not at this Resolution: the value cannot be represented at this precision.
    NRes,
    /// Positive infinity: above the sensor's range.
    PositiveInfinity,
    /// Negative infinity: below the sensor's range.
    NegativeInfinity,
    /// Reserved for future use by IEEE 11073.
    Reserved,
}

impl fmt::Display for SpecialValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NaN => "NaN",
            Self::NRes => "NRes",
            Self::PositiveInfinity => "+INF",
            Self::NegativeInfinity => "-INF",
            Self::Reserved => "reserved",
        })
    }
}

/// A decoded SFLOAT/FLOAT before it becomes an `f64`, so that unit scaling (kg/L → mg/dL is
/// × 10^5) can shift the exponent instead of adding a rounding step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decimal {
    pub(crate) mantissa: i32,
    pub(crate) exponent: i32,
}

/// 10^0 ..= 10^22: every one is exactly representable in an `f64`.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

impl Decimal {
    /// The same number × 10^`by`.
    pub(crate) fn scaled(self, by: i32) -> Self {
        Self {
            mantissa: self.mantissa,
            exponent: self.exponent.saturating_add(by),
        }
    }

    /// The nearest `f64`. The mantissa (< 2^24) and 10^|e| for |e| ≤ 22 are exact doubles, so
    /// one multiplication or division is correctly rounded; dividing by 10^k instead of
    /// multiplying by 0.1^k avoids a second rounding. Larger exponents (only FLOAT has them,
    /// and no physiological value needs them) go through the standard library's correctly
    /// rounded decimal parser.
    pub(crate) fn to_f64(self) -> f64 {
        let mantissa = f64::from(self.mantissa);
        let power = usize::try_from(self.exponent.unsigned_abs())
            .ok()
            .and_then(|k| EXACT_POWERS_OF_TEN.get(k));
        match power {
            Some(p) if self.exponent >= 0 => mantissa * p,
            Some(p) => mantissa / p,
            None => parse_decimal(self.mantissa, self.exponent),
        }
    }
}

/// Formats `mantissa`e`exponent` into a stack buffer and parses it: exact, no allocation.
fn parse_decimal(mantissa: i32, exponent: i32) -> f64 {
    struct Buf {
        bytes: [u8; 32],
        len: usize,
    }
    impl fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
            let dst = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
            dst.copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
    let mut buf = Buf {
        bytes: [0; 32],
        len: 0,
    };
    let fallback = || f64::from(mantissa) * 10f64.powi(exponent);
    if fmt::write(&mut buf, format_args!("{mantissa}e{exponent}")).is_err() {
        return fallback();
    }
    buf.bytes
        .get(..buf.len)
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(fallback)
}

/// Decodes a 16-bit SFLOAT: 4-bit signed exponent over a 12-bit signed mantissa.
pub(crate) fn sfloat(raw: u16) -> Result<f64, SpecialValue> {
    sfloat_decimal(raw).map(Decimal::to_f64)
}

/// Decodes a 16-bit SFLOAT, keeping it decimal.
pub(crate) fn sfloat_decimal(raw: u16) -> Result<Decimal, SpecialValue> {
    let raw_exponent = raw >> 12;
    let raw_mantissa = raw & 0x0FFF;
    // Special values are whole encodings with exponent 0; recognise them on the raw
    // mantissa, before sign extension turns 0x0800 into -2048.
    if raw_exponent == 0 {
        match raw_mantissa {
            0x07FF => return Err(SpecialValue::NaN),
            0x0800 => return Err(SpecialValue::NRes),
            0x07FE => return Err(SpecialValue::PositiveInfinity),
            0x0802 => return Err(SpecialValue::NegativeInfinity),
            0x0801 => return Err(SpecialValue::Reserved),
            _ => {}
        }
    }
    Ok(Decimal {
        mantissa: sign_extend(u32::from(raw_mantissa), 12),
        exponent: sign_extend(u32::from(raw_exponent), 4),
    })
}

/// Decodes a 32-bit FLOAT: 8-bit signed exponent over a 24-bit signed mantissa.
pub(crate) fn float(raw: u32) -> Result<f64, SpecialValue> {
    let raw_exponent = raw >> 24;
    let raw_mantissa = raw & 0x00FF_FFFF;
    if raw_exponent == 0 {
        match raw_mantissa {
            0x007F_FFFF => return Err(SpecialValue::NaN),
            0x0080_0000 => return Err(SpecialValue::NRes),
            0x007F_FFFE => return Err(SpecialValue::PositiveInfinity),
            0x0080_0002 => return Err(SpecialValue::NegativeInfinity),
            0x0080_0001 => return Err(SpecialValue::Reserved),
            _ => {}
        }
    }
    Ok(Decimal {
        mantissa: sign_extend(raw_mantissa, 24),
        exponent: sign_extend(raw_exponent, 8),
    }
    .to_f64())
}

/// Two's-complement value of the low `bits` bits of `raw` (`bits` ≤ 24, so it fits an i32).
fn sign_extend(raw: u32, bits: u32) -> i32 {
    let shift = 32 - bits;
    // Move the sign bit to bit 31, reinterpret, and shift back arithmetically.
    ((raw << shift) as i32) >> shift
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Test-only encoder: the SFLOAT with the most precise exponent that decodes to exactly
    /// `value`, if there is one.
    fn encode_sfloat(value: f64) -> Option<u16> {
        (-8..=7).find_map(|exponent: i32| {
            let mantissa = if exponent <= 0 {
                value * EXACT_POWERS_OF_TEN[exponent.unsigned_abs() as usize]
            } else {
                value / EXACT_POWERS_OF_TEN[exponent as usize]
            }
            .round();
            if !(-2045.0..=2045.0).contains(&mantissa) {
                return None;
            }
            let raw = ((exponent as u16 & 0xF) << 12) | (mantissa as i16 as u16 & 0x0FFF);
            (sfloat(raw) == Ok(value)).then_some(raw)
        })
    }

    /// Test-only encoder for FLOAT from mantissa and exponent.
    fn encode_float(mantissa: i32, exponent: i8) -> u32 {
        (u32::from(exponent as u8) << 24) | (mantissa as u32 & 0x00FF_FFFF)
    }

    #[test]
    fn gatt_md_sfloat_examples() {
        // gatt.md SFLOAT example: 0xF014 = exponent 0xF (-1), mantissa 0x014 (20) → 20 × 10^-1.
        assert_eq!(sfloat(0xF014), Ok(2.0));
        // gatt.md SFLOAT example: 0x0B2E = exponent 0, mantissa 0xB2E. Bit 11 is set, so the
        // mantissa is negative: 0xB2E - 0x1000 = 2862 - 4096 = -1234.
        assert_eq!(sfloat(0x0B2E), Ok(-1234.0));
        // gatt.md FLOAT example: 0xFF000014 = exponent 0xFF (-1), mantissa 20 → 2.0.
        assert_eq!(float(0xFF00_0014), Ok(2.0));
    }

    #[test]
    fn sfloat_special_values() {
        // gatt.md SFLOAT special values (IEEE 11073-20601 Table on reserved SFLOAT values).
        assert_eq!(sfloat(0x07FF), Err(SpecialValue::NaN));
        assert_eq!(sfloat(0x0800), Err(SpecialValue::NRes));
        assert_eq!(sfloat(0x07FE), Err(SpecialValue::PositiveInfinity));
        assert_eq!(sfloat(0x0802), Err(SpecialValue::NegativeInfinity));
        assert_eq!(sfloat(0x0801), Err(SpecialValue::Reserved));
        // Built here: the same mantissas with a non-zero exponent are ordinary numbers.
        // 0x17FF: exponent 1, mantissa 2047 → 20470; 0x1800: exponent 1, mantissa -2048 → -20480.
        assert_eq!(sfloat(0x17FF), Ok(20470.0));
        assert_eq!(sfloat(0x1800), Ok(-20480.0));
        // 0xF7FF: exponent -1, mantissa 2047 → 204.7.
        assert_eq!(sfloat(0xF7FF), Ok(204.7));
    }

    #[test]
    fn float_special_values() {
        // gatt.md FLOAT special values.
        assert_eq!(float(0x007F_FFFF), Err(SpecialValue::NaN));
        assert_eq!(float(0x0080_0000), Err(SpecialValue::NRes));
        assert_eq!(float(0x007F_FFFE), Err(SpecialValue::PositiveInfinity));
        assert_eq!(float(0x0080_0002), Err(SpecialValue::NegativeInfinity));
        assert_eq!(float(0x0080_0001), Err(SpecialValue::Reserved));
        // Built here: exponent 1 makes 0x017FFFFF an ordinary number, 8388607 × 10.
        assert_eq!(float(0x017F_FFFF), Ok(83_886_070.0));
    }

    #[test]
    fn decimal_values_are_correctly_rounded() {
        // Built here: 0xF003 = 3 × 10^-1 must be the double nearest 0.3; 3.0 * 0.1 would be
        // 0.30000000000000004.
        assert_eq!(sfloat(0xF003), Ok(0.3));
        // 366 × 10^-1 = 36.6 (°C body temperature), as FLOAT and as SFLOAT 0xF16E.
        assert_eq!(float(encode_float(366, -1)), Ok(36.6));
        assert_eq!(sfloat(0xF16E), Ok(36.6));
        // 986 × 10^-1 = 98.6 (°F body temperature).
        assert_eq!(float(encode_float(986, -1)), Ok(98.6));
        // Negative mantissa and exponent: 0xFFFFFF9C = exponent -1, mantissa -100 → -10.0.
        assert_eq!(float(0xFFFF_FF9C), Ok(-10.0));
        // Extremes of FLOAT exponents take the parser path and stay exact.
        assert_eq!(float(encode_float(1, 127)), Ok(1e127));
        assert_eq!(float(encode_float(-5, -128)), Ok(-5e-128));
        assert_eq!(float(encode_float(8_388_607, 100)), Ok(8_388_607e100));
        assert_eq!(
            Decimal {
                mantissa: 100,
                exponent: -5
            }
            .scaled(5)
            .to_f64(),
            100.0
        );
    }

    #[test]
    fn encoder_round_trips_typical_values() {
        for v in [
            0.0, 2.0, -1234.0, 36.6, 97.0, 120.0, 0.001, 5.6, -0.5, 2045e7, 1e-8,
        ] {
            let raw = encode_sfloat(v).unwrap_or_else(|| panic!("{v} has no SFLOAT"));
            assert_eq!(sfloat(raw), Ok(v), "{v} via {raw:#06x}");
        }
        assert_eq!(encode_sfloat(2046e7), None);
    }

    proptest! {
        #[test]
        fn sfloat_encode_decode_round_trip(mantissa in -2045i32..=2045, exponent in -8i32..=7) {
            let value = Decimal { mantissa, exponent }.to_f64();
            let raw = encode_sfloat(value);
            prop_assert!(raw.is_some(), "{} has no encoding", value);
            prop_assert_eq!(raw.map(sfloat), Some(Ok(value)));
        }

        #[test]
        fn float_decodes_every_finite_encoding_exactly(mantissa in -8_388_605i32..=8_388_605, exponent in any::<i8>()) {
            let value = float(encode_float(mantissa, exponent));
            let expected: f64 = format!("{mantissa}e{exponent}").parse().unwrap();
            prop_assert_eq!(value, Ok(expected));
        }

        #[test]
        fn sfloat_is_total(raw in any::<u16>()) {
            if let Ok(v) = sfloat(raw) {
                prop_assert!(v.is_finite());
            }
        }
    }
}
