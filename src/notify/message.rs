//! The words of a notification: an email (subject and plain-text body) and an SMS. Pure: no
//! I/O, no clock; the channels ([`super::email`], [`super::sms`]) only carry what these
//! functions write.
//!
//! Minimum necessary. Email and SMS pass through servers the clinic does not run and show up on
//! lock screens, so by default a notification says only how urgent it is, which rule fired, who
//! (the patient's initials, or the id the clinic gave them, or nobody: `notify.patient_label`)
//! and where to look (a link into Vigil, whose page asks the reader to sign in). It never
//! carries a reading, a value or a full name unless the clinic sets `notify.include_details`;
//! then the patient's full name and the alert's message (which names the reading that tipped
//! it) are added. [`Notice::for_alert`] is the one place that choice is made: whatever is not
//! in a [`Notice`] cannot be sent.

use crate::alerts::rules::Severity;
use crate::config::{NotifyConfig, PatientLabel};
use crate::domain::Metric;
use crate::registry::record::Alert;

/// The patient an alert is about, as the caller knows them; [`Notice::for_alert`] keeps only
/// what `[notify]` allows.
#[derive(Debug, Clone, Copy)]
pub struct PatientRef<'a> {
    /// The patient's id in Vigil.
    pub id: &'a str,
    /// Their full name, as the registry holds it.
    pub name: &'a str,
}

/// One notification, holding only what may leave Vigil.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// The notification's id, the same on every attempt to send it: the email's `Message-ID`
    /// and the SMS request's `Idempotency-Key` are made from it, so a retried send is
    /// recognisable.
    pub id: String,
    /// What it is about.
    pub about: About,
    /// Where the reader acts on it: an opaque URL the caller makes (the alert's page, a signed
    /// acknowledgement link), sent as given.
    pub link: String,
}

/// What a notification is about.
#[derive(Debug, Clone, PartialEq)]
pub enum About {
    /// An alert that needs a person.
    Alert {
        severity: Severity,
        /// The rule in words, e.g. `SpO2 outside its limit`.
        rule: String,
        /// The rule's id in the patient's care plan (the clinic's words).
        rule_id: String,
        /// The patient's initials or id; `None` when `notify.patient_label = "none"` (or the
        /// name has no letters to take initials from).
        patient: Option<String>,
        /// When the alert opened (RFC 3339).
        opened_at: String,
        /// How many times it has escalated unacknowledged.
        escalations: u32,
        /// Only with `notify.include_details = true`.
        details: Option<Details>,
    },
    /// A test of the channels (`vigil notify test`): nothing about any patient.
    Test,
}

/// What `notify.include_details = true` adds.
#[derive(Debug, Clone, PartialEq)]
pub struct Details {
    pub patient_name: String,
    /// The alert's message, e.g. `spo2 < 90 % for 1 min (latest 86 %)`.
    pub message: String,
}

impl Notice {
    /// The notification `id` of `alert` about `patient`, pointing at `link`, saying only what
    /// `policy` allows.
    pub fn for_alert(
        id: &str,
        alert: &Alert,
        patient: PatientRef<'_>,
        link: &str,
        policy: &NotifyConfig,
    ) -> Notice {
        let label = match policy.patient_label {
            PatientLabel::Initials => initials(patient.name),
            PatientLabel::Id => Some(one_line(patient.id)),
            PatientLabel::None => None,
        };
        let metric = alert.trigger.as_ref().map(|t| t.metric.as_str());
        Notice {
            id: id.to_owned(),
            about: About::Alert {
                severity: alert.severity,
                rule: rule_in_words(&alert.kind, metric),
                rule_id: one_line(&alert.rule_id),
                patient: label,
                opened_at: one_line(&alert.opened_at),
                escalations: alert.escalations,
                details: policy.include_details.then(|| Details {
                    patient_name: one_line(patient.name),
                    message: one_line(&alert.message),
                }),
            },
            link: one_line(link),
        }
    }

    /// A test notification `id` pointing at `link` (the dashboard).
    pub fn test(id: &str, link: &str) -> Notice {
        Notice {
            id: id.to_owned(),
            about: About::Test,
            link: one_line(link),
        }
    }
}

/// An email's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailText {
    pub subject: String,
    /// `text/plain`, lines ending in `\n`.
    pub body: String,
}

/// The email of a notice.
pub fn email(n: &Notice) -> EmailText {
    match &n.about {
        About::Test => EmailText {
            subject: "[Vigil] Test notification".into(),
            body: format!(
                "This is a test of Vigil's email notifications (vigil notify test).\n\
                 If you can read it, alerts can reach you by email.\n\
                 \n\
                 Vigil: {}\n",
                n.link
            ),
        },
        About::Alert {
            severity,
            rule,
            rule_id,
            patient,
            opened_at,
            escalations,
            details,
        } => {
            let sev = severity_word(*severity);
            let mut subject = format!("[Vigil] {sev} alert: {rule}");
            if let Some(p) = patient {
                subject.push_str(&format!(" - {p}"));
            }
            let mut body = format!("{sev} alert: {rule}\nRule: {rule_id}\n");
            if let Some(p) = patient {
                body.push_str(&format!("Patient: {p}\n"));
            }
            body.push_str(&format!("Opened: {opened_at}\n"));
            if *escalations > 0 {
                body.push_str(&format!(
                    "Escalated: {escalations} time{} without acknowledgement\n",
                    if *escalations == 1 { "" } else { "s" }
                ));
            }
            body.push_str(&format!("\nOpen it in Vigil:\n{}\n", n.link));
            match details {
                Some(d) => body.push_str(&format!(
                    "\nPatient name: {}\nAlert: {}\n\n--\nSent by Vigil. This clinic includes \
                     the patient's name and the alert's details in notifications.\n",
                    d.patient_name, d.message
                )),
                None => body.push_str(
                    "\n--\nSent by Vigil. Notifications carry no readings and no names: \
                     the link shows them once you sign in.\n",
                ),
            }
            EmailText { subject, body }
        }
    }
}

/// The most GSM-7 characters one SMS holds.
pub const SMS_SINGLE: usize = 160;

/// The SMS of a notice: one text of at most [`SMS_SINGLE`] GSM characters where possible. The
/// link is never shortened; the rule's id, then the word "alert", then the rule in words give
/// way first. Details (`notify.include_details`) are added whole, even when that makes the
/// message longer than one SMS: the clinic asked for them.
pub fn sms(n: &Notice) -> String {
    match &n.about {
        About::Test => format!("Vigil test message: SMS notifications work. {}", n.link),
        About::Alert {
            severity,
            rule,
            rule_id,
            patient,
            details,
            ..
        } => {
            let sev = severity_word(*severity);
            let who = patient
                .as_ref()
                .map(|p| format!(" Patient {p}"))
                .unwrap_or_default();
            let extra = details
                .as_ref()
                .map(|d| format!(" - {}: {}.", d.patient_name, d.message))
                .unwrap_or_default();
            let link = &n.link;
            let candidates = [
                format!("Vigil {sev} alert: {rule} ({rule_id}).{who}{extra} {link}"),
                format!("Vigil {sev} alert: {rule}.{who}{extra} {link}"),
                format!("Vigil {sev}: {rule}.{who}{extra} {link}"),
                format!("Vigil {sev} alert.{who}{extra} {link}"),
            ];
            let fits = |t: &String| sms_fits_one(t);
            match candidates.iter().find(|t| fits(t)) {
                Some(t) => t.clone(),
                None => candidates[candidates.len() - 1].clone(),
            }
        }
    }
}

/// Whether `text` fits one SMS: 160 GSM-7 septets, or 70 UCS-2 characters when it holds a
/// character GSM-7 cannot carry.
pub fn sms_fits_one(text: &str) -> bool {
    match gsm_septets(text) {
        Some(n) => n <= SMS_SINGLE,
        None => text.encode_utf16().count() <= 70,
    }
}

/// How many septets `text` takes in the GSM 03.38 default alphabet (an extension-table
/// character takes two); `None` when a character is not in it.
pub fn gsm_septets(text: &str) -> Option<usize> {
    const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                         ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
    const EXTENSION: &str = "\u{c}^{}\\[~]|€";
    text.chars().try_fold(0usize, |n, c| {
        if BASIC.contains(c) {
            Some(n + 1)
        } else if EXTENSION.contains(c) {
            Some(n + 2)
        } else {
            None
        }
    })
}

/// The initials of a name's first and last words, `M.T.` for `Margaret Ann Thompson`;
/// `None` when it has no letters.
pub fn initials(name: &str) -> Option<String> {
    let first_letters: Vec<char> = name
        .split_whitespace()
        .filter_map(|w| w.chars().find(|c| c.is_alphabetic()))
        .collect();
    let picked: Vec<char> = match first_letters.as_slice() {
        [] => return None,
        [only] => vec![*only],
        [first, .., last] => vec![*first, *last],
    };
    Some(
        picked
            .into_iter()
            .flat_map(|c| c.to_uppercase().chain(['.']))
            .collect(),
    )
}

/// The rule in words, from its kind and (for thresholds and rates) its metric: what fired,
/// never the values.
pub fn rule_in_words(kind: &str, metric: Option<&str>) -> String {
    let m = metric.map(metric_words);
    match (kind, m) {
        ("threshold", Some(m)) => format!("{m} outside its limit"),
        ("threshold", None) => "a reading outside its limit".into(),
        ("rate", Some(m)) => format!("{m} changing fast"),
        ("rate", None) => "a value changing fast".into(),
        ("news2", _) => "NEWS2 score raised".into(),
        ("missing", _) => "readings missing".into(),
        (other, _) => format!("{} rule", one_line(other)),
    }
}

/// A metric's name for people.
fn metric_words(name: &str) -> String {
    match Metric::parse(name) {
        Some(Metric::HeartRate) => "heart rate".into(),
        Some(Metric::Spo2) => "SpO2".into(),
        Some(Metric::RespiratoryRate) => "respiratory rate".into(),
        Some(Metric::BpSystolic) => "systolic blood pressure".into(),
        Some(Metric::BpDiastolic) => "diastolic blood pressure".into(),
        Some(Metric::BpMean) => "mean blood pressure".into(),
        Some(Metric::BodyTemperature) => "temperature".into(),
        Some(Metric::BodyWeight) => "weight".into(),
        Some(Metric::Glucose) => "glucose".into(),
        Some(Metric::Steps) => "steps".into(),
        Some(Metric::Consciousness) => "consciousness".into(),
        Some(Metric::OnOxygen) => "supplemental oxygen".into(),
        None => one_line(name).replace('_', " "),
    }
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Low => "LOW",
        Severity::Medium => "MEDIUM",
        Severity::High => "HIGH",
    }
}

/// `s` on one line: control characters (line breaks above all, which could forge a header)
/// become spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::record::{AlertStatus, Trigger};

    const LINK: &str = "https://vigil.clinic.example/alerts/alr_0011";

    /// An alert whose message and trigger hold a reading (86 %) and its limit (90 %).
    fn alert() -> Alert {
        Alert {
            id: "alr_0011".into(),
            patient_id: "p-0042".into(),
            rule_id: "spo2-low".into(),
            kind: "threshold".into(),
            severity: Severity::High,
            status: AlertStatus::Open,
            opened_at: "2026-11-25T13:00:00Z".into(),
            message: "spo2 < 90 % for 1 min (latest 86 %)".into(),
            trigger: Some(Trigger {
                device_id: "ox-7".into(),
                metric: "spo2".into(),
                value: 86.0,
                unit: "%".into(),
                time: "2026-11-25T13:00:00Z".into(),
            }),
            escalations: 0,
            acknowledged_at: None,
            acknowledged_by: None,
            ack_note: None,
            resolved_at: None,
            resolved_by: None,
            resolve_note: None,
            assigned_to: None,
            assigned_at: None,
            snoozed_until: None,
            snooze_reason: None,
        }
    }

    const PATIENT: PatientRef<'static> = PatientRef {
        id: "p-0042",
        name: "Margaret Ann Thompson",
    };

    fn notice(policy: &NotifyConfig) -> Notice {
        Notice::for_alert("ntf_1", &alert(), PATIENT, LINK, policy)
    }

    /// Everything a notice can put on the wire.
    fn all_text(n: &Notice) -> String {
        let e = email(n);
        format!("{}\n{}\n{}", e.subject, e.body, sms(n))
    }

    #[test]
    fn by_default_no_reading_value_limit_device_or_name_leaves() {
        let n = notice(&NotifyConfig::default());
        let text = all_text(&n);
        for secret in [
            "86", "90", "Margaret", "Thompson", "Ann", "ox-7", "p-0042", "latest", "%",
        ] {
            assert!(!text.contains(secret), "{secret:?} leaked:\n{text}");
        }
        for needed in ["HIGH", "SpO2 outside its limit", "spo2-low", "M.T.", LINK] {
            assert!(text.contains(needed), "{needed:?} missing:\n{text}");
        }
    }

    #[test]
    fn the_clinic_chooses_how_the_patient_is_named_and_whether_details_go() {
        let id = NotifyConfig {
            patient_label: PatientLabel::Id,
            ..NotifyConfig::default()
        };
        let text = all_text(&notice(&id));
        assert!(text.contains("Patient p-0042"), "{text}");
        assert!(
            !text.contains("M.T.") && !text.contains("Thompson"),
            "{text}"
        );

        let nobody = NotifyConfig {
            patient_label: PatientLabel::None,
            ..NotifyConfig::default()
        };
        let text = all_text(&notice(&nobody));
        assert!(
            !text.contains("Patient") && !text.contains("M.T."),
            "{text}"
        );
        assert!(!text.contains("p-0042"), "{text}");

        let details = NotifyConfig {
            include_details: true,
            ..NotifyConfig::default()
        };
        let n = notice(&details);
        let e = email(&n);
        assert!(
            e.body.contains("Patient name: Margaret Ann Thompson"),
            "{}",
            e.body
        );
        assert!(e.body.contains("(latest 86 %)"), "{}", e.body);
        assert!(
            !e.subject.contains("Thompson"),
            "the subject stays short: {}",
            e.subject
        );
        let s = sms(&n);
        assert!(
            s.contains("Margaret Ann Thompson") && s.contains("86 %"),
            "{s}"
        );
        assert!(s.ends_with(LINK), "{s}");
    }

    #[test]
    fn the_email_says_what_which_who_when_and_where() {
        let mut a = alert();
        a.escalations = 2;
        let e = email(&Notice::for_alert(
            "ntf_1",
            &a,
            PATIENT,
            LINK,
            &NotifyConfig::default(),
        ));
        assert_eq!(
            e.subject,
            "[Vigil] HIGH alert: SpO2 outside its limit - M.T."
        );
        assert_eq!(
            e.body,
            "HIGH alert: SpO2 outside its limit\n\
             Rule: spo2-low\n\
             Patient: M.T.\n\
             Opened: 2026-11-25T13:00:00Z\n\
             Escalated: 2 times without acknowledgement\n\
             \n\
             Open it in Vigil:\n\
             https://vigil.clinic.example/alerts/alr_0011\n\
             \n\
             --\n\
             Sent by Vigil. Notifications carry no readings and no names: the link shows them \
             once you sign in.\n"
        );
    }

    #[test]
    fn an_sms_fits_one_message_and_gives_way_before_the_link_does() {
        let n = notice(&NotifyConfig::default());
        let s = sms(&n);
        assert_eq!(
            s,
            "Vigil HIGH alert: SpO2 outside its limit (spo2-low). Patient M.T. \
             https://vigil.clinic.example/alerts/alr_0011"
        );
        assert!(gsm_septets(&s).unwrap() <= SMS_SINGLE);

        // A signed acknowledgement link of 110 characters: the rule's id gives way.
        let long = format!("https://vigil.clinic.example/ack/{}", "x".repeat(77));
        let s = sms(&Notice::for_alert(
            "ntf_1",
            &alert(),
            PATIENT,
            &long,
            &NotifyConfig::default(),
        ));
        assert!(s.ends_with(&long), "{s}");
        assert!(!s.contains("spo2-low"), "{s}");
        assert!(s.contains("HIGH") && s.contains("M.T."), "{s}");
        assert!(
            sms_fits_one(&s),
            "{} septets: {s}",
            gsm_septets(&s).unwrap()
        );

        // A link too long for any: the shortest text, the link whole.
        let huge = format!("https://vigil.clinic.example/{}", "y".repeat(200));
        let s = sms(&Notice::for_alert(
            "ntf_1",
            &alert(),
            PATIENT,
            &huge,
            &NotifyConfig::default(),
        ));
        assert_eq!(s, format!("Vigil HIGH alert. Patient M.T. {huge}"));
    }

    #[test]
    fn gsm_lengths_count_extension_characters_twice_and_refuse_others() {
        assert_eq!(gsm_septets("Vigil HIGH"), Some(10));
        assert_eq!(gsm_septets("a{b}€"), Some(8));
        assert_eq!(gsm_septets("Łukasz"), None);
        assert!(sms_fits_one(&"a".repeat(160)));
        assert!(!sms_fits_one(&"a".repeat(161)));
        assert!(sms_fits_one(&"Ł".repeat(70)));
        assert!(!sms_fits_one(&"Ł".repeat(71)));
    }

    #[test]
    fn initials_come_from_the_first_and_last_words() {
        assert_eq!(initials("Margaret Ann Thompson").as_deref(), Some("M.T."));
        assert_eq!(initials("cher").as_deref(), Some("C."));
        assert_eq!(initials("  jean-luc   picard ").as_deref(), Some("J.P."));
        assert_eq!(initials("Łukasz Żak").as_deref(), Some("Ł.Ż."));
        assert_eq!(initials("(unknown) 42").as_deref(), Some("U."));
        assert_eq!(initials("  "), None);
        assert_eq!(initials("42"), None);
    }

    #[test]
    fn rules_are_named_by_kind_and_metric() {
        assert_eq!(
            rule_in_words("threshold", Some("heart_rate")),
            "heart rate outside its limit"
        );
        assert_eq!(
            rule_in_words("rate", Some("body_weight")),
            "weight changing fast"
        );
        assert_eq!(rule_in_words("news2", None), "NEWS2 score raised");
        assert_eq!(rule_in_words("missing", None), "readings missing");
        assert_eq!(
            rule_in_words("threshold", None),
            "a reading outside its limit"
        );
        assert_eq!(rule_in_words("custom", None), "custom rule");
    }

    #[test]
    fn caller_text_cannot_break_a_line_or_forge_a_header() {
        let mut a = alert();
        a.rule_id = "x\r\nBcc: someone@else.example".into();
        let n = Notice::for_alert(
            "ntf_1",
            &a,
            PatientRef {
                id: "p",
                name: "A\nB",
            },
            "https://v.example/\r\nX: y",
            &NotifyConfig::default(),
        );
        let e = email(&n);
        assert!(!e.subject.contains(['\r', '\n']), "{:?}", e.subject);
        assert!(
            e.body.contains("Rule: x  Bcc: someone@else.example\n"),
            "{}",
            e.body
        );
        assert!(!sms(&n).contains(['\r', '\n']));
    }

    #[test]
    fn a_test_notice_names_no_patient() {
        let n = Notice::test("ntf_t", "https://vigil.clinic.example");
        let e = email(&n);
        assert_eq!(e.subject, "[Vigil] Test notification");
        assert!(e.body.contains("https://vigil.clinic.example"));
        let s = sms(&n);
        assert!(sms_fits_one(&s), "{s}");
    }
}
