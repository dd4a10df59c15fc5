//! The biller's CSV (`GET /billing?month=…&format=csv`): RFC 4180, one row per patient and
//! code, with the evidence in words a spreadsheet shows. Cells a spreadsheet would take for a
//! formula (starting `= + - @`, tab or carriage return) are prefixed with `'`, so a patient's
//! name cannot run in the biller's spreadsheet.

use super::statement::{Evidence, Statement};

/// The columns, in order.
pub const HEADER: [&str; 12] = [
    "patient_id",
    "patient_name",
    "mrn",
    "month",
    "program",
    "practitioner",
    "code",
    "units",
    "date_of_service",
    "final",
    "description",
    "evidence",
];

/// A patient's statement with the name and MRN the biller files it under.
pub struct Row<'a> {
    pub statement: &'a Statement,
    pub name: &'a str,
    pub mrn: Option<&'a str>,
}

/// The CSV of `rows`: the header, then a line per code (CRLF line ends).
pub fn render(rows: &[Row<'_>]) -> String {
    let mut out = String::new();
    line(&mut out, HEADER.iter().map(|h| h.to_string()));
    for r in rows {
        let s = r.statement;
        for c in &s.codes {
            line(
                &mut out,
                [
                    s.patient_id.clone(),
                    r.name.to_owned(),
                    r.mrn.unwrap_or_default().to_owned(),
                    s.month.clone(),
                    c.program.clone(),
                    c.practitioner.clone().unwrap_or_default(),
                    c.code.clone(),
                    c.units.to_string(),
                    c.date.clone(),
                    if c.is_final { "yes" } else { "no" }.to_owned(),
                    c.name.clone(),
                    evidence(&c.evidence),
                ]
                .into_iter(),
            );
        }
    }
    out
}

/// The evidence in words: "device days 2026-11-01, 2026-11-02; time te_… 2026-11-03 20 min
/// call (interactive)".
fn evidence(items: &[Evidence]) -> String {
    let days: Vec<&str> = items
        .iter()
        .filter_map(|e| match e {
            Evidence::DeviceDay { date } => Some(date.as_str()),
            _ => None,
        })
        .collect();
    let mut parts = Vec::new();
    for e in items {
        match e {
            Evidence::Setup {
                device_id,
                date,
                by,
                ..
            } => parts.push(format!("set-up of {device_id} on {date} by {by}")),
            Evidence::Time {
                id,
                date,
                minutes,
                activity,
                interactive,
                ..
            } => parts.push(format!(
                "{date} {minutes} min {activity}{} ({id})",
                if *interactive { ", interactive" } else { "" }
            )),
            Evidence::DeviceDay { .. } => {}
        }
    }
    if !days.is_empty() {
        parts.push(format!("{} device days: {}", days.len(), days.join(" ")));
    }
    parts.join("; ")
}

fn line(out: &mut String, cells: impl Iterator<Item = String>) {
    let mut first = true;
    for c in cells {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&cell(&c));
    }
    out.push_str("\r\n");
}

fn cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("Smith, Jo"), "\"Smith, Jo\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("-1"), "'-1");
        assert_eq!(cell("two\nlines"), "\"two\nlines\"");
    }
}
