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
        w.write_str("\",\"level\":\"")?;
        w.write_str(meta.level().as_str())?;
        w.write_char('"')?;
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
                    w.write_str(",\"trace_id\":\"")?;
                    w.write_str(hex(&mut [0; 32], &ids.trace_id.to_bytes()))?;
                    w.write_str("\",\"span_id\":\"")?;
                    w.write_str(hex(&mut [0; 16], &ids.span_id.to_bytes()))?;
                    w.write_str("\",\"request_id\":")?;
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

/// `bytes` in lowercase hex, as the ids' `Display` writes them, written into `out` (twice as long as `bytes`)
/// without going through `fmt`.
fn hex<'a>(out: &'a mut [u8], bytes: &[u8]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    std::str::from_utf8(out).expect("hex digits")
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
        if let Some((whole, thousandths)) = as_thousandths(value) {
            self.pair(field, |w| write_thousandths(w, whole, thousandths))
        } else if value.is_finite() {
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

/// `value` as whole units and thousandths when it is exactly what dividing a whole number below 2^40 by 1000 gives
/// (as the latencies in milliseconds are made, from microseconds): printing it is then integer work, and prints
/// what `{value}` prints. (`{value}` prints the shortest decimal that reads back as `value`; for such a value that is
/// the quotient's own decimal, since any other decimal of at most three places lies at least 0.001 away, and the
/// gap to the next double is far smaller below 2^30.)
fn as_thousandths(value: f64) -> Option<(u64, u64)> {
    if !(value.is_sign_positive() && value < (1u64 << 30) as f64) {
        return None;
    }
    let scaled = (value * 1000.0).round();
    ((scaled / 1000.0) == value).then_some((scaled as u64 / 1000, scaled as u64 % 1000))
}

/// Writes `whole.thousandths` as `{}` writes the `f64`: no trailing zeros, no point for a whole number.
fn write_thousandths(w: &mut impl fmt::Write, whole: u64, thousandths: u64) -> fmt::Result {
    // Written from the end: at most 10 digits for the whole part (below 2^30), then a point and three digits.
    let mut text = [b'0'; 16];
    let (mut start, mut rest) = (12, whole);
    loop {
        start -= 1;
        text[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let mut end = 12;
    if thousandths != 0 {
        text[12] = b'.';
        text[13] = b'0' + (thousandths / 100) as u8;
        text[14] = b'0' + (thousandths / 10 % 10) as u8;
        text[15] = b'0' + (thousandths % 10) as u8;
        // Trailing zeros are left out, as `{}` leaves them out.
        end = 16 - text[13..].iter().rev().take_while(|&&digit| digit == b'0').count();
    }
    w.write_str(std::str::from_utf8(&text[start..end]).expect("ASCII digits"))
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

/// Index of the first byte of `s` that JSON needs escaped (`"`, `\\`, a control character, DEL), if any. Eight
/// bytes at a time: nearly every string logged needs no escaping, and a byte-by-byte match was a tenth of a
/// request's log line (`bench/callgrind.sh`).
fn first_to_escape(s: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Exact for "some byte of `v` is zero" (a borrow only starts at a zero byte).
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS != 0;
    let mut chunks = s.chunks_exact(8);
    for (n, chunk) in chunks.by_ref().enumerate() {
        let v = u64::from_ne_bytes(chunk.try_into().expect("chunks of eight"));
        // Bytes below 0x20: subtracting 0x20 borrows through the high bit only for them (bytes >= 0x80 are masked
        // out by `!v`).
        let control = v.wrapping_sub(ONES * 0x20) & !v & HIGHS != 0;
        let quote = has_zero(v ^ (ONES * u64::from(b'"')));
        let backslash = has_zero(v ^ (ONES * u64::from(b'\\')));
        if (control || quote || backslash || has_zero(v ^ (ONES * 0x7f)))
            && let Some(i) = chunk.iter().position(|&b| needs_escape(b))
        {
            return Some(n * 8 + i);
        }
    }
    let rest = chunks.remainder();
    rest.iter().position(|&b| needs_escape(b)).map(|i| s.len() - rest.len() + i)
}

fn needs_escape(byte: u8) -> bool {
    matches!(byte, b'"' | b'\\' | 0..0x20 | 0x7f)
}

impl<W: fmt::Write> fmt::Write for JsonEscape<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let Some(first) = first_to_escape(s.as_bytes()) else { return self.0.write_str(s) };
        let mut start = 0;
        for (i, byte) in s.bytes().enumerate().skip(first) {
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
    fn latencies_print_as_the_standard_formatter_prints_them() {
        let printed = |value: f64| {
            let mut out = String::new();
            let (whole, thousandths) = as_thousandths(value).expect("a whole number of thousandths");
            write_thousandths(&mut out, whole, thousandths).unwrap();
            out
        };
        // Every latency below 200 ms, and a spread of larger ones up to days, as `log_response` makes them.
        let micros = (0..200_000u64).chain((0..20_000).map(|i| i * 50_038_883 + 999));
        for micros in micros {
            let value = micros as f64 / 1000.0;
            assert_eq!(printed(value), format!("{value}"), "{micros} µs");
        }
        for other in [0.0001, 1.0 / 3.0, -1.5, -0.0, f64::from(1u32 << 30), 1e300] {
            assert!(as_thousandths(other).is_none(), "{other}");
        }
    }

    #[test]
    fn ids_are_written_as_their_display_writes_them() {
        for seed in [0u8, 1, 0x5a, 0xff] {
            let trace_id = TraceId::from_bytes(std::array::from_fn(|i| seed.wrapping_mul(i as u8 + 7)));
            let span_id = SpanId::from_bytes(std::array::from_fn(|i| seed.wrapping_add(i as u8 * 31)));
            assert_eq!(hex(&mut [0; 32], &trace_id.to_bytes()), trace_id.to_string());
            assert_eq!(hex(&mut [0; 16], &span_id.to_bytes()), span_id.to_string());
        }
    }

    #[test]
    fn the_fast_scan_finds_every_byte_json_escapes() {
        let mut bytes: Vec<u8> = b"0123456789abcdefghijklmnopqrstuvwxyz".to_vec();
        for bad in [b'"', b'\\', 0x00, 0x1f, 0x7f] {
            for at in 0..bytes.len() {
                let mut s = bytes.clone();
                s[at] = bad;
                assert_eq!(first_to_escape(&s), Some(at), "{bad:#x} at {at}");
            }
        }
        bytes.extend("é ✓ ~ \u{80}".bytes());
        assert_eq!(first_to_escape(&bytes), None);
    }

    #[test]
    fn strings_are_escaped_as_json_parsers_expect() {
        for raw in ["plain", "quote \" and \\ backslash", "line\nbreak\ttab\r", "bell \u{7} del \u{7f}", "é ✓"] {
            let json = escaped(raw);
            assert_eq!(serde_json::from_str::<String>(&json).unwrap(), raw, "{json}");
        }
    }
}
