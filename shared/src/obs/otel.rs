//! OpenTelemetry tracing: OTLP/HTTP export of a server span per request and a client span per outgoing call, with
//! W3C trace context continued from incoming headers and handed on to the callee.
//!
//! Off unless an OTLP endpoint is configured. When off, no OpenTelemetry layer is installed, so spans cost what
//! they cost for logging alone.
//!
//! The settings mirror the standard `OTEL_*` environment variables (and are also flags, like every agent
//! setting). Those the agents parse are validated at startup; the rest of the standard set (for example
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_TRACES_HEADERS`)
//! is read by the OpenTelemetry SDK itself.

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use clap::{Args, ValueEnum};
use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{SpanId, TraceContextExt, TraceId, TracerProvider as _},
};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{IdGenerator, RandomIdGenerator, Sampler, SdkTracerProvider, Tracer},
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::propagation::TraceHeaders;

/// Bound on flushing buffered spans at shutdown, on top of the drain: Kubernetes' grace period must cover
/// SHUTDOWN_DELAY + DRAIN_TIMEOUT + this.
pub const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// OpenTelemetry settings (standard variable names).
#[derive(Debug, Clone, Default, Args)]
pub struct OtelArgs {
    /// Base URL of an OTLP/HTTP receiver, e.g. `http://otel-collector:4318`; spans go to its `/v1/traces`. Setting
    /// this (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) turns span export on; unset, nothing is exported or recorded.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_parser = parse_endpoint)]
    pub otel_exporter_otlp_endpoint: Option<String>,

    /// Full URL spans are posted to (used as is, no path appended); takes precedence over
    /// OTEL_EXPORTER_OTLP_ENDPOINT.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", value_parser = parse_endpoint)]
    pub otel_exporter_otlp_traces_endpoint: Option<String>,

    /// OTLP transport. Only `http/protobuf` is built in (a collector's port 4318); gRPC is refused rather than
    /// silently misdirected.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_enum, default_value_t = OtlpProtocol::HttpProtobuf)]
    pub otel_exporter_otlp_protocol: OtlpProtocol,

    /// Extra headers on every export request, as `key=value,key2=value2` (values percent-decoded), e.g. an API key.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_HEADERS", hide_env_values = true, value_parser = parse_headers)]
    pub otel_exporter_otlp_headers: Option<ExportHeaders>,

    /// `service.name` of the exported spans; defaults to the agent's name (`data` or `recommendation`) unless
    /// OTEL_RESOURCE_ATTRIBUTES names one.
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub otel_service_name: Option<String>,

    /// Which traces to record (W3C sampling: `parentbased_*` follow the caller's sampled flag).
    #[arg(long, env = "OTEL_TRACES_SAMPLER", value_enum, default_value_t = SamplerKind::ParentbasedAlwaysOn)]
    pub otel_traces_sampler: SamplerKind,

    /// Ratio between 0 and 1 for the `traceidratio` samplers (default 1).
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", value_parser = parse_ratio)]
    pub otel_traces_sampler_arg: Option<f64>,

    /// `true` turns OpenTelemetry off even when an endpoint is set.
    #[arg(long, env = "OTEL_SDK_DISABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub otel_sdk_disabled: bool,
}

/// OTLP transports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OtlpProtocol {
    /// Protobuf over HTTP.
    #[default]
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

/// The standard sampler names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SamplerKind {
    /// Record every trace.
    AlwaysOn,
    /// Record nothing.
    AlwaysOff,
    /// Record a ratio of traces, chosen by trace id.
    Traceidratio,
    /// Follow the caller's decision; record new traces.
    #[default]
    ParentbasedAlwaysOn,
    /// Follow the caller's decision; do not record new traces.
    ParentbasedAlwaysOff,
    /// Follow the caller's decision; record a ratio of new traces.
    ParentbasedTraceidratio,
}

/// Parsed `OTEL_EXPORTER_OTLP_HEADERS`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ExportHeaders(pub Vec<(String, String)>);

impl std::fmt::Debug for ExportHeaders {
    // Header values are typically credentials: show names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(name, _)| name)).finish()
    }
}

impl OtelArgs {
    /// Where spans are posted, if export is on.
    pub fn traces_endpoint(&self) -> Option<String> {
        if self.otel_sdk_disabled {
            return None;
        }
        self.otel_exporter_otlp_traces_endpoint.clone().or_else(|| {
            self.otel_exporter_otlp_endpoint.as_deref().map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
        })
    }

    fn sampler(&self) -> Sampler {
        let ratio = self.otel_traces_sampler_arg.unwrap_or(1.0);
        match self.otel_traces_sampler {
            SamplerKind::AlwaysOn => Sampler::AlwaysOn,
            SamplerKind::AlwaysOff => Sampler::AlwaysOff,
            SamplerKind::Traceidratio => Sampler::TraceIdRatioBased(ratio),
            SamplerKind::ParentbasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            SamplerKind::ParentbasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            SamplerKind::ParentbasedTraceidratio => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))),
        }
    }

    fn resource(&self, agent: &'static str) -> Resource {
        let version = KeyValue::new("service.version", env!("CARGO_PKG_VERSION"));
        let named = |name: String| Resource::builder().with_service_name(name).with_attribute(version.clone()).build();
        if let Some(name) = &self.otel_service_name {
            return named(name.clone());
        }
        let detected = Resource::builder().with_attribute(version.clone()).build();
        // The SDK reports `unknown_service...` when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names it.
        let has_name = detected
            .get(&opentelemetry::Key::new("service.name"))
            .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
        if has_name { detected } else { named(agent.to_owned()) }
    }
}

fn parse_endpoint(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    let uri: Uri = raw.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(raw.to_owned()),
        _ => Err("expected an http:// or https:// URL with a host, e.g. http://otel-collector:4318".to_owned()),
    }
}

fn parse_ratio(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err("expected a number between 0 and 1".to_owned()),
    }
}

fn parse_headers(raw: &str) -> Result<ExportHeaders, String> {
    let mut headers = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').ok_or("expected key=value pairs separated by commas")?;
        let (name, value) = (percent_decode(name.trim())?, percent_decode(value.trim())?);
        HeaderName::try_from(name.as_str()).map_err(|_| "a header name is not valid".to_owned())?;
        HeaderValue::try_from(value.as_str()).map_err(|_| "a header value is not valid".to_owned())?;
        headers.push((name, value));
    }
    Ok(ExportHeaders(headers))
}

/// Decodes `%XX` escapes, refusing what the specification does not allow: a cut-short or non-hexadecimal escape
/// (which `percent_encoding` would pass through as is), or bytes that are not UTF-8.
fn percent_decode(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    for (i, _) in raw.match_indices('%') {
        let escape = bytes.get(i + 1..i + 3).ok_or("a % escape is cut short")?;
        if !escape.iter().all(u8::is_ascii_hexdigit) {
            return Err("a % escape is not hexadecimal".to_owned());
        }
    }
    percent_encoding::percent_decode(bytes)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| "a %-decoded value is not UTF-8".to_owned())
}

/// An installed tracer provider; shut it down at exit to flush buffered spans.
#[derive(Debug)]
pub struct Exporting {
    provider: SdkTracerProvider,
    pub(crate) tracer: Tracer,
}

impl Exporting {
    /// Flushes buffered spans and stops the exporter thread, waiting at most [`SHUTDOWN_FLUSH_TIMEOUT`].
    pub async fn shutdown(self) {
        let provider = self.provider;
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_FLUSH_TIMEOUT)).await;
        match flushed {
            Ok(Ok(())) => tracing::debug!("spans flushed"),
            Ok(Err(err)) => tracing::warn!(error = %err, "flushing spans at shutdown failed"),
            Err(err) => tracing::warn!(error = %err, "flushing spans at shutdown panicked"),
        }
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: the OpenTelemetry layer is installed and incoming context is continued.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn mark_enabled() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Builds the exporter and tracer provider when an endpoint is configured; `Ok(None)` when export is off.
pub fn start(
    args: &OtelArgs,
    agent: &'static str,
) -> Result<Option<Exporting>, opentelemetry_otlp::ExporterBuildError> {
    let Some(endpoint) = args.traces_endpoint() else { return Ok(None) };
    // The exporter's HTTP client uses rustls without a built-in provider (as every client here does).
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
    let headers: HashMap<String, String> =
        args.otel_exporter_otlp_headers.clone().unwrap_or_default().0.into_iter().collect();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_headers(headers)
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(args.sampler())
        .with_resource(args.resource(agent))
        .build();
    let tracer = provider.tracer("agent-mesh");
    Ok(Some(Exporting { provider, tracer }))
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// Continues the caller's W3C trace context in `span` (the server span of a request) and returns the ids it got.
///
/// `None` when the span is not seen by the OpenTelemetry layer (export off, or the span filtered out).
pub fn continue_trace(span: &Span, headers: &HeaderMap) -> Option<(TraceId, SpanId)> {
    if !enabled() {
        return None;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    span.set_parent(parent).ok()?;
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| (span_context.trace_id(), span_context.span_id()))
}

/// Ids for a request's log lines when no OpenTelemetry span exists: the caller's trace id (W3C `traceparent`,
/// else B3) so lines join the caller's trace, else a fresh random one; and a fresh span id for this hop.
pub fn ids_from_headers(headers: &HeaderMap) -> (TraceId, SpanId) {
    let trace_id = trace_id_from_traceparent(headers)
        .or_else(|| trace_id_from_b3(headers))
        .unwrap_or_else(|| RandomIdGenerator::default().new_trace_id());
    (trace_id, RandomIdGenerator::default().new_span_id())
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3: HeaderName = HeaderName::from_static("b3");

// By `HeaderName`, not `&str`: a name given as text is parsed and hashed again at every lookup.
fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// A B3 trace id: 16 or 32 hex digits, not all zero (64-bit ids are zero-extended, as B3 specifies).
fn nonzero_trace_id(hex: &str) -> Option<TraceId> {
    if !matches!(hex.len(), 16 | 32) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(hex, 16).ok().filter(|id| *id != 0).map(TraceId::from)
}

fn trace_id_from_traceparent(headers: &HeaderMap) -> Option<TraceId> {
    // Most requests come without one: no propagator, no context to build.
    if !headers.contains_key(TRACEPARENT) {
        return None;
    }
    let context = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id())
}

fn trace_id_from_b3(headers: &HeaderMap) -> Option<TraceId> {
    header(headers, &B3_TRACE_ID)
        .and_then(nonzero_trace_id)
        .or_else(|| header(headers, &B3).and_then(|b3| b3.split('-').next()).and_then(nonzero_trace_id))
}

/// The trace headers for a call made inside `span`.
///
/// With export on, `traceparent`/`tracestate` are replaced by `span`'s own context, so the callee's server span
/// becomes a child of `span`; the other propagated headers (request id, baggage, B3) pass through untouched.
/// With export off, `incoming` is returned as is.
pub fn outgoing_headers<'a>(span: &Span, incoming: &'a TraceHeaders) -> Cow<'a, TraceHeaders> {
    if !enabled() {
        return Cow::Borrowed(incoming);
    }
    let context: Context = span.context();
    if !context.span().span_context().is_valid() {
        return Cow::Borrowed(incoming);
    }
    let mut headers = incoming.headers().clone();
    headers.remove("traceparent");
    headers.remove("tracestate");
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(&mut headers));
    Cow::Owned(TraceHeaders::from_headers(&headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn log_trace_id_follows_traceparent_then_b3_then_is_generated() {
        let w3c = headers(&[
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ]);
        assert_eq!(ids_from_headers(&w3c).0.to_string(), "0af7651916cd43dd8448eb211c80319c");

        let b3 = headers(&[("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7")]);
        assert_eq!(ids_from_headers(&b3).0.to_string(), "80f198ee56343ba864fe8b2a57d3eff7");
        let b3_short = headers(&[("b3", "a3ce929d0e0e4736-00f067aa0ba902b7-1")]);
        assert_eq!(ids_from_headers(&b3_short).0.to_string(), "0000000000000000a3ce929d0e0e4736");

        let broken = headers(&[("traceparent", "00-00000000000000000000000000000000-b7ad6b7169203331-01")]);
        let (generated, span) = ids_from_headers(&broken);
        assert_ne!(generated, TraceId::INVALID);
        assert_ne!(span, SpanId::INVALID);
        assert_ne!(ids_from_headers(&HeaderMap::new()).0, generated, "fresh ids per request");
    }

    #[test]
    fn export_headers_are_split_and_percent_decoded() {
        let parsed = parse_headers("api-key=s%3Dcret, x-tenant = blue ").unwrap();
        assert_eq!(parsed.0, vec![("api-key".into(), "s=cret".into()), ("x-tenant".into(), "blue".into())]);
        assert!(format!("{parsed:?}").contains("api-key") && !format!("{parsed:?}").contains("cret"));
        assert!(parse_headers("novalue").is_err());
        assert!(parse_headers("bad name=1").is_err());
        assert!(parse_headers("k=%zz").is_err());
    }

    #[test]
    fn endpoints_resolve_like_the_specification_says() {
        let mut args = OtelArgs::default();
        assert_eq!(args.traces_endpoint(), None);
        args.otel_exporter_otlp_endpoint = Some("http://collector:4318/".into());
        assert_eq!(args.traces_endpoint().as_deref(), Some("http://collector:4318/v1/traces"));
        args.otel_exporter_otlp_traces_endpoint = Some("http://other:4318/custom".into());
        assert_eq!(args.traces_endpoint().as_deref(), Some("http://other:4318/custom"));
        args.otel_sdk_disabled = true;
        assert_eq!(args.traces_endpoint(), None);
        assert!(parse_endpoint("collector:4318").is_err());
        assert!(parse_endpoint("ftp://collector").is_err());
        assert!(parse_ratio("1.5").is_err() && parse_ratio("0.25").is_ok());
    }
}
