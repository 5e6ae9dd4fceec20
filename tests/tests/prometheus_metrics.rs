//! Prometheus metrics: labels, data-call outcomes and the exposition, in-process (this test binary installs the
//! process-wide recorder, which both in-process agents then share) and with the real binaries.

use std::{collections::HashMap, process::Command};

use agent_tests::{AgentProcess, binary, client, spawn_data, spawn_recommendation};
use recommendation::config::Config;

/// `series -> value` of a text exposition (comments skipped).
fn parse(exposition: &str) -> HashMap<String, f64> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("malformed sample line {l:?}"));
            (series.to_owned(), value.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")))
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples.get(series).unwrap_or_else(|| {
        let mut known: Vec<_> = samples.keys().collect();
        known.sort();
        panic!("{series} missing; exposed: {known:#?}")
    })
}

#[tokio::test]
async fn red_metrics_use_route_templates_and_data_calls_are_counted_by_outcome() {
    shared::obs::metrics::install("agent-tests");
    let data = spawn_data().await;
    let reco = spawn_recommendation(Config::for_tests(data.base_url())).await;
    let get = |path: &str| client().get(reco.url(path)).send();

    for _ in 0..2 {
        assert_eq!(get("/recommend").await.unwrap().status(), 200);
    }
    assert_eq!(get("/recommend?limit=0").await.unwrap().status(), 422);
    assert_eq!(get("/no/such/path/12345").await.unwrap().status(), 404);
    assert_eq!(client().post(reco.url("/recommend")).send().await.unwrap().status(), 405);
    assert_eq!(client().request("BREW".parse().unwrap(), reco.url("/recommend")).send().await.unwrap().status(), 405);
    data.stop().await;
    assert_eq!(get("/recommend").await.unwrap().status(), 503);

    let response = get("/metrics").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let text = response.text().await.unwrap();
    assert!(!text.contains("/no/such/path"), "a raw path leaked into a label:\n{text}");
    let samples = parse(&text);

    let requests = |labels: &str| value(&samples, &format!("http_server_requests_total{{{labels}}}"));
    assert!(requests(r#"route="/recommend",method="GET",status_class="2xx""#) >= 2.0);
    assert!(requests(r#"route="/recommend",method="GET",status_class="4xx""#) >= 1.0);
    assert!(requests(r#"route="/recommend",method="GET",status_class="5xx""#) >= 1.0);
    assert!(requests(r#"route="unmatched",method="GET",status_class="4xx""#) >= 1.0);
    assert!(requests(r#"route="/recommend",method="POST",status_class="4xx""#) >= 1.0);
    assert!(requests(r#"route="/recommend",method="other",status_class="4xx""#) >= 1.0, "custom methods are folded");
    assert!(requests(r#"route="/data",method="GET",status_class="2xx""#) >= 2.0);

    let ok_bucket =
        r#"http_server_request_duration_seconds_bucket{route="/recommend",method="GET",status_class="2xx",le="+Inf"}"#;
    assert!(value(&samples, ok_bucket) >= 2.0);
    assert!(
        value(
            &samples,
            r#"http_server_request_duration_seconds_bucket{route="/recommend",method="GET",status_class="2xx",le="0.0005"}"#
        ) >= 0.0
    );
    assert_eq!(value(&samples, r#"http_server_requests_in_flight{route="/recommend",method="GET"}"#), 0.0);
    // The scrape itself is in flight while it renders.
    assert_eq!(value(&samples, r#"http_server_requests_in_flight{route="/metrics",method="GET"}"#), 1.0);

    assert!(value(&samples, r#"data_calls_total{mode="direct",outcome="ok"}"#) >= 2.0);
    assert!(value(&samples, r#"data_calls_total{mode="direct",outcome="unreachable"}"#) >= 1.0);
    assert!(value(&samples, r#"data_call_duration_seconds_bucket{mode="direct",outcome="ok",le="+Inf"}"#) >= 2.0);
    assert!(value(&samples, r#"data_call_duration_seconds_count{mode="direct",outcome="unreachable"}"#) >= 1.0);

    let build_info = samples
        .iter()
        .find(|(k, _)| k.starts_with(r#"agent_build_info{agent="agent-tests",version="0.1.0",revision=""#));
    assert_eq!(build_info.map(|(_, v)| *v), Some(1.0), "agent_build_info missing");
    assert!(value(&samples, "process_resident_memory_bytes") > 0.0);
    assert!(value(&samples, "process_open_fds") > 0.0);
    for metric in ["http_server_requests_total", "http_server_request_duration_seconds", "data_calls_total"] {
        assert!(text.contains(&format!("# HELP {metric} ")), "{metric} has no HELP line");
    }
    assert!(text.contains("# TYPE http_server_request_duration_seconds histogram"));
}

#[tokio::test]
async fn metrics_can_have_their_own_port_or_be_switched_off() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port().to_string()
    };
    let data = AgentProcess::start("data", &[("METRICS_PORT", &port)]);
    assert_eq!(client().get(format!("http://{}/data", data.addr)).send().await.unwrap().status(), 200);
    let scraped = client().get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    let text = scraped.text().await.unwrap();
    assert!(text.contains(r#"http_server_requests_total{route="/data",method="GET",status_class="2xx"} 1"#), "{text}");
    assert!(text.contains(r#"agent_build_info{agent="data""#), "{text}");
    let only_metrics = client().get(format!("http://127.0.0.1:{port}/data")).send().await.unwrap();
    assert_eq!(only_metrics.status(), 404, "the metrics port serves /metrics only");
    let main_port = client().get(format!("http://{}/metrics", data.addr)).send().await.unwrap();
    assert_eq!(main_port.status(), 200, "/metrics stays on the service port too");

    let off = AgentProcess::start("data", &[("METRICS_ENABLED", "false")]);
    assert_eq!(client().get(format!("http://{}/data", off.addr)).send().await.unwrap().status(), 200);
    let scraped = client().get(format!("http://{}/metrics", off.addr)).send().await.unwrap();
    assert_eq!(scraped.status(), 404);
    assert_eq!(scraped.text().await.unwrap(), r#"{"detail":"Not Found"}"#);
}

#[tokio::test]
async fn the_metrics_port_closes_slow_and_silent_clients_as_the_service_port_does() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let data = AgentProcess::start("data", &[("METRICS_PORT", &port.to_string()), ("HEADER_READ_TIMEOUT", "300ms")]);
    let metrics_addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    agent_tests::assert_slow_clients_cut(metrics_addr, std::time::Duration::from_millis(300)).await;
    agent_tests::assert_slow_clients_cut(data.addr, std::time::Duration::from_millis(300)).await;

    // A flood of connections to the metrics port: beyond its bound they are closed at once, so they cannot take the
    // process's file descriptors; the service port is not affected.
    let mut silent = Vec::new();
    for _ in 0..shared::agent::METRICS_PORT_MAX_CONNECTIONS {
        silent.push(tokio::net::TcpStream::connect(metrics_addr).await.unwrap());
    }
    let mut one_more = tokio::net::TcpStream::connect(metrics_addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut one_more, &mut rest).await.unwrap();
    assert!(started.elapsed() < std::time::Duration::from_millis(200), "closed after {:?}", started.elapsed());
    assert_eq!(client().get(format!("http://{}/data", data.addr)).send().await.unwrap().status(), 200);
    drop(silent);
}

#[test]
fn telemetry_settings_are_documented_and_bad_values_exit_2_naming_them() {
    let settings = [
        "METRICS_ENABLED",
        "METRICS_PORT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_SERVICE_NAME",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_SDK_DISABLED",
    ];
    for bin in ["data", "recommendation"] {
        let help = Command::new(binary(bin)).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        for env in settings {
            assert!(help.contains(&format!("[env: {env}")), "{bin} --help does not document {env}");
        }
    }
    for (env, value) in [
        ("METRICS_ENABLED", "maybe"),
        ("METRICS_PORT", "0"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
    ] {
        let output = Command::new(binary("data")).env_clear().env(env, value).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{env}={value}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{env}={value}: not one line: {stderr}");
        assert!(stderr.contains(env), "{env}={value}: line does not name the setting: {stderr}");
    }
    let help = Command::new(binary("data")).env("OTEL_EXPORTER_OTLP_HEADERS", "api-key=hunter2").arg("--help").output();
    let help = String::from_utf8_lossy(&help.unwrap().stdout).into_owned();
    assert!(!help.contains("hunter2"), "--help shows the exporter's credentials");
}
