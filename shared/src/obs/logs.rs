//! Log line formats that carry the correlation ids (`trace_id`, `span_id`, `request_id`) of the request a line
//! belongs to.
//!
//! The ids are computed once per request, when the request's span is made (see [`crate::obs::ObserveLayer`]), and
//! stored as a [`LogIds`] extension on the span in the registry. Every line emitted inside that span, however deeply nested, picks them up
//! from the nearest span that has them: no per-line lookups into OpenTelemetry, no re-parsing of span fields.
//!
//! JSON lines look like
//! `{"timestamp":"…","level":"INFO","message":"request completed","status":200,"latency_ms":0.4,`
//! `"target":"shared::obs::request","trace_id":"…","span_id":"…","request_id":"…",`
//! `"span":{"name":"request","method":"GET","route":"/data"}}`.
//! Text lines are tracing's usual format with ` trace_id=… span_id=… request_id=…` appended, and their fields
//! written logfmt-style by [`TextFields`]: a value that is not a plain token is quoted and escaped, so a value taken
//! from a request (a request id, an error naming what the client sent) can neither pass for more fields nor start a
//! new line.

use std::fmt::{self, Write as _};

use opentelemetry::trace::{SpanId, TraceId};
use tracing::{Event, Span, Subscriber, field::Field};
use tracing_subscriber::{
    Registry,
    field::{RecordFields, Visit},
    fmt::{
        FmtContext, FormatEvent, FormatFields, FormattedFields,
        format::Writer,
        time::{FormatTime, SystemTime},
    },
    registry::LookupSpan,
};

/// Correlation ids of one request, attached to its span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogIds {
    /// W3C trace id (32 lowercase hex digits when printed).
    pub trace_id: TraceId,
    /// Id of this agent's span for the request (16 lowercase hex digits when printed).
    pub span_id: SpanId,
    /// The `x-request-id` of the request.
    pub request_id: String,
}

/// Stores `ids` on `span`, so every line logged inside it carries them. A disabled span is left alone.
pub fn attach(span: &Span, ids: LogIds) {
    span.with_subscriber(|(id, dispatch)| {
        if let Some(span) = dispatch.downcast_ref::<Registry>().and_then(|registry| registry.span(id)) {
            span.extensions_mut().replace(ids);
        }
    });
}

/// Reads back the ids stored on `span` (for tests and diagnostics).
pub fn ids_of(span: &Span) -> Option<LogIds> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        registry.span(id)?.extensions().get::<LogIds>().cloned()
    })
    .flatten()
}

/// Span fields that never go into the `span` object of a JSON line: the ids are printed at the top level, and
/// `otel.*` fields only steer the OpenTelemetry layer.
fn hidden_in_logs(field: &Field) -> bool {
    let name = field.name();
    name == "request_id" || name.starts_with("otel.")
}

/// One JSON object per line, correlation ids at the top level.
#[derive(Debug, Default)]
pub struct JsonLines {
    timer: SystemTime,
}

impl JsonLines {
    /// Now, in UTC, as `2026-12-01T22:59:52.266016Z`: the format of tracing's `SystemTime`, written by humantime,
    /// which fills a fixed buffer instead of formatting each part through `fmt` (a tenth of the instructions; the
    /// timestamp was the dearest part of a request's line, `bench/callgrind.sh`). Times humantime cannot write
    /// (before 1970, after 9999) fall back to tracing's formatter.
    fn write_timestamp(&self, w: &mut Writer<'_>) -> fmt::Result {
        let now = std::time::SystemTime::now();
        match now.duration_since(std::time::UNIX_EPOCH) {
            Ok(since) if since.as_secs() < LAST_SECOND_OF_9999 => {
                write!(w, "{}", humantime::format_rfc3339_micros(now))
            }
            _ => self.timer.format_time(w),
        }
    }
}

/// Seconds from 1970 to the end of year 9999, past which humantime writes no timestamp.
const LAST_SECOND_OF_9999: u64 = 253_402_300_800;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        w.write_str("{\"timestamp\":\"")?;
        self.write_timestamp(&mut w)?;
        write!(w, "\",\"level\":\"{}\"", meta.level())?;
        let mut fields = JsonVisitor::new(&mut w, true, false);
        event.record(&mut fields);
        fields.result?;
        w.write_str(",\"target\":")?;
        write_json_str(&mut w, meta.target())?;

        if let Some(scope) = ctx.event_scope() {
            let mut ids_written = false;
            for (depth, span) in scope.enumerate() {
                let extensions = span.extensions();
                if !ids_written && let Some(ids) = extensions.get::<LogIds>() {
                    write!(w, ",\"trace_id\":\"{}\",\"span_id\":\"{}\",\"request_id\":", ids.trace_id, ids.span_id)?;
                    write_json_str(&mut w, &ids.request_id)?;
                    ids_written = true;
                }
                if depth == 0 {
                    // The innermost span's own fields, as stored by `JsonFields`.
                    w.write_str(",\"span\":{\"name\":")?;
                    write_json_str(&mut w, span.name())?;
                    if let Some(stored) = extensions.get::<FormattedFields<N>>()
                        && !stored.fields.is_empty()
                    {
                        w.write_char(',')?;
                        w.write_str(&stored.fields)?;
                    }
                    w.write_char('}')?;
                }
                if ids_written {
                    break;
                }
            }
        }
        w.write_str("}\n")
    }
}

/// Stores span fields as a JSON object body (`"k":v,"k2":v2`), so a line can splice it in without re-parsing.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonFields;

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = JsonVisitor::new(&mut writer, false, true);
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(&self, current: &'w mut FormattedFields<Self>, fields: &tracing::span::Record<'_>) -> fmt::Result {
        let empty = current.fields.is_empty();
        let mut writer = current.as_writer();
        let mut visitor = JsonVisitor::new(&mut writer, !empty, true);
        fields.record(&mut visitor);
        visitor.result
    }
}

/// `record_<type>` methods of a [`Visit`] that write the value as it prints (numbers and booleans), through the
/// visitor's own `pair` method.
macro_rules! record_as_printed {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(
            fn $method(&mut self, field: &Field, value: $ty) {
                self.pair(field, |w| write!(w, "{value}"));
            }
        )*
    };
}

/// Writes visited fields as `"name":value` pairs.
struct JsonVisitor<'a, 'w> {
    w: &'a mut Writer<'w>,
    comma: bool,
    span_fields: bool,
    result: fmt::Result,
}

impl<'a, 'w> JsonVisitor<'a, 'w> {
    fn new(w: &'a mut Writer<'w>, leading_comma: bool, span_fields: bool) -> Self {
        Self { w, comma: leading_comma, span_fields, result: Ok(()) }
    }

    fn pair(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'w>) -> fmt::Result) {
        if self.result.is_err() || (self.span_fields && hidden_in_logs(field)) {
            return;
        }
        self.result = (|| {
            if self.comma {
                self.w.write_char(',')?;
            }
            self.comma = true;
            write_json_str(self.w, field.name())?;
            self.w.write_char(':')?;
            value(self.w)
        })();
    }
}

impl Visit for JsonVisitor<'_, '_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinities.
        if value.is_finite() {
            self.pair(field, |w| write!(w, "{value}"))
        } else {
            self.pair(field, |w| w.write_str("null"))
        }
    }

    record_as_printed!(record_i64: i64, record_u64: u64, record_i128: i128, record_u128: u128, record_bool: bool);

    fn record_str(&mut self, field: &Field, value: &str) {
        self.pair(field, |w| write_json_str(w, value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.pair(field, |w| write_json_display(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.pair(field, |w| {
            w.write_char('"')?;
            write!(JsonEscape(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// Writes `s` as a JSON string literal.
fn write_json_str(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    JsonEscape(w).write_str(s)?;
    w.write_char('"')
}

fn write_json_display(w: &mut impl fmt::Write, value: &dyn fmt::Display) -> fmt::Result {
    w.write_char('"')?;
    write!(JsonEscape(w), "{value}")?;
    w.write_char('"')
}

/// Escapes what passes through it for the inside of a JSON string.
struct JsonEscape<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for JsonEscape<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, byte) in s.bytes().enumerate() {
            let escaped = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..0x20 | 0x7f => "",
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            if escaped.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escaped)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

/// Fields of text lines as `name=value`, separated by spaces, the message first and bare; every other value that is
/// not a plain token (letters, digits, `-._:/@+%`) is written in double quotes with `"`, `\\` and control
/// characters escaped.
#[derive(Debug, Default, Clone, Copy)]
pub struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = TextVisitor { w: &mut writer, first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'a, 'w> {
    w: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl TextVisitor<'_, '_> {
    fn pair(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            if !std::mem::take(&mut self.first) {
                self.w.write_char(' ')?;
            }
            if field.name() != "message" {
                write!(self.w, "{}=", field.name())?;
            }
            value(self.w)
        })();
    }

    fn text(&mut self, field: &Field, value: &str) {
        let message = field.name() == "message";
        self.pair(field, |w| if message { write_escaped(w, value) } else { write_logfmt_value(w, value) });
    }
}

impl Visit for TextVisitor<'_, '_> {
    record_as_printed!(record_f64: f64, record_i64: i64, record_u64: u64, record_bool: bool);

    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.text(field, &value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.text(field, &format!("{value:?}"));
    }
}

/// Writes `value` bare when it is a plain token, else quoted and escaped (see [`TextFields`]).
fn write_logfmt_value(w: &mut impl fmt::Write, value: &str) -> fmt::Result {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'/' | b'@' | b'+' | b'%'));
    if plain {
        return w.write_str(value);
    }
    w.write_char('"')?;
    for c in value.chars() {
        match c {
            '"' => w.write_str("\\\"")?,
            '\\' => w.write_str("\\\\")?,
            c => write_escaped_char(w, c)?,
        }
    }
    w.write_char('"')
}

/// Writes `text` with control characters escaped, so that it stays on its line.
fn write_escaped(w: &mut impl fmt::Write, text: &str) -> fmt::Result {
    text.chars().try_for_each(|c| write_escaped_char(w, c))
}

fn write_escaped_char(w: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => w.write_str("\\n"),
        '\r' => w.write_str("\\r"),
        '\t' => w.write_str("\\t"),
        c if c.is_control() => write!(w, "\\u{{{:04x}}}", u32::from(c)),
        c => w.write_char(c),
    }
}

/// tracing's human-readable format with the correlation ids appended to each line.
#[derive(Debug)]
pub struct TextLines<F> {
    inner: F,
}

impl<F> TextLines<F> {
    /// Wraps a text event format.
    pub fn new(inner: F) -> Self {
        Self { inner }
    }
}

impl<S, N, F> FormatEvent<S, N> for TextLines<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut line = String::with_capacity(256);
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        w.write_str(line.trim_end_matches('\n'))?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope {
                if let Some(ids) = span.extensions().get::<LogIds>() {
                    write!(w, " trace_id={} span_id={} request_id=", ids.trace_id, ids.span_id)?;
                    write_logfmt_value(&mut w, &ids.request_id)?;
                    break;
                }
            }
        }
        w.write_char('\n')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        write_json_str(&mut out, s).unwrap();
        out
    }

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_timestamps_have_the_format_of_tracings_system_time() {
        let stamps = || {
            let (mut ours, mut tracings) = (String::new(), String::new());
            JsonLines::default().write_timestamp(&mut Writer::new(&mut ours)).unwrap();
            SystemTime.format_time(&mut Writer::new(&mut tracings)).unwrap();
            (ours, tracings)
        };
        let (ours, tracings) = stamps();
        for stamp in [&ours, &tracings] {
            assert_eq!(stamp.len(), "2026-12-01T22:59:52.266016Z".len(), "{stamp}");
            assert!(stamp.ends_with('Z') && humantime::parse_rfc3339(stamp).is_ok(), "{stamp}");
        }
        // Taken a moment apart, so the same up to the second unless a second ended in between: a second try then
        // falls within one second.
        let same_second = |(ours, tracings): (String, String)| ours[..19] == tracings[..19];
        assert!(same_second((ours, tracings)) || same_second(stamps()), "{:?}", stamps());
    }

    #[test]
    fn text_lines_quote_values_so_a_header_cannot_forge_fields() {
        use tracing_subscriber::{fmt, layer::SubscriberExt};
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::registry().with(
            fmt::layer()
                .with_writer(move || sink.clone())
                .with_ansi(false)
                .event_format(TextLines::new(fmt::format().with_ansi(false)))
                .fmt_fields(TextFields),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::error_span!("request", method = "GET", route = "/data");
            attach(
                &span,
                LogIds {
                    trace_id: TraceId::from_bytes([1; 16]),
                    span_id: SpanId::from_bytes([2; 8]),
                    request_id: "abc status=200 trace_id=forged".to_owned(),
                },
            );
            let _entered = span.enter();
            let from_client = "x\" outcome=ok \nforged=line";
            tracing::warn!(status = 502, user = "alice", event_id = from_client, error = %from_client, "data call failed");
        });
        let line = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(line.lines().count(), 1, "one line per event: {line}");
        assert!(line.contains(r#"request_id="abc status=200 trace_id=forged""#), "{line}");
        assert!(line.contains(r#"event_id="x\" outcome=ok \nforged=line""#), "{line}");
        assert!(line.contains(r#"error="x\" outcome=ok \nforged=line""#), "{line}");
        assert!(line.contains("status=502 user=alice"), "plain tokens stay unquoted: {line}");
        // Outside quoted values, exactly one trace_id field, the real one.
        let (mut outside, mut quoted, mut escaped) = (String::new(), false, false);
        for c in line.chars() {
            match (quoted, escaped, c) {
                (true, false, '\\') => escaped = true,
                (true, true, _) => escaped = false,
                (_, _, '"') => quoted = !quoted,
                (false, _, c) => outside.push(c),
                _ => {}
            }
        }
        let fields: Vec<_> = outside.split_whitespace().filter(|w| w.starts_with("trace_id=")).collect();
        assert_eq!(fields, [format!("trace_id={}", TraceId::from_bytes([1; 16]))], "{line}");
    }

    #[test]
    fn strings_are_escaped_as_json_parsers_expect() {
        for raw in ["plain", "quote \" and \\ backslash", "line\nbreak\ttab\r", "bell \u{7} del \u{7f}", "é ✓"] {
            let json = escaped(raw);
            assert_eq!(serde_json::from_str::<String>(&json).unwrap(), raw, "{json}");
        }
    }
}
