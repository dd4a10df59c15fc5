//! How the text log writes an event's message and fields: as `tracing-subscriber`'s default
//! does (`message key=value …`), but with every character that could change how the log reads
//! escaped. Vigil logs strings from outside (a device's topic, a client id, a username); written
//! raw, a newline in one starts a forged line of its own, and a NUL or an escape sequence puts
//! binary or terminal commands into the log. The JSON format escapes them already.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// The text format's field formatter (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = Visitor {
            out: Escaping(writer),
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Visitor<'w> {
    out: Escaping<Writer<'w>>,
    first: bool,
    result: fmt::Result,
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        let name = field.name();
        self.result = if name == "message" {
            write!(self.out, "{sep}{value:?}")
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            write!(self.out, "{sep}{name}={value:?}")
        };
    }
}

/// Whether `c` must not reach a log line as it is: control characters (C0, DEL, C1), the
/// Unicode line and paragraph separators, and the bidirectional controls that reorder what a
/// reader sees.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Writes through to `W` with [`needs_escape`] characters escaped: `\n`, `\r`, `\t`, else
/// `\u{…}`.
struct Escaping<W>(W);

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(i) = rest.find(needs_escape) {
            self.0.write_str(&rest[..i])?;
            let c = rest[i..].chars().next().unwrap_or_default();
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "{}", c.escape_unicode())?,
            }
            rest = &rest[i + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = Escaping(String::new());
        out.write_str(s).unwrap();
        out.0
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escaped("plain Zürich 37.5 °C"), "plain Zürich 37.5 °C");
        assert_eq!(escaped("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(
            escaped("nul\0esc\u{1b}[2Jdel\u{7f}"),
            "nul\\u{0}esc\\u{1b}[2Jdel\\u{7f}"
        );
        assert_eq!(
            escaped("c1\u{85}ls\u{2028}rlo\u{202e}"),
            "c1\\u{85}ls\\u{2028}rlo\\u{202e}"
        );
        assert_eq!(escaped("\n"), "\\n");
        assert_eq!(escaped(""), "");
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_text_log_line_stays_one_line_whatever_its_fields_hold() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(EscapedFields)
            .with_ansi(false)
            .without_time()
            .with_writer(move || sink.clone())
            .finish();
        let topic = "t\n2026-01-01T00:00:00Z ERROR forged\0";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("conn", client = %"c\r\nX");
            let _in = span.enter();
            tracing::warn!(topic = %topic, debug = ?topic, r#type = "x", "refused {}", "m\nN");
        });
        let out = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 1, "{out:?}");
        assert!(
            !out.trim_end_matches('\n')
                .contains(|c: char| c.is_control()),
            "{out:?}"
        );
        for part in [
            "conn{client=c\\r\\nX}",
            "refused m\\nN",
            "topic=t\\n2026-01-01T00:00:00Z ERROR forged\\u{0}",
            "debug=\"t\\n2026-01-01T00:00:00Z ERROR forged\\0\"",
            "type=\"x\"",
        ] {
            assert!(out.contains(part), "{part:?} not in {out:?}");
        }
    }
}
