//! The password policy: what a new password must be, checked before it is hashed.

use super::error::RegistryError;

/// Passwords of 12 or more characters that appear near the top of breach corpora, lower-cased.
/// A password that is one of these (ignoring case) is refused.
const COMMON: &[&str] = &[
    "123456789012",
    "1234567890123",
    "12345678901234",
    "123456789123",
    "1234567891011",
    "111111111111",
    "000000000000",
    "123123123123",
    "qwertyuiop123",
    "qwertyuiopasdf",
    "qwertyuiopasdfgh",
    "qwertyuiopasdfghjkl",
    "qwerty123456",
    "qwerty1234567",
    "1qaz2wsx3edc",
    "1q2w3e4r5t6y",
    "1q2w3e4r5t6y7u",
    "zaq12wsxcde3",
    "asdfghjkl123",
    "zxcvbnm12345",
    "password1234",
    "password12345",
    "password123456",
    "password1234567",
    "passwordpassword",
    "password!234",
    "p@ssw0rd1234",
    "p@ssword1234",
    "passw0rd1234",
    "iloveyou1234",
    "iloveyou123456",
    "welcome12345",
    "welcome123456",
    "letmein12345",
    "letmein123456",
    "administrator",
    "administrator1",
    "admin1234567",
    "adminadmin123",
    "changeme1234",
    "changeme123456",
    "trustno112345",
    "sunshine1234",
    "princess1234",
    "football1234",
    "baseball1234",
    "superman1234",
    "starwars1234",
    "monkey123456",
    "dragon123456",
    "abc123456789",
    "abcdefghijkl",
    "abcd12345678",
    "aa1234567890",
    "1234567890qwerty",
    "qwerty1234567890",
    "hospital1234",
    "hospital12345",
    "patient12345",
    "nurse1234567",
    "doctor123456",
    "correcthorsebatterystaple",
    "correct horse battery staple",
    "vigil1234567",
    "vigilvigil12",
];

/// The password policy (NIST SP 800-63B): 12 to 1024 characters, any characters, no composition
/// rules; refused are one character or one short group repeated, runs of consecutive characters
/// (`abcdefghijkl`, `987654321098`), well-known breached passwords, and passwords containing
/// the username.
pub(super) fn check_password(password: &str, username: &str) -> Result<(), RegistryError> {
    let invalid = |why: &str| Err(RegistryError::Invalid(format!("password {why}")));
    let chars: Vec<char> = password.chars().collect();
    if !(12..=1024).contains(&chars.len()) {
        return invalid("must be 12 to 1024 characters");
    }
    if chars.iter().all(|c| *c == chars[0]) {
        return invalid("must not be one character repeated");
    }
    if (2..=chars.len() / 2)
        .any(|n| chars.len().is_multiple_of(n) && chars.chunks(n).all(|c| c == &chars[..n]))
    {
        return invalid("must not be a short group of characters repeated");
    }
    let step = |a: char, b: char| i64::from(u32::from(b)) - i64::from(u32::from(a));
    let digit_wrap = |a: char, b: char| a.is_ascii_digit() && b.is_ascii_digit();
    for dir in [1i64, -1] {
        let run = chars.windows(2).all(|w| {
            let d = step(w[0], w[1]);
            d == dir || (digit_wrap(w[0], w[1]) && d == -9 * dir)
        });
        if run {
            return invalid("must not be a run of consecutive characters");
        }
    }
    let lower = password.to_lowercase();
    if COMMON.contains(&lower.as_str()) {
        return invalid("is one of the most common passwords; choose another");
    }
    if !username.is_empty() && lower.contains(&username.to_lowercase()) {
        return invalid("must not contain the username");
    }
    Ok(())
}
