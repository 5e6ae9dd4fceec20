//! The compiled binaries as a container runtime sees them: settings, exit statuses, signals, healthcheck; and the
//! `openapi` subcommand tools read the routes from.

use std::{process::Command, time::Duration};

use agent_tests::{AgentProcess, StandIn, binary, client};
use axum::{Json, Router, http::StatusCode, routing::get};
use serde_json::json;

#[tokio::test]
async fn both_binaries_serve_and_exit_0_on_sigterm_within_the_drain_bound() {
    let mut data = AgentProcess::start("data", &[]);
    let data_url = format!("http://{}", data.addr);
    let mut reco = AgentProcess::start("recommendation", &[("DATA_URL", &data_url)]);

    let body = client().get(format!("http://{}/recommend", reco.addr)).send().await.unwrap().text().await.unwrap();
    assert_eq!(body, r#"{"recommendation":"Based on data","data":{"processed_data":"some_insights"}}"#);

    for agent in [&mut reco, &mut data] {
        agent.terminate();
        assert_eq!(agent.wait_exit(Duration::from_secs(3)), Some(0), "no clean exit within 3 s of SIGTERM");
    }
}

#[test]
fn sigterm_right_after_startup_still_drains_and_exits_0() {
    for bin in ["data", "recommendation"] {
        let mut agent = AgentProcess::start(bin, &[]);
        agent.terminate();
        assert_eq!(agent.wait_exit(Duration::from_secs(3)), Some(0), "{bin} did not exit 0 on an early SIGTERM");
    }
}

#[test]
fn a_bad_setting_exits_2_with_one_line_naming_it() {
    for (bin, env, value) in [
        ("data", "PORT", "eighty"),
        ("data", "DRAIN_TIMEOUT", "soon"),
        ("recommendation", "DATA_URL", "data:8000"),
        ("recommendation", "DATA_MODE", "carrier-pigeon"),
        ("recommendation", "DATA_TIMEOUT", "0s"),
        ("recommendation", "DAPR_HTTP_PORT", "0"),
        ("recommendation", "DATA_CONNECT_TIMEOUT", "5s"),
        ("data", "MAX_IN_FLIGHT", "0"),
        ("data", "FAULT_STATUS", "200"),
        ("data", "FAULT_BODY", "mangled"),
        ("recommendation", "MAX_BODY_BYTES", "-1"),
        ("data", "BODY_READ_TIMEOUT", "0s"),
        ("recommendation", "DATA_RETRIES", "many"),
        ("recommendation", "DATA_RETRY_STATUSES", "503,200"),
        ("recommendation", "DATA_RETRY_BACKOFF_MAX", "1ms"),
        ("recommendation", "DATA_BREAKER_COOLDOWN", "0s"),
        ("recommendation", "REQUEST_DEADLINE", "0s"),
        ("recommendation", "STALE_CACHE_TTL", "a while"),
        ("recommendation", "STATE_TTL", "1500ms"),
        ("recommendation", "STATE_MEMORY_MAX_ENTRIES", "0"),
        ("recommendation", "STATE_STORE", "state/../x"),
        ("data", "PUBSUB_TOPIC", ""),
        ("data", "DAPR_API_TOKEN", "two words"),
        ("recommendation", "DATA_API_TOKEN", ""),
    ] {
        let output = Command::new(binary(bin)).env_clear().env(env, value).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{bin} {env}={value}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{bin} {env}={value}: not one line: {stderr}");
        assert!(stderr.contains(env), "{bin} {env}={value}: line does not name the setting: {stderr}");
    }
}

#[test]
fn an_empty_app_api_token_is_refused_at_startup_instead_of_turning_the_check_off() {
    for bin in ["data", "recommendation"] {
        let mut child = Command::new(binary(bin))
            .env_clear()
            .envs([("PORT", "0"), ("BIND_ADDR", "127.0.0.1"), ("APP_API_TOKEN", "")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10)); // polling a child's exit, bounded
        };
        let Some(status) = status else {
            let _ = child.kill();
            panic!("{bin} started with APP_API_TOKEN set to nothing, i.e. with the token check off");
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(2), "{bin}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{bin}: not one line: {stderr}");
        assert!(stderr.contains("--app-api-token") && stderr.contains("APP_API_TOKEN"), "{bin}: {stderr}");
    }
}

#[test]
fn help_documents_every_setting_with_its_environment_variable() {
    let common = [
        "PORT",
        "BIND_ADDR",
        "LOG_FORMAT",
        "RUST_LOG",
        "SHUTDOWN_DELAY",
        "DRAIN_TIMEOUT",
        "HEADER_READ_TIMEOUT",
        "BODY_READ_TIMEOUT",
        "MAX_IN_FLIGHT",
        "MAX_BODY_BYTES",
    ];
    let dapr = ["DAPR_API_TOKEN", "APP_API_TOKEN", "APP_API_TOKEN_SECRET", "SECRET_STORE", "DAPR_WAIT_TIMEOUT"];
    let data_only =
        ["FAULT_STATUS", "FAULT_DELAY", "FAULT_BODY", "FAULT_FIRST", "DAPR_HTTP_PORT", "PUBSUB_NAME", "PUBSUB_TOPIC"];
    let reco_only = [
        "DATA_MODE",
        "DATA_URL",
        "DATA_APP_ID",
        "DAPR_HTTP_PORT",
        "DATA_TIMEOUT",
        "DATA_CONNECT_TIMEOUT",
        "REQUEST_DEADLINE",
        "DATA_RETRIES",
        "DATA_RETRY_BACKOFF",
        "DATA_RETRY_BACKOFF_MAX",
        "DATA_RETRY_STATUSES",
        "DATA_BREAKER_THRESHOLD",
        "DATA_BREAKER_COOLDOWN",
        "STALE_CACHE_TTL",
        "STATE_STORE",
        "STATE_TTL",
        "STATE_WRITE_RETRIES",
        "STATE_MEMORY_MAX_ENTRIES",
        "PUBSUB_NAME",
        "PUBSUB_TOPIC",
        "DATA_CACHE_TTL",
        "DATA_API_TOKEN",
    ];
    for (bin, specific) in [("data", &data_only[..]), ("recommendation", &reco_only[..])] {
        let output = Command::new(binary(bin)).arg("--help").output().unwrap();
        assert!(output.status.success());
        let help = String::from_utf8_lossy(&output.stdout);
        for env in common.iter().chain(&dapr).chain(specific) {
            assert!(help.contains(&format!("[env: {env}")), "{bin} --help does not document {env}:\n{help}");
        }
        assert!(help.contains("healthcheck"), "{bin} --help does not list the healthcheck subcommand");
        assert!(help.contains("openapi"), "{bin} --help does not list the openapi subcommand");
    }
}

#[test]
fn healthcheck_subcommand_exits_0_when_healthy_and_1_when_nothing_listens() {
    let data = AgentProcess::start("data", &[]);
    let port = data.addr.port().to_string();
    let healthy = Command::new(binary("data")).env_clear().env("PORT", &port).arg("healthcheck").status().unwrap();
    assert_eq!(healthy.code(), Some(0));
    drop(data);

    let down =
        Command::new(binary("recommendation")).env_clear().env("PORT", &port).arg("healthcheck").output().unwrap();
    assert_eq!(down.status.code(), Some(1));
}

#[tokio::test]
async fn openapi_subcommand_prints_what_the_running_agent_serves_at_openapi_json() {
    for (bin, own_route) in [("data", "/data"), ("recommendation", "/recommend")] {
        // Settings that would make serving fail (a port in use is not even tried): the subcommand neither binds nor
        // waits for the sidecar.
        let output = Command::new(binary(bin))
            .env_clear()
            .envs([("PORT", "1"), ("DAPR_HTTP_PORT", "1"), ("DAPR_WAIT_TIMEOUT", "1ms")])
            .arg("openapi")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{bin} openapi: {stderr}");
        let printed: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|err| panic!("{bin} openapi printed no JSON document ({err}): {stderr}"));

        let agent = AgentProcess::start(bin, &[]);
        let served: serde_json::Value =
            client().get(format!("http://{}/openapi.json", agent.addr)).send().await.unwrap().json().await.unwrap();
        assert_eq!(printed, served, "{bin} openapi differs from its /openapi.json");
        for path in [own_route, "/healthz", "/readyz", "/metrics"] {
            assert!(printed["paths"].get(path).is_some(), "{bin} openapi lacks {path}: {printed}");
        }
    }
}

#[test]
fn an_agent_whose_sidecar_never_answers_gives_up_within_the_wait_bound() {
    // A port nothing listens on: taken from a listener that is then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    for bin in ["data", "recommendation"] {
        let started = std::time::Instant::now();
        let output = Command::new(binary(bin))
            .env_clear()
            .envs([("PORT", "0"), ("BIND_ADDR", "127.0.0.1"), ("DAPR_HTTP_PORT", &port), ("DAPR_WAIT_TIMEOUT", "1s")])
            .output()
            .unwrap();
        let elapsed = started.elapsed();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{bin}: {stderr}");
        assert!(stderr.contains("not ready within 1s"), "{bin}: {stderr}");
        assert!(
            elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
            "{bin} gave up after {elapsed:?}"
        );
    }
}

#[test]
fn sigterm_while_waiting_for_the_sidecar_exits_0_at_once() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    for bin in ["data", "recommendation"] {
        let mut child = Command::new(binary(bin))
            .env_clear()
            .envs([("PORT", "0"), ("DAPR_HTTP_PORT", &port), ("DAPR_WAIT_TIMEOUT", "60s"), ("LOG_FORMAT", "json")])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The JSON log line at startup (telemetry is up) comes before the wait; wait for the first output.
        let mut first = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut first).ok();
        let started = std::time::Instant::now();
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{bin}");
        assert!(started.elapsed() < Duration::from_secs(3), "{bin} took {:?}", started.elapsed());
    }
}

// Multi-threaded: starting an agent blocks this thread until it listens, while the stand-in sidecar must answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_token_read_from_the_secret_store_at_startup_guards_the_app_routes() {
    // A sidecar that is ready at once and holds the app token in its secret store.
    let sidecar =
        StandIn::serve(Router::new().route("/v1.0/healthz/outbound", get(|| async { StatusCode::NO_CONTENT })).route(
            "/v1.0/secrets/secretstore/app-token",
            get(|| async { Json(json!({"app-token": "from-the-store"})) }),
        ))
        .await;
    let port = sidecar.addr.port().to_string();
    for (bin, route) in [("data", "/data"), ("recommendation", "/recommend")] {
        let agent = AgentProcess::start(bin, &[("DAPR_HTTP_PORT", &port), ("APP_API_TOKEN_SECRET", "app-token")]);
        let get = |path: &str, token: Option<&str>| {
            let request = client().get(format!("http://{}{path}", agent.addr));
            let request = match token {
                Some(token) => request.header("dapr-api-token", token),
                None => request,
            };
            async move { request.send().await.unwrap().status() }
        };
        assert_eq!(get(route, None).await, StatusCode::UNAUTHORIZED, "{bin}: {route} without a token");
        assert_eq!(get(route, Some("guess")).await, StatusCode::FORBIDDEN, "{bin}: {route} with a wrong token");
        let with_token = get(route, Some("from-the-store")).await;
        assert!(![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&with_token), "{bin}: {with_token}");
        assert_eq!(get("/healthz", None).await, StatusCode::OK, "{bin}: the probes carry no token");
    }
}
