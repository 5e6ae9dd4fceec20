//! A real OTLP/HTTP trace receiver for tests: `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`, as a
//! collector's port 4318 accepts it. Every decoded span is sent to the test with its service name.

use std::fmt::Write as _;

use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, StatusCode, header::CONTENT_TYPE},
    routing::post,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::{AnyValue, KeyValue, any_value::Value},
};
use prost::Message;
use tokio::sync::mpsc;

use crate::StandIn;

pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

/// One exported span, flattened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedSpan {
    /// `service.name` of the resource that sent it.
    pub service: String,
    /// Span name.
    pub name: String,
    /// Server, client, ...
    pub kind: SpanKind,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 lowercase hex digits, empty for a root span.
    pub parent_span_id: String,
    /// String attributes (others are rendered with Debug).
    pub attributes: Vec<(String, String)>,
}

impl ExportedSpan {
    /// The value of attribute `key`, if present.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// What one export request carried.
#[derive(Debug, Clone)]
pub struct Export {
    /// The request's headers (e.g. to check OTEL_EXPORTER_OTLP_HEADERS).
    pub headers: HeaderMap,
    /// Its spans.
    pub spans: Vec<ExportedSpan>,
}

/// The running receiver.
pub struct OtlpReceiver {
    server: StandIn,
    /// Exports in arrival order.
    pub exports: mpsc::UnboundedReceiver<Export>,
}

impl OtlpReceiver {
    /// Serves the receiver on a fresh loopback port.
    pub async fn start() -> Self {
        let (tx, exports) = mpsc::unbounded_channel();
        let router = Router::new().route(
            "/v1/traces",
            post(move |headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                async move {
                    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                        return (StatusCode::BAD_REQUEST, [(CONTENT_TYPE, "text/plain")], b"not protobuf".to_vec());
                    };
                    let _ = tx.send(Export { headers, spans: flatten(request) });
                    let answer = ExportTraceServiceResponse::default().encode_to_vec();
                    (StatusCode::OK, [(CONTENT_TYPE, "application/x-protobuf")], answer)
                }
            }),
        );
        Self { server: StandIn::serve(router).await, exports }
    }

    /// Base URL, the value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Everything received so far, without waiting.
    pub fn received(&mut self) -> Vec<Export> {
        let mut all = Vec::new();
        while let Ok(export) = self.exports.try_recv() {
            all.push(export);
        }
        all
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter().map(|kv| (kv.key.clone(), text(kv.value.as_ref()))).collect()
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<ExportedSpan> {
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.map(|r| attributes(&r.attributes)).unwrap_or_default();
        let service = resource.iter().find(|(k, _)| k == "service.name").map(|(_, v)| v.clone()).unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                spans.push(ExportedSpan {
                    service: service.clone(),
                    kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                    name: span.name,
                });
            }
        }
    }
    spans
}
