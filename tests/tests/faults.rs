//! The fault matrix: the recommendation agent against a data agent that misbehaves on command (the real data agent
//! with `FAULT_*` settings, or a raw TCP upstream for failures HTTP servers do not produce), plus load shedding,
//! the body limit and the header read timeout. Every case checks status, body, elapsed time against the configured
//! budgets and, where data can count them, the attempts data saw.

use std::time::{Duration, Instant};

use agent_tests::{
    AgentProcess, RawBehaviour, RawUpstream, bind, client, spawn_data, spawn_faulty_data, spawn_recommendation,
};
use axum::http::{HeaderMap, StatusCode};
use data::config::{FaultArgs, FaultBody};
use recommendation::config::Config;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const CONTRACT: &str = r#"{"recommendation":"Based on data","data":{"processed_data":"some_insights"}}"#;
const UNREACHABLE: &str = "The data agent is unreachable; try again shortly.";
const TOO_SLOW: &str = "The data agent did not answer in time.";
const INVALID: &str = "The data agent returned an invalid response.";
const PAUSED: &str = "The data agent is failing; calls to it are paused. Try again after Retry-After.";

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
    elapsed: Duration,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    fn detail(&self) -> Value {
        self.json()["detail"].clone()
    }
}

async fn get(url: &str) -> Answer {
    get_with(&client(), url).await
}

async fn get_with(client: &reqwest::Client, url: &str) -> Answer {
    let started = Instant::now();
    let response = client.get(url).send().await.expect("the agent answers");
    let (status, headers) = (response.status(), response.headers().clone());
    let body = response.text().await.expect("body");
    Answer { status, headers, body, elapsed: started.elapsed() }
}

fn faults(status: Option<u16>, delay: Duration, body: Option<FaultBody>, first: u64) -> FaultArgs {
    FaultArgs { fault_status: status, fault_delay: delay, fault_body: body, fault_first: first }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Polls the readiness body (bounded) until `done` accepts it.
async fn wait_for_readiness(reco_url: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = get(reco_url).await;
        assert_eq!(ready.status, StatusCode::OK, "readiness must never fail because of data");
        let body = ready.json();
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "readiness never showed {what}: {body}");
        tokio::time::sleep(ms(20)).await;
    }
}

#[tokio::test]
async fn connection_refused_is_503_well_under_a_second_with_default_settings() {
    let port_with_nothing = bind(None).await.local_addr().unwrap();
    let reco = spawn_recommendation(Config::for_tests(format!("http://{port_with_nothing}").parse().unwrap())).await;

    let answer = get(&reco.url("/recommend")).await;

    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.detail(), UNREACHABLE);
    assert_eq!(answer.headers["retry-after"], "1");
    assert!(answer.elapsed < ms(1000), "503 took {:?}", answer.elapsed);
    eprintln!("connection refused: 503 after {:?} (3 attempts with default backoff)", answer.elapsed);
}

#[tokio::test]
async fn accept_then_hang_times_out_each_attempt_and_retries_within_the_deadline() {
    let upstream = RawUpstream::spawn(RawBehaviour::Hang).await;
    let mut config = Config::for_tests(upstream.base_url());
    config.data.data_timeout = ms(300);
    let reco = spawn_recommendation(config).await;

    let answer = get(&reco.url("/recommend")).await;

    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(answer.detail(), TOO_SLOW);
    assert_eq!(upstream.accepted(), 3, "first attempt + DATA_RETRIES=2, each on a fresh connection");
    // Three 300 ms attempts plus at most 50 + 100 ms of backoff, plus scheduling slack.
    assert!(answer.elapsed >= ms(900) && answer.elapsed < ms(1600), "504 after {:?}", answer.elapsed);
}

#[tokio::test]
async fn the_request_deadline_cuts_the_last_attempt_short() {
    let upstream = RawUpstream::spawn(RawBehaviour::Hang).await;
    let mut config = Config::for_tests(upstream.base_url());
    config.data.data_timeout = ms(400);
    config.data.request_deadline = ms(600);
    let reco = spawn_recommendation(config).await;

    let answer = get(&reco.url("/recommend")).await;

    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(answer.detail(), TOO_SLOW);
    // 400 ms, a backoff of at most 50 ms, then a second attempt that only gets what is left of the 600 ms; no third.
    assert_eq!(upstream.accepted(), 2);
    assert!(answer.elapsed >= ms(600) && answer.elapsed < ms(1000), "504 after {:?}", answer.elapsed);
    let ready = get(&reco.url("/readyz")).await.json();
    assert_eq!(ready["checks"]["data"]["last_outcome"], "deadline");
}

#[tokio::test]
async fn data_slower_than_the_timeout_is_retried_then_504_and_data_saw_every_attempt() {
    let (data, seen) = spawn_faulty_data(faults(None, ms(2000), None, 0)).await;
    let mut config = Config::for_tests(data.base_url());
    config.data.data_timeout = ms(200);
    let reco = spawn_recommendation(config).await;

    let answer = get(&reco.url("/recommend")).await;

    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(answer.detail(), TOO_SLOW);
    assert_eq!(seen.requests_seen(), 3);
    assert!(answer.elapsed >= ms(600) && answer.elapsed < ms(1200), "504 after {:?}", answer.elapsed);
}

#[tokio::test]
async fn data_retries_0_as_under_istio_makes_exactly_one_attempt() {
    let (data, seen) = spawn_faulty_data(faults(None, ms(2000), None, 0)).await;
    let mut config = Config::for_tests(data.base_url());
    config.data.data_timeout = ms(200);
    config.data.data_retries = 0;
    let reco = spawn_recommendation(config).await;

    let answer = get(&reco.url("/recommend")).await;

    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(seen.requests_seen(), 1);
    assert!(answer.elapsed >= ms(200) && answer.elapsed < ms(600), "504 after {:?}", answer.elapsed);
}

#[tokio::test]
async fn a_503_then_200_is_retried_and_the_caller_never_sees_the_failure() {
    let (data, seen) = spawn_faulty_data(faults(Some(503), Duration::ZERO, None, 1)).await;
    let reco = spawn_recommendation(Config::for_tests(data.base_url())).await;

    let answer = get(&reco.url("/recommend")).await;

    assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, CONTRACT));
    assert_eq!(seen.requests_seen(), 2);
    assert!(answer.headers.get("x-data-stale").is_none());
}

#[tokio::test]
async fn a_500_then_200_is_not_retried_by_default_but_is_when_500_is_listed() {
    let (data, seen) = spawn_faulty_data(faults(Some(500), Duration::ZERO, None, 1)).await;
    let reco = spawn_recommendation(Config::for_tests(data.base_url())).await;
    let answer = get(&reco.url("/recommend")).await;
    assert_eq!((answer.status, answer.detail()), (StatusCode::BAD_GATEWAY, json!(INVALID)));
    assert_eq!(seen.requests_seen(), 1, "500 is not in the default DATA_RETRY_STATUSES");

    let (data, seen) = spawn_faulty_data(faults(Some(500), Duration::ZERO, None, 1)).await;
    let mut config = Config::for_tests(data.base_url());
    config.data.data_retry_statuses = vec![500, 502, 503, 504];
    let reco = spawn_recommendation(config).await;
    let answer = get(&reco.url("/recommend")).await;
    assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, CONTRACT));
    assert_eq!(seen.requests_seen(), 2, "the retry succeeded");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_502_without_retry() {
    let (data, seen) = spawn_faulty_data(faults(None, Duration::ZERO, Some(FaultBody::Garbage), 0)).await;
    let reco = spawn_recommendation(Config::for_tests(data.base_url())).await;

    let answer = get(&reco.url("/recommend")).await;

    assert_eq!((answer.status, answer.detail()), (StatusCode::BAD_GATEWAY, json!(INVALID)));
    assert_eq!(seen.requests_seen(), 1);
}

#[tokio::test]
async fn a_connection_cut_mid_body_is_502_without_retry() {
    let (data, seen) = spawn_faulty_data(faults(None, Duration::ZERO, Some(FaultBody::Truncated), 0)).await;
    let reco = spawn_recommendation(Config::for_tests(data.base_url())).await;
    let answer = get(&reco.url("/recommend")).await;
    assert_eq!((answer.status, answer.detail()), (StatusCode::BAD_GATEWAY, json!(INVALID)));
    assert_eq!(seen.requests_seen(), 1);
    assert!(answer.elapsed < ms(1000), "502 after {:?}", answer.elapsed);

    // The same over raw TCP: a 200 head promising 100 bytes, 11 of them, then the connection closes.
    let upstream = RawUpstream::spawn(RawBehaviour::CutBody).await;
    let reco = spawn_recommendation(Config::for_tests(upstream.base_url())).await;
    let answer = get(&reco.url("/recommend")).await;
    assert_eq!((answer.status, answer.detail()), (StatusCode::BAD_GATEWAY, json!(INVALID)));
    assert_eq!(upstream.accepted(), 1);
}

/// Counts the answers to `n` sequential `GET url` by status.
async fn tally(url: &str, n: usize) -> std::collections::BTreeMap<u16, usize> {
    let http = client();
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..n {
        *statuses.entry(get_with(&http, url).await.status.as_u16()).or_insert(0) += 1;
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_each_connection_after_answering_costs_no_request() {
    let upstream = RawUpstream::spawn(RawBehaviour::AnswerOnceThenClose).await;
    let reco = spawn_recommendation(Config::for_tests(upstream.base_url())).await;

    let statuses = tally(&reco.url("/recommend"), 2000).await;

    assert_eq!(statuses, [(200, 2000)].into(), "a request on a connection closed under it is sent again");
    let ready = get(&reco.url("/readyz")).await.json();
    assert_eq!(ready["checks"]["data"]["circuit"]["state"], "closed");
}

/// A rolling restart of data as Kubernetes does it, under load: two replicas behind a balancer, one taken out of
/// the endpoints and stopped while eight clients keep calling `/recommend`, then a replacement added. Not one request
/// may fail, and the breaker must not count a failure: without a shutdown delay (the default) the data agent closes
/// idle pooled connections at once, and a call already sent on one must go out again, to the replica that stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_data_under_load_fails_no_request_and_keeps_the_breaker_closed() {
    for shutdown_delay in [Duration::ZERO, ms(300)] {
        let mut data_config = data::Config::for_tests();
        data_config.server.shutdown_delay = shutdown_delay;
        let (mut leaving, leaving_seen) = agent_tests::spawn_counted_data(data_config.clone()).await;
        let (staying, staying_seen) = agent_tests::spawn_counted_data(data_config.clone()).await;
        let balancer = agent_tests::Balancer::spawn(&[leaving.addr, staying.addr]).await;
        let mut config = Config::for_tests(balancer.base_url());
        // A single failure counted against data would open it.
        config.data.data_breaker_threshold = 1;
        let reco = spawn_recommendation(config).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load: Vec<_> = (0..8)
            .map(|_| {
                let (url, stop) = (reco.url("/recommend"), stop.clone());
                tokio::spawn(async move {
                    let http = client();
                    let mut statuses = std::collections::BTreeMap::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        *statuses.entry(get_with(&http, &url).await.status.as_u16()).or_insert(0) += 1;
                    }
                    statuses
                })
            })
            .collect();
        let wait_for = |what: &str, seen: &data::Faults, n: u64| {
            assert!(seen.requests_seen() >= n, "{what}: only {} data calls", seen.requests_seen());
        };
        let started = Instant::now();
        while leaving_seen.requests_seen() < 200 && started.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(ms(5)).await;
        }
        wait_for("before the restart", &leaving_seen, 200);

        balancer.remove(leaving.addr);
        leaving.begin_shutdown();
        assert_eq!(leaving.finished().await, shared::server::DrainOutcome::Complete);
        let (replacement, _) = agent_tests::spawn_counted_data(data_config).await;
        balancer.add(replacement.addr);
        let handed_over = staying_seen.requests_seen();
        let started = Instant::now();
        while staying_seen.requests_seen() < handed_over + 200 && started.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(ms(5)).await;
        }
        wait_for("after the restart", &staying_seen, handed_over + 200);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);

        let mut statuses = std::collections::BTreeMap::new();
        for client in load {
            for (status, n) in client.await.unwrap() {
                *statuses.entry(status).or_insert(0) += n;
            }
        }
        eprintln!("rolling restart of data under load, SHUTDOWN_DELAY={shutdown_delay:?}: {statuses:?}");
        assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), vec![200], "delay {shutdown_delay:?}: {statuses:?}");
        let circuit = get(&reco.url("/readyz")).await.json()["checks"]["data"]["circuit"].clone();
        assert_eq!(circuit, json!({"state": "closed", "consecutive_failures": 0}), "delay {shutdown_delay:?}");
    }
}

#[tokio::test]
async fn always_503_opens_the_breaker_which_answers_fast_then_half_opens_and_closes_on_success() {
    // Data fails its first 4 requests, then recovers.
    let (data, seen) = spawn_faulty_data(faults(Some(503), Duration::ZERO, None, 4)).await;
    let mut config = Config::for_tests(data.base_url());
    config.data.data_breaker_threshold = 3;
    config.data.data_breaker_cooldown = ms(1500);
    let reco = spawn_recommendation(config).await;
    let (recommend, readyz) = (reco.url("/recommend"), reco.url("/readyz"));

    // Three failed attempts (one request with its two retries) open the breaker.
    let failed = get(&recommend).await;
    assert_eq!((failed.status, failed.detail()), (StatusCode::BAD_GATEWAY, json!(INVALID)));
    assert_eq!(seen.requests_seen(), 3);

    // Open: answered at once, without calling data, with the rest of the cool-down as Retry-After.
    let refused = get(&recommend).await;
    assert_eq!((refused.status, refused.detail()), (StatusCode::SERVICE_UNAVAILABLE, json!(PAUSED)));
    let retry_after: u64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "rest of the 1.5 s cool-down, rounded up: {retry_after}");
    assert!(refused.elapsed < ms(250), "an open breaker must answer at once, took {:?}", refused.elapsed);
    assert_eq!(seen.requests_seen(), 3, "data is not called while the breaker is open");
    let ready = get(&readyz).await.json();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["data"]["circuit"]["state"], "open");

    // After the cool-down one probe goes through; data fails it (4th request), so the breaker opens again.
    let cooled = |body: &Value| body["checks"]["data"]["circuit"]["retry_after_seconds"] == json!(0.0);
    wait_for_readiness(&readyz, "the cool-down over", cooled).await;
    let probe_failed = get(&recommend).await;
    assert_eq!(probe_failed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(probe_failed.headers.contains_key("retry-after"));
    assert_eq!(seen.requests_seen(), 4, "exactly one probe");
    assert_eq!(get(&readyz).await.json()["checks"]["data"]["circuit"]["state"], "open");

    // Next cool-down: the probe succeeds (data has recovered) and the breaker closes.
    wait_for_readiness(&readyz, "the second cool-down over", cooled).await;
    let recovered = get(&recommend).await;
    assert_eq!((recovered.status, recovered.body.as_str()), (StatusCode::OK, CONTRACT));
    assert_eq!(seen.requests_seen(), 5);
    let circuit = get(&readyz).await.json()["checks"]["data"]["circuit"].clone();
    assert_eq!(circuit, json!({"state": "closed", "consecutive_failures": 0}));
    assert_eq!(get(&recommend).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_stale_answer_is_served_only_when_allowed_and_is_marked() {
    let data = spawn_data().await;
    let mut config = Config::for_tests(data.base_url());
    config.data.stale_cache_ttl = Duration::from_secs(60);
    let reco = spawn_recommendation(config).await;

    let fresh = get(&reco.url("/recommend")).await;
    assert_eq!((fresh.status, fresh.body.as_str()), (StatusCode::OK, CONTRACT));
    assert!(fresh.headers.get("x-data-stale").is_none() && fresh.headers.get("x-data-age").is_none());

    data.stop().await;
    let stale = get(&reco.url("/recommend")).await;
    assert_eq!((stale.status, stale.body.as_str()), (StatusCode::OK, CONTRACT), "same body shape");
    assert_eq!(stale.headers["x-data-stale"], "true");
    assert_eq!(stale.headers["x-data-age"], "0");
    let ready = get(&reco.url("/readyz")).await.json();
    assert_eq!(ready["checks"]["data"]["last_outcome"], "unreachable", "the failure is still recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_max_in_flight_is_shed_fast_and_never_hangs() {
    const BOUND: usize = 4;
    const BURST: usize = 40;
    let (data, seen) = spawn_faulty_data(faults(None, ms(800), None, 0)).await;
    let mut config = Config::for_tests(data.base_url());
    config.server.max_in_flight = BOUND as u32;
    let reco = spawn_recommendation(config).await;
    let http = client();
    let started = Instant::now();
    get_with(&http, &reco.url("/healthz")).await;
    eprintln!("client built and first request in {:?}", started.elapsed());

    // Fill every slot with a request data holds for 800 ms, and wait (bounded) until data has them all.
    let held: Vec<_> = (0..BOUND).map(|_| tokio::spawn(get_owned(http.clone(), reco.url("/recommend")))).collect();
    let filled = Instant::now();
    while seen.requests_seen() < BOUND as u64 {
        assert!(filled.elapsed() < Duration::from_secs(5), "held requests never reached data");
        tokio::time::sleep(ms(5)).await;
    }

    let burst: Vec<_> = (0..BURST).map(|_| tokio::spawn(get_owned(http.clone(), reco.url("/recommend")))).collect();
    let mut latencies = Vec::new();
    for answer in burst {
        let answer = tokio::time::timeout(Duration::from_secs(5), answer).await.expect("a shed request hung").unwrap();
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.detail(), "The agent is at capacity; try again shortly.");
        assert_eq!(answer.headers["retry-after"], "1");
        latencies.push(answer.elapsed);
    }
    assert_eq!(get(&reco.url("/healthz")).await.status, StatusCode::OK, "probes are not shed");
    assert_eq!(get(&reco.url("/readyz")).await.status, StatusCode::OK, "probes are not shed");

    latencies.sort();
    let (p50, max) = (latencies[BURST / 2], latencies[BURST - 1]);
    eprintln!("shed {BURST} requests beyond MAX_IN_FLIGHT={BOUND}: p50 {p50:?}, max {max:?}");
    assert!(max < ms(500), "shed requests must not wait for the held ones (800 ms); max {max:?}");
    assert_eq!(seen.requests_seen(), BOUND as u64, "shed requests never reached data");
    for answer in held {
        assert_eq!(answer.await.unwrap().status, StatusCode::OK, "the held requests complete");
    }
}

async fn get_owned(client: reqwest::Client, url: String) -> Answer {
    get_with(&client, &url).await
}

#[tokio::test]
async fn a_declared_body_over_max_body_bytes_is_413_json_on_both_agents() {
    let mut data_config = data::Config::for_tests();
    data_config.server.max_body_bytes = 1024;
    let data = agent_tests::spawn_data_on(bind(None).await, data_config).await;
    let mut reco_config = Config::for_tests(data.base_url());
    reco_config.server.max_body_bytes = 1024;
    let reco = spawn_recommendation(reco_config).await;

    for url in [data.url("/data"), reco.url("/recommend")] {
        let response = client().get(&url).body(vec![b'x'; 1025]).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{url}");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"detail": "Request body too large: the limit is 1024 bytes"})
        );
        let fits = client().get(&url).body(vec![b'x'; 1024]).send().await.unwrap();
        assert_eq!(fits.status(), StatusCode::OK, "{url}: a body within the limit is fine");
    }
}

/// Sends a request head declaring a 1000-byte body, then 18 bytes of it, then nothing; returns the connection.
async fn stalled_put(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head =
        format!("PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(br#"{"processed_data":"#).await.unwrap();
    stream
}

/// Reads what the server answers on `stream` until it closes the connection (bounded).
async fn answer_on(mut stream: TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the connection is closed after the answer")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_hold_their_slots_only_until_the_body_read_timeout() {
    let mut config = data::Config::for_tests();
    config.server.max_in_flight = 8;
    config.server.body_read_timeout = ms(500);
    let (data, seen) = agent_tests::spawn_counted_data(config).await;
    let mut stalled = Vec::new();
    for _ in 0..8 {
        stalled.push(stalled_put(data.addr, "/data").await);
    }
    let started = Instant::now();
    wait_until_shed(&data.url("/data"), ms(400)).await;
    for stream in stalled {
        let answer = answer_on(stream).await;
        assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{answer}");
        assert!(answer.ends_with(r#"{"detail":"Request body not received within 500ms"}"#), "{answer}");
    }
    assert!(started.elapsed() < ms(1500), "released after {:?}", started.elapsed());
    let served = get(&data.url("/data")).await;
    assert_eq!(served.status, StatusCode::OK, "slots are free again: {}", served.body);
    assert!(seen.requests_seen() >= 1);
}

/// Polls `url` until it is shed (every slot taken), for at most `bound`.
async fn wait_until_shed(url: &str, bound: Duration) {
    let started = Instant::now();
    while get(url).await.status != StatusCode::SERVICE_UNAVAILABLE {
        assert!(started.elapsed() < bound, "{url} was never shed: the stalled uploads do not hold their slots");
    }
}

#[tokio::test]
async fn a_stalled_upload_does_not_hold_the_drain_to_its_deadline() {
    let mut config = data::Config::for_tests();
    config.server.max_in_flight = 1;
    config.server.body_read_timeout = ms(300);
    config.server.drain_timeout = Duration::from_secs(5);
    let (mut data, _) = agent_tests::spawn_counted_data(config).await;
    let answered = tokio::spawn(answer_on(stalled_put(data.addr, "/data").await));
    wait_until_shed(&data.url("/data"), ms(250)).await;

    let started = Instant::now();
    data.begin_shutdown();
    assert_eq!(data.finished().await, shared::server::DrainOutcome::Complete);
    assert!(started.elapsed() < Duration::from_secs(2), "drain took {:?}", started.elapsed());
    assert!(answered.await.unwrap().starts_with("HTTP/1.1 408"));
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_header_read_timeout_as_http1_is() {
    let mut config = data::Config::for_tests();
    config.server.header_read_timeout = ms(300);
    let data = agent_tests::spawn_data_on(bind(None).await, config).await;
    let (mut sender, closed) = agent_tests::h2_connection(data.addr).await;
    let (status, _) = agent_tests::h2_get(&mut sender, data.addr, "/data").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let idle = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), closed)
        .await
        .expect("idle HTTP/2 connection still open after 3 s")
        .ok();
    let after = idle.elapsed();
    assert!(after >= ms(250) && after < ms(1500), "closed after {after:?} idle");
}

/// Sends `request` on a fresh connection and reads until the server closes it.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    answer_on(stream).await
}

#[tokio::test]
async fn requests_hyper_refuses_to_parse_get_fastapi_shaped_json_too() {
    let data = spawn_data().await;
    let too_many_headers: String = (0..200).map(|n| format!("X-{n}: y\r\n")).collect();
    for (request, status, detail) in [
        ("GARBAGE\r\n\r\n".to_owned(), "400 Bad Request", "Bad Request"),
        (format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)), "414 URI Too Long", "URI Too Long"),
        (
            format!("GET /data HTTP/1.1\r\nHost: x\r\n{too_many_headers}\r\n"),
            "431 Request Header Fields Too Large",
            "Request Header Fields Too Large",
        ),
    ] {
        let answer = raw_exchange(data.addr, request.as_bytes()).await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head: {answer:?}"));
        assert!(head.starts_with(&format!("HTTP/1.1 {status}\r\n")), "{answer}");
        let head = head.to_ascii_lowercase();
        let lines: Vec<_> = head.lines().collect();
        assert!(lines.contains(&"content-type: application/json"), "{answer}");
        assert!(lines.contains(&format!("content-length: {}", body.len()).as_str()), "{answer}");
        assert_eq!(serde_json::from_str::<Value>(body).unwrap(), json!({ "detail": detail }), "{answer}");
    }
    // An ordinary exchange on the same kind of connection is untouched.
    let ok = raw_exchange(data.addr, b"GET /data HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with(r#"{"processed_data":"some_insights"}"#), "{ok}");
}

#[tokio::test]
async fn slow_or_silent_clients_are_disconnected_after_the_header_read_timeout() {
    let mut data_config = data::Config::for_tests();
    data_config.server.header_read_timeout = ms(300);
    let data = agent_tests::spawn_data_on(bind(None).await, data_config).await;
    let mut reco_config = Config::for_tests(data.base_url());
    reco_config.server.header_read_timeout = ms(300);
    let reco = spawn_recommendation(reco_config).await;

    for addr in [data.addr, reco.addr] {
        agent_tests::assert_slow_clients_cut(addr, ms(300)).await;
    }
}

#[tokio::test]
async fn with_the_real_binaries_data_stopped_is_a_fast_503_and_its_restart_recovers_without_restarting_reco() {
    let data = AgentProcess::start("data", &[]);
    let data_port = data.addr.port().to_string();
    let reco = AgentProcess::start("recommendation", &[("DATA_URL", &format!("http://{}", data.addr))]);
    let recommend = format!("http://{}/recommend", reco.addr);
    let healthy = get(&recommend).await;
    if healthy.body != CONTRACT {
        dump_log("recommendation", &reco);
        dump_log("data", &data);
        panic!("no 200 while data is up: {}", healthy.body);
    }

    drop(data); // SIGKILL
    // Keep the port bound (not listening, so connections are refused) until data restarts: other tests, here or in
    // other processes on this machine, bind ephemeral ports too and could otherwise take this one meanwhile.
    let placeholder = tokio::net::TcpSocket::new_v4().unwrap();
    placeholder.set_reuseaddr(true).unwrap();
    placeholder.bind(format!("127.0.0.1:{data_port}").parse().unwrap()).expect("the freed data port can be held");
    let first = get(&recommend).await;
    assert_eq!((first.status, first.detail()), (StatusCode::SERVICE_UNAVAILABLE, json!(UNREACHABLE)));
    assert_eq!(first.headers["retry-after"], "1");
    let mut worst = first.elapsed;
    // Two more: the breaker (5 failed attempts by default) opens during the second; still 503, still fast.
    for _ in 0..2 {
        let answer = get(&recommend).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.body);
        worst = worst.max(answer.elapsed);
    }
    eprintln!(
        "data stopped, real binaries, default settings: first 503 {:?}, slowest of three {worst:?}",
        first.elapsed
    );
    assert!(worst < ms(1000), "503 took {worst:?}");

    // Data restarted on the same port. The breaker is open with the default 5 s cool-down, so recovery comes with
    // the next probe: poll (bounded) until it does, without touching the recommendation agent.
    drop(placeholder);
    let _data_again = AgentProcess::start("data", &[("PORT", &data_port)]);
    let restarted = Instant::now();
    loop {
        let answer = get(&recommend).await;
        if answer.status == StatusCode::OK {
            assert_eq!(answer.body, CONTRACT);
            break;
        }
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.body);
        assert!(answer.headers.contains_key("retry-after"));
        if restarted.elapsed() > Duration::from_secs(15) {
            dump_log("recommendation", &reco);
            panic!("no recovery within 15 s of the restart");
        }
        tokio::time::sleep(ms(100)).await;
    }
    eprintln!("recovered {:?} after data restarted", restarted.elapsed());
}

/// Prints what an agent process logged so far (its data-call lines say why a request failed).
fn dump_log(name: &str, agent: &AgentProcess) {
    while let Ok(line) = agent.lines.recv_timeout(ms(200)) {
        eprintln!("{name}: {line}");
    }
}
