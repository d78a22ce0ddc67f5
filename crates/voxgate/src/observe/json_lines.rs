//! The JSON log line, written once and never read back. tracing-subscriber's own JSON format
//! keeps a span's fields as a JSON object that it parses again on every event inside the span
//! (to copy them into the line) and on every `Span::record` (to add one): three parses per
//! request for the access line and the key id alone. Here a span's fields are kept as the
//! inside of a JSON object (`"request_id":"…","route":"…"`), which a line copies as it is and
//! a record appends to.
//!
//! The line has the shape tracing-subscriber's JSON gave with `flatten_event` and
//! `with_current_span`: `{"timestamp":…,"level":…,<the event's fields>,"target":…,
//! "span":{<its fields>,"name":…}}`. What differs: a span's fields come in the order they
//! were recorded (not sorted); a `log` record's `log.file`, `log.line` and `log.module_path`
//! are left out; 128-bit integers are numbers, not strings.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// A layer writing these lines to `writer`.
pub fn layer<S, W>(writer: W) -> tracing_subscriber::fmt::Layer<S, SpanFields, JsonLine, W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer()
        .fmt_fields(SpanFields)
        .event_format(JsonLine)
        .with_writer(writer)
}

/// A span's fields, kept as the inside of a JSON object.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpanFields;

impl<'w> FormatFields<'w> for SpanFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = Entries::new(&mut writer, false);
        fields.record(&mut visitor);
        visitor.result
    }

    /// A field recorded again replaces its earlier value (the key appears once).
    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        let mut added = Added {
            fields: &mut current.fields,
            result: Ok(()),
        };
        fields.record(&mut added);
        added.result
    }
}

/// One JSON object per event, one per line (see the module's comment).
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLine;

impl<S> FormatEvent<S, SpanFields> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, SpanFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // A `log` record arrives as an event of target "log"; its own target is restored.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\"", meta.level())?;
        let mut entries = Entries::new(&mut writer, true);
        event.record(&mut entries);
        entries.result?;
        writer.write_str(",\"target\":")?;
        string(&mut writer, meta.target())?;
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            writer.write_str(",\"span\":{")?;
            if let Some(fields) = span.extensions().get::<FormattedFields<SpanFields>>()
                && !fields.fields.is_empty()
            {
                writer.write_str(&fields.fields)?;
                writer.write_char(',')?;
            }
            writer.write_str("\"name\":")?;
            string(&mut writer, span.name())?;
            writer.write_char('}')?;
        }
        writer.write_str("}\n")
    }
}

/// Writes fields as `"name":value` entries separated by commas (after a comma first when
/// `after_others`): numbers and booleans as themselves, everything else as a string. A
/// `log` record's `log.*` fields are left out (its target is the line's target).
struct Entries<'a> {
    out: &'a mut dyn fmt::Write,
    comma: bool,
    result: fmt::Result,
}

impl<'a> Entries<'a> {
    fn new(out: &'a mut dyn fmt::Write, after_others: bool) -> Self {
        Self {
            out,
            comma: after_others,
            result: Ok(()),
        }
    }

    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut dyn fmt::Write) -> fmt::Result) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        self.result = (|| {
            if self.comma {
                self.out.write_char(',')?;
            }
            self.comma = true;
            string(self.out, name.strip_prefix("r#").unwrap_or(name))?;
            self.out.write_char(':')?;
            value(self.out)
        })();
    }
}

impl Visit for Entries<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |out| string(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinities: those become null, as serde_json writes them.
        // `Debug` keeps a float a float (`1.0`, `1e300`, where `Display` writes `1` and 301
        // digits).
        if value.is_finite() {
            self.entry(field, |out| write!(out, "{value:?}"));
        } else {
            self.entry(field, |out| out.write_str("null"));
        }
    }
}

/// A span's fields recorded after its creation: each replaces an earlier entry of its name,
/// then is appended.
struct Added<'a> {
    fields: &'a mut String,
    result: fmt::Result,
}

impl Added<'_> {
    fn replace(&mut self, field: &Field, record: impl FnOnce(&mut Entries<'_>)) {
        remove_entry(self.fields, field.name());
        let (kept, comma) = (self.fields.len(), !self.fields.is_empty());
        let mut entries = Entries::new(self.fields, comma);
        record(&mut entries);
        let result = entries.result;
        if result.is_err() {
            // A value whose formatting failed midway leaves no half entry behind.
            self.fields.truncate(kept);
        }
        self.result = self.result.and(result);
    }
}

impl Visit for Added<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.replace(field, |e| e.record_str(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.replace(field, |e| e.record_debug(field, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.replace(field, |e| e.record_i64(field, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.replace(field, |e| e.record_u64(field, value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.replace(field, |e| e.record_i128(field, value));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.replace(field, |e| e.record_u128(field, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.replace(field, |e| e.record_bool(field, value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.replace(field, |e| e.record_f64(field, value));
    }
}

/// Removes the entry `name` from the inside of a JSON object of scalar values, if there.
/// Unambiguous without parsing: inside a JSON string every `"` is escaped, so `"name":` at the
/// start or after a `,` is a key, and the entry ends at its string's closing quote, or at
/// the next `,` for a number, a boolean or null.
fn remove_entry(fields: &mut String, name: &str) {
    let mut key = String::with_capacity(name.len() + 3);
    let _ = string(&mut key, name.strip_prefix("r#").unwrap_or(name));
    key.push(':');
    let start = if fields.starts_with(&key) {
        Some(0)
    } else {
        fields.find(&format!(",{key}"))
    };
    let Some(start) = start else { return };
    let value = start + key.len() + usize::from(start > 0);
    let bytes = fields.as_bytes();
    let end = if bytes.get(value) == Some(&b'"') {
        let mut i = value + 1;
        while i < bytes.len() && bytes[i] != b'"' {
            i += if bytes[i] == b'\\' { 2 } else { 1 };
        }
        (i + 1).min(bytes.len())
    } else {
        fields[value..].find(',').map_or(bytes.len(), |n| value + n)
    };
    if start == 0 {
        // The first entry: its trailing comma goes with it.
        let end = if fields.as_bytes().get(end) == Some(&b',') {
            end + 1
        } else {
            end
        };
        fields.replace_range(..end, "");
    } else {
        fields.replace_range(start..end, "");
    }
}

/// `value` as a JSON string.
fn string(out: &mut dyn fmt::Write, value: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(value)?;
    out.write_char('"')
}

/// Escapes what it is given for the inside of a JSON string.
struct Escaped<'a>(&'a mut dyn fmt::Write);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, byte) in s.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f | 0x7f => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::{Value, json};
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lines").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs `f` under a subscriber writing this format; returns the lines, each parsed.
    fn logged(f: impl FnOnce()) -> Vec<Value> {
        raw(f)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    /// Runs `f` (on this thread) under a subscriber writing this format; returns what it
    /// wrote.
    pub(crate) fn raw(f: impl FnOnce()) -> String {
        let lines = Lines::default();
        let sink = lines.clone();
        let subscriber = tracing_subscriber::registry().with(layer(move || sink.clone()));
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(lines.0.lock().expect("lines").clone()).expect("utf-8")
    }

    #[test]
    fn an_event_in_a_span_carries_its_fields_and_the_spans() {
        let lines = logged(|| {
            let span = tracing::info_span!(
                "request",
                request_id = "id-1",
                method = %"POST",
                keyid = tracing::field::Empty,
            );
            let _entered = span.enter();
            tracing::Span::current().record("keyid", "k1");
            tracing::info!(status = 200u16, ok = true, ratio = 0.5, "finished");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "finished");
        assert_eq!(line["status"], 200);
        assert_eq!(line["ok"], true);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["target"], module_path!());
        assert_eq!(
            line["span"],
            json!({"request_id": "id-1", "method": "POST", "keyid": "k1", "name": "request"})
        );
        let stamp = line["timestamp"].as_str().expect("timestamp");
        assert!(
            stamp.len() == 27 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{stamp}"
        );
    }

    #[test]
    fn a_field_recorded_again_keeps_its_last_value_once() {
        for first in ["a \"quoted, \\\" value\\", "plain", "x,\"c\":y"] {
            let text = raw(|| {
                let span = tracing::info_span!(
                    "s",
                    a = tracing::field::Empty,
                    b = 1,
                    c = tracing::field::Empty,
                    request_id = "r",
                    id = tracing::field::Empty,
                );
                span.record("a", first);
                span.record("c", "x,\"c\":y");
                span.record("id", 7);
                span.record("a", "second");
                span.record("c", "z");
                span.record("b", 2);
                span.record("id", "last");
                span.in_scope(|| tracing::info!("in"));
            });
            let line: Value = serde_json::from_str(text.trim()).expect("one JSON line");
            assert_eq!(
                line["span"],
                json!({"a": "second", "b": 2, "c": "z", "request_id": "r", "id": "last", "name": "s"}),
                "first value {first:?}"
            );
            // A parser keeps the last of repeated keys: the text shows each key once.
            for key in ["\"a\":", "\"b\":", "\"c\":", "\"id\":", "\"request_id\":"] {
                assert_eq!(text.matches(key).count(), 1, "{key} in {text}");
            }
        }
    }

    #[test]
    fn strings_are_escaped_and_odd_numbers_stay_json() {
        let nasty = "quote \" backslash \\ newline \n tab \t nul \0 bell \x07 del \x7f é 🎙";
        let lines = logged(|| {
            tracing::warn!(
                text = nasty,
                debug = ?nasty,
                nan = f64::NAN,
                inf = f64::INFINITY,
                low = i64::MIN,
                whole = 1.0,
                huge = 1e300,
                wide = i128::MIN,
                "m"
            );
        });
        let line = &lines[0];
        assert_eq!(line["text"], nasty);
        assert_eq!(line["debug"], format!("{nasty:?}"));
        assert_eq!(line["nan"], Value::Null);
        assert_eq!(line["inf"], Value::Null);
        assert!(line["whole"].is_f64() && line["huge"].is_f64(), "{line}");
        assert_eq!(line["huge"], 1e300);
        assert!(line["wide"].is_number(), "{line}");
        assert_eq!(line["low"], i64::MIN);
        assert_eq!(line["level"], "WARN");
        assert!(line.get("span").is_none(), "no span: no span entry");
    }
}
