//! Trace context and correlation ids, with the real binaries as processes (OpenTelemetry's tracer provider is
//! process-wide, so each agent must be its own process) and a real OTLP/HTTP receiver.

use std::time::Duration;

use agent_tests::{
    AgentProcess, B3_CONTEXT, StandIn, client,
    otlp::{ExportedSpan, OtlpReceiver, SpanKind},
};
use serde_json::Value;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01")
}

/// SIGTERM, then a bounded wait for exit status 0 (which comes after the span flush).
fn stop(agent: &mut AgentProcess) {
    agent.terminate();
    let code = tokio::task::block_in_place(|| agent.wait_exit(Duration::from_secs(15)));
    assert_eq!(code, Some(0), "agent did not exit cleanly within 15 s");
}

/// The JSON log lines an agent printed after its startup line (call after it exited: then all are in).
fn log_lines(agent: &AgentProcess) -> Vec<Value> {
    agent.lines.try_iter().filter_map(|line| serde_json::from_str(&line).ok()).collect()
}

fn completed_line<'a>(lines: &'a [Value], route: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["message"] == "request completed" && l["span"]["route"] == route)
        .unwrap_or_else(|| panic!("no 'request completed' line for {route} in {lines:#?}"))
}

fn one<'a>(spans: &'a [ExportedSpan], service: &str, kind: SpanKind) -> &'a ExportedSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.service == service && s.kind == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind:?} span from {service}, got {spans:#?}");
    found[0]
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_the_caller_both_agents_and_their_log_lines() {
    let mut receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    // A batch delay far beyond the test: spans can only arrive through the flush at shutdown, which is covered too.
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-key=s3cret"),
    ];
    let mut data = AgentProcess::start("data", &otel);
    let data_url = format!("http://{}", data.addr);
    let mut reco_env = otel.to_vec();
    reco_env.push(("DATA_URL", &data_url));
    let mut reco = AgentProcess::start("recommendation", &reco_env);

    // Probes and scrapes must produce neither spans nor info lines.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let status = client().get(format!("http://{}{path}", data.addr)).send().await.unwrap().status();
        assert!(status.is_success(), "{path}: {status}");
    }
    let response = client()
        .get(format!("http://{}/recommend", reco.addr))
        .header("traceparent", traceparent())
        .header("x-request-id", "otel-req-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    stop(&mut reco);
    stop(&mut data);

    let exports = receiver.received();
    assert!(!exports.is_empty(), "nothing was exported");
    for export in &exports {
        assert_eq!(export.headers["x-collector-key"], "s3cret", "OTEL_EXPORTER_OTLP_HEADERS not sent");
        assert_eq!(export.headers["content-type"], "application/x-protobuf");
    }
    let spans: Vec<ExportedSpan> = exports.into_iter().flat_map(|e| e.spans).collect();
    assert_eq!(spans.len(), 3, "one server span per agent and one client span, nothing for probes: {spans:#?}");

    let reco_server = one(&spans, "recommendation", SpanKind::Server);
    assert_eq!(reco_server.name, "GET /recommend");
    assert_eq!(reco_server.trace_id, TRACE_ID, "the caller's trace is continued");
    assert_eq!(reco_server.parent_span_id, CALLER_SPAN_ID);
    assert_eq!(reco_server.attribute("request_id"), Some("otel-req-1"));
    assert_eq!(reco_server.attribute("status"), Some("200"));

    let reco_client = one(&spans, "recommendation", SpanKind::Client);
    assert_eq!(reco_client.trace_id, TRACE_ID);
    assert_eq!(reco_client.parent_span_id, reco_server.span_id, "the client span is a child of the server span");
    assert_eq!(reco_client.attribute("outcome"), Some("ok"));
    assert_eq!(reco_client.attribute("data_mode"), Some("direct"));

    let data_server = one(&spans, "data", SpanKind::Server);
    assert_eq!(data_server.name, "GET /data");
    assert_eq!(data_server.trace_id, TRACE_ID, "data's span shares the trace id");
    assert_eq!(data_server.parent_span_id, reco_client.span_id, "data's span is a child of the client span");
    assert_eq!(data_server.attribute("request_id"), Some("otel-req-1"));

    let data_lines = log_lines(&data);
    let data_line = completed_line(&data_lines, "/data");
    assert_eq!(data_line["trace_id"], TRACE_ID, "data's log line carries the trace id");
    assert_eq!(data_line["span_id"], data_server.span_id.as_str(), "and its own span's id");
    assert_eq!(data_line["request_id"], "otel-req-1");
    assert!(
        !data_lines
            .iter()
            .any(|l| ["/healthz", "/readyz", "/metrics"].contains(&l["span"]["route"].as_str().unwrap_or(""))),
        "probe lines at info: {data_lines:#?}"
    );
    let reco_lines = log_lines(&reco);
    let reco_line = completed_line(&reco_lines, "/recommend");
    assert_eq!(reco_line["trace_id"], TRACE_ID);
    assert_eq!(reco_line["span_id"], reco_server.span_id.as_str());
    assert_eq!(reco_line["request_id"], "otel-req-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_otel_data_gets_the_client_span_as_parent_and_every_other_trace_header_unchanged() {
    let mut receiver = OtlpReceiver::start().await;
    let (data, mut seen) = StandIn::recording_data().await;
    let (endpoint, data_url) = (receiver.endpoint(), data.base_url().to_string());
    let mut reco = AgentProcess::start(
        "recommendation",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "600000"), ("DATA_URL", &data_url)],
    );
    let passed_through: Vec<_> =
        [("x-request-id", "req-b3"), ("baggage", "user=alice")].into_iter().chain(B3_CONTEXT).collect();
    let mut request = client()
        .get(format!("http://{}/recommend", reco.addr))
        .header("traceparent", traceparent())
        .header("tracestate", "vendor=opaque");
    for &(name, value) in &passed_through {
        request = request.header(name, value);
    }
    assert_eq!(request.send().await.unwrap().status(), 200);
    let received = seen.recv().await.unwrap();
    stop(&mut reco);

    let spans: Vec<ExportedSpan> = receiver.received().into_iter().flat_map(|e| e.spans).collect();
    let client_span = one(&spans, "recommendation", SpanKind::Client);
    assert_eq!(
        received["traceparent"].to_str().unwrap(),
        format!("00-{TRACE_ID}-{}-01", client_span.span_id),
        "data must see the client span as its parent"
    );
    assert_eq!(received["tracestate"], "vendor=opaque");
    for &(name, value) in &passed_through {
        assert_eq!(received.get(name).map(|v| v.to_str().unwrap()), Some(value), "{name} changed or dropped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_otel_both_agents_log_the_callers_trace_id_and_warnings_keep_their_ids() {
    let mut data = AgentProcess::start("data", &[]);
    let data_url = format!("http://{}", data.addr);
    let mut reco = AgentProcess::start("recommendation", &[("DATA_URL", &data_url)]);
    // Warnings only (plus the startup line the harness waits for): a failing request's warnings keep their ids.
    let quiet = "warn,recommendation=info,recommendation::data_client=warn";
    let mut quiet_reco =
        AgentProcess::start("recommendation", &[("DATA_URL", "http://127.0.0.1:1"), ("RUST_LOG", quiet)]);

    let base = format!("http://{}/recommend", reco.addr);
    let w3c = client().get(&base).header("traceparent", traceparent()).header("x-request-id", "w3c").send();
    assert_eq!(w3c.await.unwrap().status(), 200);
    let b3 =
        client().get(&base).header("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7").header("x-request-id", "b3");
    assert_eq!(b3.send().await.unwrap().status(), 200);
    let bare = client().get(&base).header("x-request-id", "bare").send();
    assert_eq!(bare.await.unwrap().status(), 200);
    let failing = client().get(format!("http://{}/recommend", quiet_reco.addr)).header("traceparent", traceparent());
    assert_eq!(failing.header("x-request-id", "failing").send().await.unwrap().status(), 503);
    for agent in [&mut reco, &mut data, &mut quiet_reco] {
        stop(agent);
    }

    let (reco_lines, data_lines) = (log_lines(&reco), log_lines(&data));
    let by_request = |lines: &[Value], id: &str, route: &str| -> Value {
        lines
            .iter()
            .find(|l| l["message"] == "request completed" && l["request_id"] == id && l["span"]["route"] == route)
            .cloned()
            .unwrap_or_else(|| panic!("no line for {id} on {route}: {lines:#?}"))
    };
    for (id, expected) in [("w3c", Some(TRACE_ID)), ("b3", Some("80f198ee56343ba864fe8b2a57d3eff7")), ("bare", None)] {
        let reco_line = by_request(&reco_lines, id, "/recommend");
        let data_line = by_request(&data_lines, id, "/data");
        for line in [&reco_line, &data_line] {
            assert!(is_hex(line["trace_id"].as_str().unwrap(), 32), "{line}");
            assert!(is_hex(line["span_id"].as_str().unwrap(), 16), "{line}");
            assert_ne!(line["trace_id"], "00000000000000000000000000000000");
        }
        assert_ne!(reco_line["span_id"], data_line["span_id"], "each hop has its own span id");
        if let Some(trace_id) = expected {
            assert_eq!(reco_line["trace_id"], trace_id, "{id}: recommendation joins the caller's trace");
            assert_eq!(data_line["trace_id"], trace_id, "{id}: data joins it too, through the propagated headers");
        }
    }
    let other_request = by_request(&reco_lines, "w3c", "/recommend");
    assert_ne!(by_request(&reco_lines, "bare", "/recommend")["trace_id"], other_request["trace_id"]);

    let quiet_lines = log_lines(&quiet_reco);
    assert!(
        quiet_lines.iter().all(|l| l["level"] != "INFO" || l["target"] == "recommendation"),
        "info lines despite the filter: {quiet_lines:#?}"
    );
    let warnings: Vec<_> = quiet_lines.iter().filter(|l| l["request_id"] == "failing").collect();
    assert!(warnings.len() >= 2, "expected the data-call warning and the 503 line: {quiet_lines:#?}");
    for line in warnings {
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["trace_id"], TRACE_ID, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sampler_setting_is_honoured_and_unsampled_requests_still_have_log_ids() {
    let mut receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let mut data = AgentProcess::start(
        "data",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_TRACES_SAMPLER", "always_off"),
            ("OTEL_SERVICE_NAME", "x"),
        ],
    );
    let response = client().get(format!("http://{}/data", data.addr)).header("traceparent", traceparent()).send();
    assert_eq!(response.await.unwrap().status(), 200);
    stop(&mut data);

    let spans: Vec<ExportedSpan> = receiver.received().into_iter().flat_map(|e| e.spans).collect();
    assert!(spans.is_empty(), "always_off exported {spans:#?}");
    let lines = log_lines(&data);
    let line = completed_line(&lines, "/data");
    assert_eq!(line["trace_id"], TRACE_ID);
    assert!(is_hex(line["span_id"].as_str().unwrap(), 16));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_name_setting_names_the_exported_spans() {
    let mut receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let mut data = AgentProcess::start(
        "data",
        &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &format!("{endpoint}/v1/traces")), ("OTEL_SERVICE_NAME", "data-eu")],
    );
    assert_eq!(client().get(format!("http://{}/data", data.addr)).send().await.unwrap().status(), 200);
    stop(&mut data);

    let spans: Vec<ExportedSpan> = receiver.received().into_iter().flat_map(|e| e.spans).collect();
    let span = one(&spans, "data-eu", SpanKind::Server);
    assert!(span.parent_span_id.is_empty(), "no incoming context: a new trace");
    assert!(is_hex(&span.trace_id, 32));
}
