//! The outside attack of issue 14 ("Hardening"), rerun black-box against the agent binaries: one test per finding,
//! `f01_…` to `f10_…`, each failing when its finding is back and printing what it measured on `figures:` lines.
//!
//! `scripts/ci/hardening.sh` runs them against the release builds (`AGENT_BIN_DIR`) and reports pass/fail per
//! finding. They are `#[ignore]`d because they take a minute and load the machine; plain `cargo test` lists them as
//! ignored, never as passed. Run them by hand with
//! `AGENT_BIN_DIR=<dir> cargo test -p agent-tests --test hardening -- --ignored --nocapture --test-threads 1`.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use agent_tests::{AgentProcess, Balancer, RawBehaviour, RawUpstream};
use http_body_util::channel::Channel;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn figures(finding: &str, what: impl std::fmt::Display) {
    eprintln!("figures {finding}: {what}");
}

fn client() -> reqwest::Client {
    shared::http_client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap()
}

fn url(agent: &AgentProcess, path: &str) -> String {
    format!("http://{}{path}", agent.addr)
}

/// Sends a request head declaring a `declared`-byte body, then `sent`, then nothing; returns the open connection.
async fn stalled_upload(addr: SocketAddr, path: &str, declared: usize, sent: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(sent).await.unwrap();
    stream
}

/// What the server sends on `stream` until it closes it, or whatever came within `bound`.
async fn read_until_closed(mut stream: TcpStream, bound: Duration) -> (String, bool) {
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(bound, stream.read_to_end(&mut answer)).await.is_ok();
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_until_closed(stream, Duration::from_secs(5)).await.0
}

/// Status and JSON body of a raw HTTP/1.1 answer.
fn parse_answer(answer: &str) -> (u16, Value) {
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
    (status, body)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// CPU time the process has used (user + system), from /proc in clock ticks of 10 ms.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// Statuses (0 = no answer) of requests sent back to back by `clients` tasks until `stop`.
fn load(url: String, clients: usize, http2: bool, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<Tally>> {
    (0..clients)
        .map(|_| {
            let (url, stop) = (url.clone(), stop.clone());
            let builder = shared::http_client::builder().no_proxy().timeout(Duration::from_secs(10));
            let client = if http2 { builder.http2_prior_knowledge() } else { builder.http1_only() }.build().unwrap();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while !stop.load(Ordering::Relaxed) {
                    tally.record(client.get(&url).send().await).await;
                }
                tally
            })
        })
        .collect()
}

#[derive(Debug, Default)]
struct Tally {
    statuses: BTreeMap<u16, usize>,
    transport_errors: Vec<String>,
}

impl Tally {
    async fn record(&mut self, result: reqwest::Result<reqwest::Response>) {
        match result {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(_) => *self.statuses.entry(status).or_insert(0) += 1,
                    Err(err) => self.transport_errors.push(format!("body: {err}")),
                }
            }
            Err(err) => self.transport_errors.push(format!("{err:?}")),
        }
    }

    async fn join(handles: Vec<tokio::task::JoinHandle<Tally>>) -> Self {
        let mut total = Self::default();
        for handle in handles {
            let tally = handle.await.unwrap();
            for (status, n) in tally.statuses {
                *total.statuses.entry(status).or_insert(0) += n;
            }
            total.transport_errors.extend(tally.transport_errors);
        }
        total
    }

    fn count(&self, status: u16) -> usize {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    fn non_200(&self) -> usize {
        self.statuses.iter().filter(|(s, _)| **s != 200).map(|(_, n)| n).sum::<usize>() + self.transport_errors.len()
    }
}

async fn wait_exit(agent: &mut AgentProcess, bound: Duration) -> Option<i32> {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await; // polling a child's exit, bounded
    }
}

/// F1: a stalled request body used to hold an in-flight slot (and every drain) for as long as the client liked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "attack suite: scripts/ci/hardening.sh runs it against release builds"]
async fn f01_stalled_bodies_free_their_slots_within_the_body_timeout() {
    let envs = [("MAX_IN_FLIGHT", "8"), ("BODY_READ_TIMEOUT", "2s")];
    let data = AgentProcess::start("data", &envs);
    let reco = AgentProcess::start("recommendation", &[envs[0], envs[1], ("DATA_URL", &url(&data, ""))]);
    let http = client();
    for (agent, path) in [(&data, "/data"), (&reco, "/users/alice/preferences")] {
        let started = Instant::now();
        let mut stalled = Vec::new();
        for _ in 0..8 {
            stalled.push(stalled_upload(agent.addr, path, 1000, br#"{"processed_data":"#).await);
        }
        let probe = if path == "/data" { url(agent, "/data") } else { url(agent, "/recommend") };
        // A probe must not take a slot before the last upload's head is read (that upload would be shed, not held);
        // nothing shows from outside that the heads were read, hence a pause well below the body timeout.
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Then polled until the uploads hold every slot (they must, within the body timeout).
        let during = loop {
            let status = http.get(&probe).send().await.unwrap().status();
            if status == StatusCode::SERVICE_UNAVAILABLE || started.elapsed() > Duration::from_millis(1500) {
                break status;
            }
        };
        let reads: Vec<_> =
            stalled.into_iter().map(|s| tokio::spawn(read_until_closed(s, Duration::from_secs(6)))).collect();
        let mut answers = Vec::new();
        for read in reads {
            answers.push(read.await.unwrap());
        }
        let released_after = started.elapsed();
        let after = http.get(&probe).send().await.unwrap().status();
        let timed_out = answers.iter().filter(|(a, closed)| *closed && parse_answer(a).0 == 408).count();
        let json_ok =
            answers.iter().all(|(a, _)| parse_answer(a).1 == json!({"detail": "Request body not received within 2s"}));
        figures(
            "F1",
            format!(
                "{path}: 8 stalled uploads, MAX_IN_FLIGHT=8: others got {during} meanwhile; {timed_out}/8 answered 408 \
                 JSON and closed after {released_after:.2?} (BODY_READ_TIMEOUT=2s); then {after}"
            ),
        );
        assert_eq!(during, StatusCode::SERVICE_UNAVAILABLE, "{path}: the uploads did not even hold their slots");
        assert_eq!(timed_out, 8, "{path}: {answers:?}");
        assert!(json_ok, "{path}: {answers:?}");
        assert!(released_after < Duration::from_secs(4), "{path}: released after {released_after:?}");
        assert_ne!(after, StatusCode::SERVICE_UNAVAILABLE, "{path}: slots still held");
    }

    // HTTP/2: eight stalled streams on one connection, released the same way.
    let stream = TcpStream::connect(data.addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake::<_, _, Channel<Bytes, Infallible>>(
        TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let started = Instant::now();
    let streams: Vec<_> = (0..8)
        .map(|_| {
            let mut sender = sender.clone();
            let addr = data.addr;
            tokio::spawn(async move {
                let (mut body_tx, body) = Channel::<Bytes, Infallible>::new(1);
                body_tx.send_data(Bytes::from_static(br#"{"processed_data":"#)).await.unwrap();
                let request = hyper::Request::put(format!("http://{addr}/data"))
                    .header("content-type", "application/json")
                    .header("content-length", "1000")
                    .body(body)
                    .unwrap();
                let status = sender.send_request(request).await.map(|r| r.status().as_u16());
                drop(body_tx);
                status.unwrap_or(0)
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for stream in streams {
        statuses.push(tokio::time::timeout(Duration::from_secs(10), stream).await.expect("stream released").unwrap());
    }
    figures("F1", format!("HTTP/2: 8 stalled streams answered {statuses:?} after {:.2?}", started.elapsed()));
    assert!(statuses.iter().all(|s| *s == 408), "{statuses:?}");

    // A stalled upload during a shutdown: the drain no longer runs to DRAIN_TIMEOUT (and exit 1).
    let mut lone = AgentProcess::start("data", &[("BODY_READ_TIMEOUT", "2s"), ("DRAIN_TIMEOUT", "10s")]);
    let _stalled = stalled_upload(lone.addr, "/data", 1000, b"{").await;
    tokio::time::sleep(Duration::from_millis(200)).await; // the head reaches the agent (nothing to observe it by)
    let started = Instant::now();
    lone.terminate();
    let code = wait_exit(&mut lone, Duration::from_secs(15)).await;
    figures("F1", format!("SIGTERM with a stalled upload in flight: exit {code:?} after {:.2?}", started.elapsed()));
    assert_eq!(code, Some(0));
    assert!(started.elapsed() < Duration::from_secs(5), "the drain waited {:?}", started.elapsed());
}

/// F2: METRICS_PORT had no header timeout, and slow-header connections there took the process's file descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "attack suite: scripts/ci/hardening.sh runs it against release builds"]
async fn f02_slow_headers_are_cut_on_every_port() {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let envs = [("METRICS_PORT", &*metrics_port.to_string()), ("HEADER_READ_TIMEOUT", "2s")];
    let data = AgentProcess::start_with_fd_limit("data", &envs, 512);
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let http = client();

    for (port, addr) in [("METRICS_PORT", metrics_addr), ("PORT", data.addr)] {
        // More slow-header connections than the process may open files.
        let started = Instant::now();
        let mut slow = Vec::new();
        for _ in 0..600 {
            let Ok(mut stream) = TcpStream::connect(addr).await else { break };
            let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
            slow.push(tokio::spawn(async move {
                let (_, closed) = read_until_closed(stream, Duration::from_secs(8)).await;
                closed.then(|| started.elapsed())
            }));
        }
        let during = Instant::now();
        let served = http.get(url(&data, "/data")).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
        let served_after = during.elapsed();
        let mut closed_after = Vec::new();
        for stream in slow {
            closed_after.push(stream.await.unwrap());
        }
        let at_once = closed_after.iter().filter(|t| t.is_some_and(|t| t < Duration::from_millis(1500))).count();
        let at_timeout = closed_after.iter().filter(|t| t.is_some_and(|t| t >= Duration::from_millis(1500))).count();
        let left_open = closed_after.iter().filter(|t| t.is_none()).count();
        let last = closed_after.iter().flatten().max().copied().unwrap_or_default();
        figures(
            "F2",
            format!(
                "{port}: 600 slow-header connections (ulimit -n 512, HEADER_READ_TIMEOUT=2s): GET /data on PORT answered \
                 {served} after {served_after:.2?} meanwhile; {at_once} closed at once (over the connection bound), \
                 {at_timeout} at the timeout, the last after {last:.2?}, {left_open} left open"
            ),
        );
        assert_eq!(served, 200, "{port}: the service port stopped answering");
        assert_eq!(left_open, 0, "{port}: slow connections left open");
        if port == "METRICS_PORT" {
            assert!(served_after < Duration::from_secs(1), "a flood on the metrics port held up the service port");
            assert!(
                at_once >= 600 - shared::metrics::METRICS_PORT_MAX_CONNECTIONS,
                "the metrics port held {at_timeout}"
            );
        }
    }
    let scraped = http.get(format!("http://{metrics_addr}/metrics")).send().await.unwrap().status();
    assert_eq!(scraped, 200, "the metrics port serves again");
}

/// F3: the in-process user store evicted in hash order, so junk writes removed every earlier user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "attack suite: scripts/ci/hardening.sh runs it against release builds"]
async fn f03_the_in_process_store_keeps_active_users_and_its_bound() {
    let reco = AgentProcess::start("recommendation", &[("DATA_URL", "http://127.0.0.1:9")]);
    let http = client();
    let prefs = json!({"categories": ["books"], "max_results": 5});
    let base = url(&reco, "");
    let put = {
        let (http, base, prefs) = (http.clone(), base.clone(), prefs.clone());
        move |user: String| {
            let (http, url, prefs) = (http.clone(), format!("{base}/users/{user}/preferences"), prefs.clone());
            async move { http.put(url).json(&prefs).send().await.unwrap().status() }
        }
    };
    for n in 0..200 {
        assert_eq!(put(format!("active-{n}")).await, 200);
        assert_eq!(put(format!("idle-{n}")).await, 200);
    }
    // 12 000 junk users from 8 clients, more than the 10 000 entries the store keeps; the active users keep
    // reading their preferences meanwhile, the idle ones do not.
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let junk: Vec<_> = (0..8)
        .map(|_| {
            let (put, next) = (put.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= 12_000 {
                        break;
                    }
                    assert_eq!(put(format!("junk-{n}")).await, 200);
                }
            })
        })
        .collect();
    let mut active_misses = 0;
    while junk.iter().any(|j| !j.is_finished()) {
        for n in 0..200 {
            let status = http.get(url(&reco, &format!("/users/active-{n}/preferences"))).send().await.unwrap().status();
            active_misses += usize::from(status != 200);
        }
    }
    let kept = |prefix: &'static str| {
        let http = http.clone();
        let base = url(&reco, "");
        async move {
            let mut kept = 0;
            for n in 0..200 {
                let url = format!("{base}/users/{prefix}-{n}/preferences");
                kept += usize::from(http.get(url).send().await.unwrap().status() == 200);
            }
            kept
        }
    };
    let (active, idle) = (kept("active").await, kept("idle").await);
    let metrics = http.get(url(&reco, "/metrics")).send().await.unwrap().text().await.unwrap();
    let evictions =
        metrics.lines().find(|l| l.starts_with("state_memory_evictions_total")).unwrap_or("none").to_owned();
    figures(
        "F3",
        format!(
            "12 000 junk PUTs in {:.1?} into a store of 10 000: {active}/200 active users kept ({active_misses} \
             misses while reading them during the flood), {idle}/200 idle ones kept (documented: least recently used \
             go first, so anyone can push idle users out); {evictions}",
            started.elapsed()
        ),
    );
    assert_eq!((active, active_misses), (200, 0), "users in use were evicted");
    assert!(evictions.starts_with("state_memory_evictions_total"), "evictions are not counted");
}

/// F4: a data call on a connection closed before any answer was a 502 and counted against the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "attack suite: scripts/ci/hardening.sh runs it against release builds"]
async fn f04_closed_connections_and_data_restarts_cost_no_request() {
    let upstream = RawUpstream::spawn(RawBehaviour::AnswerOnceThenClose).await;
    let reco = AgentProcess::start("recommendation", &[("DATA_URL", upstream.base_url().as_ref())]);
    let http = client();
    let mut statuses = BTreeMap::new();
    let mut slow = 0;
    for _ in 0..2000 {
        let started = Instant::now();
        let status = http.get(url(&reco, "/recommend")).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
        *statuses.entry(status).or_insert(0) += 1;
        slow += usize::from(started.elapsed() > Duration::from_secs(1));
    }
    figures(
        "F4",
        format!(
            "2000 /recommend against an upstream closing each connection after its answer: {statuses:?} ({slow} over 1 s)"
        ),
    );
    assert_eq!(statuses, [(200, 2000)].into());

    // A rolling restart of data under load, as Kubernetes does it (replicas behind a Service), with the default
    // SHUTDOWN_DELAY of 0s: data closes its idle connections at once.
    let leaving = AgentProcess::start("data", &[]);
    let staying = AgentProcess::start("data", &[]);
    let balancer = Balancer::spawn(&[leaving.addr, staying.addr]).await;
    let reco = AgentProcess::start("recommendation", &[("DATA_URL", balancer.base_url().as_ref())]);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(url(&reco, "/recommend"), 8, false, stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await; // load is the point of the test
    let mut leaving = leaving;
    balancer.remove(leaving.addr);
    leaving.terminate();
    let code = wait_exit(&mut leaving, Duration::from_secs(15)).await;
    let replacement = AgentProcess::start("data", &[]);
    balancer.add(replacement.addr);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let tally = Tally::join(clients).await;
    let ready: Value = http.get(url(&reco, "/readyz")).send().await.unwrap().json().await.unwrap();
    let circuit = &ready["checks"]["data"]["circuit"];
    figures(
        "F4",
        format!(
            "rolling restart of data under 8 clients' load: {:?} + {} transport errors; old data exit {code:?}; \
             breaker {circuit}",
            tally.statuses,
            tally.transport_errors.len()
        ),
    );
    assert_eq!(tally.non_200(), 0, "{tally:?}");
    assert_eq!(circuit["state"], "closed");
}

/// F5: an HTTP/2 connection never timed out after its first request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "attack suite: scripts/ci/hardening.sh runs it against release builds"]
async fn f05_idle_http2_connections_are_closed() {
    let data = AgentProcess::start("data", &[("HEADER_READ_TIMEOUT", "2s")]);
    let rss_before = rss_kib(data.pid());
    let mut ended = Vec::new();
    for _ in 0..1000 {
        let (mut sender, closed) = agent_tests::h2_connection(data.addr).await;
        let (status, _) = agent_tests::h2_get(&mut sender, data.addr, "/data").await.unwrap();
        assert_eq!(status, 200);
        ended.push((sender, closed));
    }
    let rss_held = rss_kib(data.pid());
    let idle = Instant::now();
    let mut still_open = 0;
    for (_sender, mut closed) in ended {
        let remaining = Duration::from_secs(6).saturating_sub(idle.elapsed());
        if tokio::time::timeout(remaining, &mut closed).await.is_err() {
            still_open += 1;
        }
    }
    let closed_after = idle.elapsed();
    figures(
        "F5",
        format!(
            "1000 idle HTTP/2 connections (HEADER_READ_TIMEOUT=2s): {still_open} still open, the rest closed within \
             {closed_after:.2?}; RSS {rss_before} KiB before, {rss_held} KiB with them open, {} KiB after",
            rss_kib(data.pid())
        ),
    );
    assert_eq!(still_open, 0);
}

/// F6: the body limit was hard-coded and body errors, path errors and hyper's own answers were not FastAPI JSON;
/// the OpenAPI disagreed with behaviour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "attack suite: scripts/ci/hardening.sh runs it against release builds"]
async fn f06_errors_are_fastapi_json_with_the_configured_limit_and_the_openapi_matches() {
    let small = AgentProcess::start("data", &[("MAX_BODY_BYTES", "1024")]);
    let large = AgentProcess::start("data", &[("MAX_BODY_BYTES", "1048576")]);
    let reco = AgentProcess::start("recommendation", &[("DATA_URL", &url(&small, ""))]);
    let mut failures = Vec::new();
    let mut check = |case: &str, (status, body): (u16, Value), expected_status: u16, expected: Value| {
        figures("F6", format!("{case}: {status} {body}"));
        if status != expected_status || body != expected {
            failures.push(format!("{case}: got {status} {body}, expected {expected_status} {expected}"));
        }
    };
    let chunked = |path: &str, chunk: &[u8], chunks: usize| {
        let mut request = format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n"
        )
        .into_bytes();
        for _ in 0..chunks {
            request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            request.extend_from_slice(chunk);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        request
    };
    let answer = raw_exchange(small.addr, &chunked("/data", &[b' '; 500], 4)).await;
    check(
        "MAX_BODY_BYTES=1024, 2000-byte chunked PUT /data",
        parse_answer(&answer),
        413,
        json!({"detail": "Request body too large: the limit is 1024 bytes"}),
    );
    let big = format!(r#"{{"processed_data":"{}"}}"#, "x".repeat(100 * 1024));
    let answer = client().put(url(&large, "/data")).header("content-type", "application/json").body(big).send().await;
    let answer: Value = answer.unwrap().json().await.unwrap();
    check(
        "MAX_BODY_BYTES=1MiB, 100 KiB PUT /data (read whole, then too long for the model)",
        (422, answer["detail"][0]["type"].clone()),
        422,
        json!("string_too_long"),
    );
    let mut post = chunked("/events/data-updated", &[b' '; 16 * 1024], 5);
    post.splice(0..3, b"POST".iter().copied());
    check(
        "80 KiB chunked POST /events/data-updated",
        parse_answer(&raw_exchange(reco.addr, &post).await),
        413,
        json!({"detail": "Request body too large: the limit is 65536 bytes"}),
    );
    let bad_chunk =
        b"PUT /data HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    check(
        "bad chunk size",
        parse_answer(&raw_exchange(small.addr, bad_chunk).await),
        400,
        json!({"detail": "There was an error parsing the body"}),
    );
    let pattern = "^[A-Za-z0-9._-]{1,64}$";
    check(
        "PUT /users/%ff/preferences",
        parse_answer(
            &raw_exchange(
                reco.addr,
                b"PUT /users/%ff/preferences HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
            )
            .await,
        ),
        422,
        json!({"detail": [{"type": "string_pattern_mismatch", "loc": ["path", "user_id"],
            "msg": format!("String should match pattern '{pattern}'"), "input": "\u{fffd}", "ctx": {"pattern": pattern}}]}),
    );
    let huge = client()
        .put(url(&reco, "/users/alice/preferences"))
        .header("content-type", "application/json")
        .body(r#"{"max_results": 18446744073709551615}"#)
        .send()
        .await
        .unwrap();
    check(
        "max_results: 18446744073709551615",
        (huge.status().as_u16(), huge.json::<Value>().await.unwrap()["detail"][0]["type"].clone()),
        422,
        json!("less_than_equal"),
    );
    let headers: String = (0..200).map(|n| format!("X-{n}: y\r\n")).collect();
    for (case, request, status, detail) in [
        ("malformed request", "GARBAGE\r\n\r\n".to_owned(), 400, "Bad Request"),
        ("70 000-byte URI", format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)), 414, "URI Too Long"),
        (
            "200 headers",
            format!("GET /data HTTP/1.1\r\nHost: x\r\n{headers}\r\n"),
            431,
            "Request Header Fields Too Large",
        ),
    ] {
        check(
            case,
            parse_answer(&raw_exchange(small.addr, request.as_bytes()).await),
            status,
            json!({ "detail": detail }),
        );
    }
    // The OpenAPI says what the routes do.
    let extra =
        client().put(url(&small, "/data")).json(&json!({"processed_data": "x", "extra": 1})).send().await.unwrap();
    let extra: Value = extra.json().await.unwrap();
    let data_spec: Value = client().get(url(&small, "/openapi.json")).send().await.unwrap().json().await.unwrap();
    check(
        "PUT /data with an unknown field, and its schema",
        (
            422,
            json!([
                extra["detail"][0]["type"],
                data_spec["components"]["schemas"]["DataUpdate"]["additionalProperties"]
            ]),
        ),
        422,
        json!(["extra_forbidden", false]),
    );
    let empty = client().post(url(&reco, "/events/data-updated")).send().await.unwrap();
    let empty = (empty.status().as_u16(), empty.json::<Value>().await.unwrap());
    let reco_spec: Value = client().get(url(&reco, "/openapi.json")).send().await.unwrap().json().await.unwrap();
    let required = reco_spec["paths"]["/events/data-updated"]["post"]["requestBody"]["required"].clone();
    check(
        "POST /events/data-updated without a body, and whether its schema requires one",
        (empty.0, json!([empty.1, required == json!(true)])),
        200,
        json!([{"status": "DROP"}, false]),
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

/// F7: every scrape rendered the exposition, so scrapers in a loop slowed /recommend tenfold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "attack suite: scripts/ci/hardening.sh runs it against release builds"]
async fn f07_metrics_scrapes_stay_cheap() {
    let data = AgentProcess::start("data", &[]);
    let reco = AgentProcess::start("recommendation", &[("DATA_URL", &url(&data, ""))]);
    let (reco_url, pid) = (url(&reco, ""), reco.pid());
    let latencies = |with_scrapers: bool| {
        let reco_url = reco_url.clone();
        async move {
            let stop = Arc::new(AtomicBool::new(false));
            let scrapers =
                if with_scrapers { load(format!("{reco_url}/metrics"), 64, false, stop.clone()) } else { vec![] };
            let cpu_before = cpu_time(pid);
            let http = client();
            let mut samples = Vec::new();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(3) {
                let t = Instant::now();
                assert_eq!(http.get(format!("{reco_url}/recommend")).send().await.unwrap().status(), 200);
                samples.push(t.elapsed());
            }
            stop.store(true, Ordering::Relaxed);
            let scrapes = Tally::join(scrapers).await;
            let cpu = cpu_time(pid) - cpu_before;
            samples.sort();
            (samples[samples.len() / 2], samples[samples.len() * 99 / 100], scrapes.count(200), cpu)
        }
    };
    let (p50, p99, _, cpu_alone) = latencies(false).await;
    let (p50_scraped, p99_scraped, scrapes, cpu_scraped) = latencies(true).await;
    let cpu_per_scrape = (cpu_scraped.saturating_sub(cpu_alone)).as_secs_f64() * 1e6 / scrapes.max(1) as f64;
    figures(
        "F7",
        format!(
            "/recommend p50 {p50:.2?} p99 {p99:.2?} alone; p50 {p50_scraped:.2?} p99 {p99_scraped:.2?} with 64 \
             connections scraping /metrics ({scrapes} scrapes in 3 s, about {cpu_per_scrape:.0} µs of agent CPU each)"
        ),
    );
    // A scrape costs about what any small request costs, not a render (which took several times more).
    assert!(cpu_per_scrape < 100.0, "{cpu_per_scrape:.0} µs of CPU per scrape");
}

/// F8: text logs wrote client-controlled values bare, so a header could forge fields and lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "attack suite: scripts/ci/hardening.sh runs it against release builds"]
async fn f08_text_logs_quote_what_clients_send() {
    let reco = AgentProcess::start("recommendation", &[("LOG_FORMAT", "text"), ("DATA_URL", "http://127.0.0.1:9")]);
    let http = client();
    let forged = "abc status=200 trace_id=forged";
    http.get(url(&reco, "/recommend")).header("x-request-id", forged).send().await.unwrap();
    let event = json!({"id": "e1\" outcome=ok\nforged=line", "data": 5});
    http.post(url(&reco, "/events/data-updated")).json(&event).send().await.unwrap();
    let mut lines = Vec::new();
    while let Ok(line) = reco.lines.recv_timeout(Duration::from_secs(1)) {
        lines.push(line);
    }
    let mut forged_fields = 0;
    for line in &lines {
        // Outside quoted values, at most one trace_id, and no line that starts with injected text.
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
        let trace_ids = outside.split_whitespace().filter(|w| w.starts_with("trace_id=")).count();
        forged_fields += usize::from(trace_ids > 1 || line.starts_with("forged"));
    }
    let request_line = lines.iter().find(|l| l.contains("request_id=")).cloned().unwrap_or_default();
    figures("F8", format!("{} text lines, {forged_fields} with forged fields; e.g. {request_line}", lines.len()));
    assert_eq!(forged_fields, 0, "{lines:#?}");
    assert!(request_line.contains(&format!("request_id=\"{forged}\"")), "{request_line}");
}

/// F9: token handling: compared with an early exit, an empty token turned the check off, direct mode sent none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "attack suite: scripts/ci/hardening.sh runs it against release builds"]
async fn f09_tokens_are_checked_refused_when_empty_and_sent_in_direct_mode() {
    let mut empty = tokio::process::Command::new(agent_tests::binary("data"))
        .env_clear()
        .envs([("PORT", "0"), ("BIND_ADDR", "127.0.0.1"), ("APP_API_TOKEN", "")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let code = match tokio::time::timeout(Duration::from_secs(3), empty.wait()).await {
        Ok(status) => status.unwrap().code(),
        Err(_) => None,
    };
    let mut stderr = String::new();
    if code.is_some() {
        empty.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
    }
    let stderr = stderr.trim().to_owned();
    let verdict = if code.is_some() { "exit" } else { "still serving, without a token check, after 3 s; exit" };
    figures("F9", format!("APP_API_TOKEN= (empty): {verdict} {code:?} {stderr}"));
    assert_eq!(code, Some(2));
    assert!(stderr.contains("APP_API_TOKEN") && stderr.lines().count() == 1, "{stderr}");

    let data = AgentProcess::start("data", &[("APP_API_TOKEN", "s3cret-token")]);
    let http = client();
    let mut answers = Vec::new();
    for token in [None, Some("s3cret"), Some("s3cret-token-and-more"), Some("x3cret-token"), Some("s3cret-token")] {
        let mut request = http.get(url(&data, "/data"));
        if let Some(token) = token {
            request = request.header("dapr-api-token", token);
        }
        answers.push(request.send().await.unwrap().status().as_u16());
    }
    figures("F9", format!("no token, prefix, longer, wrong, right: {answers:?}"));
    assert_eq!(answers, [401, 403, 403, 403, 200]);

    let with =
        AgentProcess::start("recommendation", &[("DATA_URL", &url(&data, "")), ("DATA_API_TOKEN", "s3cret-token")]);
    let without = AgentProcess::start("recommendation", &[("DATA_URL", &url(&data, ""))]);
    let with_status = http.get(url(&with, "/recommend")).send().await.unwrap().status().as_u16();
    let refused = http.get(url(&without, "/recommend")).send().await.unwrap();
    let refused = (refused.status().as_u16(), refused.json::<Value>().await.unwrap());
    let mut logged = String::new();
    while let Ok(line) = without.lines.recv_timeout(Duration::from_millis(500)) {
        if line.contains("data call failed") {
            logged = line;
        }
    }
    figures(
        "F9",
        format!("direct mode with DATA_API_TOKEN: {with_status}; without: {} {}; log: {logged}", refused.0, refused.1),
    );
    assert_eq!(with_status, 200);
    assert_eq!(refused.0, 502);
    assert!(logged.contains("401") && logged.contains("DATA_API_TOKEN"), "{logged}");
}

/// F10: the drain closed keep-alive connections under requests already travelling on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "attack suite: scripts/ci/hardening.sh runs it against release builds"]
async fn f10_a_restart_under_keep_alive_load_loses_no_request() {
    let data = AgentProcess::start("data", &[]);
    for http2 in [false, true] {
        let protocol = if http2 { "HTTP/2" } else { "HTTP/1.1" };
        let envs = [("DATA_URL", &*url(&data, "")), ("SHUTDOWN_DELAY", "2s")];
        let mut leaving = AgentProcess::start("recommendation", &envs);
        let staying = AgentProcess::start("recommendation", &envs);
        let balancer = Balancer::spawn(&[leaving.addr, staying.addr]).await;
        let stop = Arc::new(AtomicBool::new(false));
        let clients = load(balancer.url("/recommend"), 8, http2, stop.clone());
        tokio::time::sleep(Duration::from_secs(1)).await; // load is the point of the test
        leaving.terminate();
        // The endpoint update reaches the balancer a little after the SIGTERM, as it does in a cluster.
        tokio::time::sleep(Duration::from_millis(300)).await;
        balancer.remove(leaving.addr);
        let code = wait_exit(&mut leaving, Duration::from_secs(20)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        let tally = Tally::join(clients).await;
        figures(
            "F10",
            format!(
                "{protocol}: rolling restart of recommendation under 8 keep-alive clients (SHUTDOWN_DELAY=2s): {:?}, \
                 {} transport errors; exit {code:?}",
                tally.statuses,
                tally.transport_errors.len()
            ),
        );
        assert_eq!(tally.non_200(), 0, "{protocol}: {tally:?}");
        assert_eq!(code, Some(0), "{protocol}");
    }

    // The lone agent of the original attack: clients keep coming until it answers 503 or refuses connections.
    let mut lone = AgentProcess::start("recommendation", &[("DATA_URL", &*url(&data, "")), ("SHUTDOWN_DELAY", "2s")]);
    let gone = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (url, gone) = (url(&lone, "/recommend"), gone.clone());
            let http = client();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while !gone.load(Ordering::Relaxed) {
                    match http.get(&url).send().await {
                        Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => break,
                        Err(err) if err.is_connect() => break,
                        other => tally.record(other).await,
                    }
                }
                tally
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    lone.terminate();
    let code = wait_exit(&mut lone, Duration::from_secs(20)).await;
    gone.store(true, Ordering::Relaxed);
    let tally = Tally::join(clients).await;
    figures(
        "F10",
        format!(
            "lone agent, 8 keep-alive clients until 503/refused across SIGTERM: {:?}, {} transport errors; exit {code:?}",
            tally.statuses,
            tally.transport_errors.len()
        ),
    );
    assert!(tally.transport_errors.is_empty(), "{:#?}", tally.transport_errors);
    assert_eq!(code, Some(0));
}
