//! Both agents on loopback, with the real data agent or stand-ins that fail the way real upstreams do.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agent_tests::{B3_CONTEXT, StandIn, bind, client, spawn_data, spawn_data_on, spawn_recommendation};
use axum::{Router, body::Bytes, extract::Path, http::StatusCode, routing::get};
use http_body_util::channel::Channel;
use recommendation::config::{Config, DataModeSetting};
use serde_json::{Value, json};
use shared::http::DrainOutcome;
use tokio::sync::{Notify, mpsc};

const CONTRACT: &str = r#"{"recommendation":"Based on data","data":{"processed_data":"some_insights"}}"#;

fn direct_to(url: url::Url) -> Config {
    Config::for_tests(url)
}

#[tokio::test]
async fn direct_mode_answers_the_original_contract_byte_for_byte() {
    let data = spawn_data().await;
    let reco = spawn_recommendation(direct_to(data.base_url())).await;

    let response = client().get(reco.url("/recommend")).send().await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), CONTRACT);
    assert_eq!(reco.stop().await, DrainOutcome::Complete);
    assert_eq!(data.stop().await, DrainOutcome::Complete);
}

#[tokio::test]
async fn valid_limit_gives_the_same_contract() {
    let data = spawn_data().await;
    let reco = spawn_recommendation(direct_to(data.base_url())).await;
    let body = client().get(reco.url("/recommend?limit=100")).send().await.unwrap().text().await.unwrap();
    assert_eq!(body, CONTRACT);
}

/// A stand-in Dapr sidecar serving Dapr's documented invoke route, forwarding to the real data agent.
async fn dapr_sidecar(data_base: url::Url, seen: Arc<Mutex<Vec<(String, String)>>>) -> StandIn {
    let router = Router::new().route(
        "/v1.0/invoke/{app_id}/method/{*method}",
        get(move |Path((app_id, method)): Path<(String, String)>| {
            let (seen, data_base) = (seen.clone(), data_base.clone());
            async move {
                seen.lock().unwrap().push((app_id, method.clone()));
                let upstream = client().get(data_base.join(&method).unwrap()).send().await.unwrap();
                (upstream.status(), upstream.text().await.unwrap())
            }
        }),
    );
    StandIn::serve(router).await
}

#[tokio::test]
async fn auto_mode_with_a_dapr_port_invokes_data_through_the_sidecar() {
    let data = spawn_data().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sidecar = dapr_sidecar(data.base_url(), seen.clone()).await;
    let mut config = direct_to("http://unused.invalid:1".parse().unwrap());
    config.data.data_mode = DataModeSetting::Auto;
    config.common.dapr.dapr_http_port = Some(sidecar.addr.port());
    let reco = spawn_recommendation(config).await;

    let response = client().get(reco.url("/recommend")).send().await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), CONTRACT);
    assert_eq!(*seen.lock().unwrap(), vec![("data".to_owned(), "data".to_owned())]);
    let ready: Value = client().get(reco.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["checks"]["data"]["mode"], "dapr");
    assert_eq!(ready["checks"]["data"]["last_outcome"], "ok");
}

#[tokio::test]
async fn data_stopped_gives_503_within_a_second_and_recovers_when_data_returns() {
    let data = spawn_data().await;
    let data_addr = data.addr;
    let reco = spawn_recommendation(direct_to(data.base_url())).await;
    assert_eq!(client().get(reco.url("/recommend")).send().await.unwrap().status(), StatusCode::OK);

    data.stop().await;
    let started = Instant::now();
    let response = client().get(reco.url("/recommend")).send().await.unwrap();
    let elapsed = started.elapsed();

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(elapsed < Duration::from_secs(1), "503 took {elapsed:?}");
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"detail": "The data agent is unreachable; try again shortly."}));
    let ready = client().get(reco.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "readiness must not follow data's health");
    assert_eq!(ready.json::<Value>().await.unwrap()["checks"]["data"]["last_outcome"], "unreachable");

    let _data_again = spawn_data_on(bind(Some(data_addr)).await, data::Config::for_tests()).await;
    let response = client().get(reco.url("/recommend")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), CONTRACT);
}

#[tokio::test]
async fn data_slower_than_the_timeout_gives_504_at_the_timeout() {
    let silent = StandIn::serve(Router::new().route("/data", get(std::future::pending::<()>))).await;
    let mut config = direct_to(silent.base_url());
    config.data.data_timeout = Duration::from_millis(300);
    let reco = spawn_recommendation(config).await;

    let started = Instant::now();
    let response = client().get(reco.url("/recommend")).send().await.unwrap();
    let elapsed = started.elapsed();

    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2), "504 after {elapsed:?}");
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"detail": "The data agent did not answer in time."}));
}

async fn recommendation_status_with_data(data: Router) -> (StatusCode, Value) {
    let upstream = StandIn::serve(data).await;
    let reco = spawn_recommendation(direct_to(upstream.base_url())).await;
    let response = client().get(reco.url("/recommend")).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

const INVALID_ANSWER: &str = "The data agent returned an invalid response.";

#[tokio::test]
async fn data_answering_500_gives_502_without_leaking_its_body() {
    let failing =
        Router::new().route("/data", get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "db password wrong") }));
    assert_eq!(
        recommendation_status_with_data(failing).await,
        (StatusCode::BAD_GATEWAY, json!({"detail": INVALID_ANSWER}))
    );
}

#[tokio::test]
async fn data_answering_non_json_gives_502() {
    let garbage = Router::new().route("/data", get(|| async { "<html>oops</html>" }));
    assert_eq!(
        recommendation_status_with_data(garbage).await,
        (StatusCode::BAD_GATEWAY, json!({"detail": INVALID_ANSWER}))
    );
}

#[tokio::test]
async fn data_answering_an_oversized_body_gives_502() {
    let huge = format!("[{}0]", "0,".repeat(recommendation::data_client::MAX_DATA_BODY_BYTES / 2));
    let oversized = Router::new().route("/data", get(move || async move { huge }));
    assert_eq!(
        recommendation_status_with_data(oversized).await,
        (StatusCode::BAD_GATEWAY, json!({"detail": INVALID_ANSWER}))
    );
}

#[tokio::test]
async fn data_json_is_passed_through_with_key_order_kept() {
    let ordered = Router::new().route("/data", get(|| async { r#"{"z":1,"a":[true,null],"m":{"y":"é","b":2.5}}"# }));
    let upstream = StandIn::serve(ordered).await;
    let reco = spawn_recommendation(direct_to(upstream.base_url())).await;
    let body = client().get(reco.url("/recommend")).send().await.unwrap().text().await.unwrap();
    assert_eq!(body, r#"{"recommendation":"Based on data","data":{"z":1,"a":[true,null],"m":{"y":"é","b":2.5}}}"#);
}

#[tokio::test]
async fn trace_headers_reach_data_and_a_request_id_is_generated_when_absent() {
    let (upstream, mut rx) = StandIn::recording_data().await;
    let reco = spawn_recommendation(direct_to(upstream.base_url())).await;
    let traced: Vec<_> = [
        ("x-request-id", "req-42"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("tracestate", "vendor=opaque"),
        ("baggage", "user=alice"),
        ("x-ot-span-context", "80f198ee56343ba8;e457b5a2e4d86bd1;05e3ac9a4f6e3b90;cs"),
    ]
    .into_iter()
    .chain(B3_CONTEXT)
    .collect();
    let mut request = client().get(reco.url("/recommend")).header("authorization", "Bearer not-for-data");
    for &(name, value) in &traced {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-42");

    let received = rx.recv().await.unwrap();
    for &(name, value) in &traced {
        assert_eq!(received.get(name).map(|v| v.to_str().unwrap()), Some(value), "{name} not propagated");
    }
    assert!(received.get("authorization").is_none(), "credentials must not be forwarded");

    let response = client().get(reco.url("/recommend")).send().await.unwrap();
    let generated = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let received = rx.recv().await.unwrap();
    assert_eq!(received["x-request-id"], generated.as_str(), "the generated id must be the one data sees");
}

/// A data stand-in that holds each request until released, announcing when one arrives.
fn gated_data(arrived: mpsc::UnboundedSender<()>, release: Arc<Notify>) -> Router {
    Router::new().route(
        "/data",
        get(move || {
            let (arrived, release) = (arrived.clone(), release.clone());
            async move {
                arrived.send(()).unwrap();
                release.notified().await;
                axum::Json(json!({"processed_data": "some_insights"}))
            }
        }),
    )
}

#[tokio::test]
async fn shutdown_fails_readiness_and_lets_the_in_flight_request_finish() {
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let upstream = StandIn::serve(gated_data(arrived_tx, release.clone())).await;
    let mut config = direct_to(upstream.base_url());
    assert_eq!(config.common.server.shutdown_delay, Duration::ZERO, "the default settings must show the drain");
    config.data.data_timeout = Duration::from_secs(10);
    let mut reco = spawn_recommendation(config).await;
    let in_flight = tokio::spawn(client().get(reco.url("/recommend")).send());
    arrived.recv().await.unwrap();

    reco.begin_shutdown();
    let ready = client().get(reco.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "draining");
    assert!(reco.health.is_draining());
    let late = client().get(reco.url("/recommend")).send().await.unwrap();
    assert_eq!(late.status(), StatusCode::SERVICE_UNAVAILABLE, "new work during the drain is refused with 503");
    assert_eq!(late.headers()["connection"], "close");

    release.notify_one();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), CONTRACT);
    assert_eq!(reco.finished().await, DrainOutcome::Complete);
}

#[tokio::test]
async fn drain_is_bounded_when_a_request_outlives_the_drain_timeout() {
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let never_released = Arc::new(Notify::new());
    let upstream = StandIn::serve(gated_data(arrived_tx, never_released)).await;
    let mut config = direct_to(upstream.base_url());
    config.common.server.drain_timeout = Duration::from_millis(300);
    config.data.data_timeout = Duration::from_secs(10);
    let reco = spawn_recommendation(config).await;
    let _in_flight = tokio::spawn(client().get(reco.url("/recommend")).send());
    arrived.recv().await.unwrap();

    let started = Instant::now();
    let outcome = reco.stop().await;

    assert_eq!(outcome, DrainOutcome::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(2), "drain took {:?}", started.elapsed());
}

#[tokio::test]
async fn during_the_shutdown_delay_new_requests_are_still_served() {
    let data = spawn_data().await;
    let mut config = direct_to(data.base_url());
    config.common.server.shutdown_delay = Duration::from_secs(2);
    let mut reco = spawn_recommendation(config).await;

    reco.begin_shutdown();
    let ready = client().get(reco.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let response = client().get(reco.url("/recommend")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), CONTRACT);
    assert_eq!(reco.finished().await, DrainOutcome::Complete);
}

#[tokio::test]
async fn in_direct_mode_a_data_agent_with_an_app_token_is_called_with_data_api_token() {
    let mut data_config = data::Config::for_tests();
    data_config.common.dapr.app_api_token = Some("data-secret".to_owned());
    let data = spawn_data_on(bind(None).await, data_config).await;

    let mut config = direct_to(data.base_url());
    config.data.data_api_token = Some("data-secret".to_owned());
    let reco = spawn_recommendation(config).await;
    let response = client().get(reco.url("/recommend")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), CONTRACT);

    // Without the token data refuses: a 502 whose outcome names the refusal, not an "invalid response" mystery.
    let reco = spawn_recommendation(direct_to(data.base_url())).await;
    let response = client().get(reco.url("/recommend")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"detail": "The data agent refused the call: this agent is not allowed to call it."})
    );
    let ready: Value = client().get(reco.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["checks"]["data"]["last_outcome"], "refused");
}

#[tokio::test]
async fn data_redirecting_is_a_bad_answer_not_followed() {
    let redirecting = Router::new()
        .route("/data", get(|| async { axum::response::Redirect::temporary("/moved") }))
        .route("/moved", get(|| async { axum::Json(json!({"moved": true})) }));
    assert_eq!(
        recommendation_status_with_data(redirecting).await,
        (StatusCode::BAD_GATEWAY, json!({"detail": INVALID_ANSWER}))
    );
}

#[tokio::test]
async fn data_streaming_a_body_over_the_limit_without_content_length_gives_502() {
    // Valid JSON in all, so only its size can refuse it; sent in chunks from a body of unknown length, so the answer
    // is chunked and carries no Content-Length: only the limit checked while reading catches it.
    let huge = format!("[{}0]", "0,".repeat(recommendation::data_client::MAX_DATA_BODY_BYTES / 2));
    let streamed = Router::new().route(
        "/data",
        get(move || {
            let huge = Bytes::from(huge.clone());
            async move {
                let (mut tx, body) = Channel::<Bytes, Infallible>::new(1);
                tokio::spawn(async move {
                    for start in (0..huge.len()).step_by(64 * 1024) {
                        let end = (start + 64 * 1024).min(huge.len());
                        if tx.send_data(huge.slice(start..end)).await.is_err() {
                            break; // the reader stopped reading
                        }
                    }
                });
                axum::body::Body::new(body)
            }
        }),
    );
    assert_eq!(
        recommendation_status_with_data(streamed).await,
        (StatusCode::BAD_GATEWAY, json!({"detail": INVALID_ANSWER}))
    );
}

#[tokio::test]
async fn data_is_called_as_the_recommendation_agent_asking_for_json() {
    let (upstream, mut rx) = StandIn::recording_data().await;
    let reco = spawn_recommendation(direct_to(upstream.base_url())).await;
    assert_eq!(client().get(reco.url("/recommend")).send().await.unwrap().status(), StatusCode::OK);
    let received = rx.recv().await.unwrap();
    assert_eq!(received["user-agent"], concat!("recommendation-agent/", env!("CARGO_PKG_VERSION")));
    assert_eq!(received["accept"], "application/json");
    assert_eq!(received["host"], upstream.addr.to_string().as_str());
}

#[tokio::test]
async fn an_https_data_url_whose_handshake_stalls_is_unreachable_at_the_connect_timeout() {
    // The kernel completes the TCP connect into the backlog; nobody ever answers the TLS ClientHello.
    let silent = bind(None).await;
    let mut config = direct_to(format!("https://{}/", silent.local_addr().unwrap()).parse().unwrap());
    config.data.data_connect_timeout = Duration::from_millis(200);
    config.data.data_retries = 0;
    let reco = spawn_recommendation(config).await;

    let started = Instant::now();
    let response = client().get(reco.url("/recommend")).send().await.unwrap();
    let elapsed = started.elapsed();

    // Past the connect timeout, well before the 2 s data timeout: the handshake counts as connecting.
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(1), "503 after {elapsed:?}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"detail": "The data agent is unreachable; try again shortly."}));
    let ready: Value = client().get(reco.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["checks"]["data"]["last_outcome"], "unreachable");
}

async fn recommendation_via_sidecar_answering(status: StatusCode, body: Value) -> (StatusCode, Value) {
    let sidecar = StandIn::serve(Router::new().route(
        "/v1.0/invoke/{app_id}/method/{*method}",
        get(move || {
            let body = body.clone();
            async move { (status, axum::Json(body)) }
        }),
    ))
    .await;
    let mut config = direct_to("http://unused.invalid:1".parse().unwrap());
    config.data.data_mode = DataModeSetting::Dapr;
    config.common.dapr.dapr_http_port = Some(sidecar.addr.port());
    let reco = spawn_recommendation(config).await;
    let response = client().get(reco.url("/recommend")).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn sidecar_unable_to_invoke_data_is_503_unreachable() {
    // The body Dapr documents for a failed direct invocation.
    let failed =
        json!({"errorCode": "ERR_DIRECT_INVOKE", "message": "fail to invoke, id: data, err: connection refused"});
    let (status, body) = recommendation_via_sidecar_answering(StatusCode::INTERNAL_SERVER_ERROR, failed).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, json!({"detail": "The data agent is unreachable; try again shortly."}));
}

#[tokio::test]
async fn data_500_passed_through_the_sidecar_is_still_a_bad_answer() {
    let (status, body) =
        recommendation_via_sidecar_answering(StatusCode::INTERNAL_SERVER_ERROR, json!({"detail": "boom"})).await;
    assert_eq!((status, body), (StatusCode::BAD_GATEWAY, json!({"detail": INVALID_ANSWER})));
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_read_timeout() {
    use tokio::io::AsyncReadExt;
    let mut config = data::Config::for_tests();
    config.common.server.header_read_timeout = Duration::from_millis(300);
    let data = spawn_data_on(bind(None).await, config).await;

    for opening in [&b""[..], b"GET /data HTTP/1.1\r\nHost: x\r\n"] {
        let mut conn = tokio::net::TcpStream::connect(data.addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut conn, opening).await.unwrap();
        let started = Instant::now();
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(3), conn.read_to_end(&mut buf)).await;
        assert!(closed.is_ok(), "connection with opening {opening:?} still open after 3 s");
        assert!(started.elapsed() >= Duration::from_millis(250), "closed too early: {:?}", started.elapsed());
    }
}
