//! Shutdown under load: what clients that keep their connections open see while an agent drains.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use agent_tests::{Balancer, spawn_counted_data};
use axum::http::StatusCode;
use shared::server::DrainOutcome;

/// What one keep-alive client saw.
#[derive(Debug, Default)]
struct Seen {
    ok: usize,
    /// Requests that got no answer (the connection was reset or closed under them) or a non-200 one.
    failures: Vec<String>,
}

/// Sends `GET url` back to back on `client`'s pooled connections until `stop` is set.
async fn hammer(client: reqwest::Client, url: String, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        match client.get(&url).send().await {
            Ok(response) if response.status() == StatusCode::OK => match response.bytes().await {
                Ok(_) => seen.ok += 1,
                Err(err) => seen.failures.push(format!("body cut off: {err:?}")),
            },
            Ok(response) => seen.failures.push(format!("status {}", response.status())),
            Err(err) => seen.failures.push(format!("{err:?}")),
        }
    }
    seen
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen within 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A rolling restart as Kubernetes does it: two replicas behind a balancer, one is taken out of the endpoints and
/// sent SIGTERM while keep-alive clients hammer the Service. The clients' connections to it must be handed over
/// during SHUTDOWN_DELAY, so the drain closes nothing a request is travelling on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_clients_lose_no_request_when_a_replica_shuts_down() {
    const CLIENTS: usize = 8;
    for http2 in [false, true] {
        let protocol = if http2 { "HTTP/2" } else { "HTTP/1.1" };
        let mut config = data::Config::for_tests();
        config.server.shutdown_delay = Duration::from_millis(400);
        let (mut leaving, leaving_seen) = spawn_counted_data(config.clone()).await;
        let (staying, staying_seen) = spawn_counted_data(config).await;
        let balancer = Balancer::spawn(&[leaving.addr, staying.addr]).await;
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let builder = shared::http_client::builder().no_proxy().timeout(Duration::from_secs(5));
                let client = if http2 { builder.http2_prior_knowledge() } else { builder.http1_only() };
                tokio::spawn(hammer(client.build().unwrap(), balancer.url("/data"), stop.clone()))
            })
            .collect();
        wait_until("load on the leaving replica", || leaving_seen.requests_seen() >= 20 * CLIENTS as u64).await;

        balancer.remove(leaving.addr);
        leaving.begin_shutdown();
        let outcome = leaving.finished().await;
        let handed_over = staying_seen.requests_seen();
        wait_until("load on the staying replica", || staying_seen.requests_seen() >= handed_over + 100).await;
        stop.store(true, Ordering::Relaxed);

        let (mut ok, mut failures) = (0, Vec::new());
        for client in clients {
            let seen = client.await.unwrap();
            ok += seen.ok;
            failures.extend(seen.failures);
        }
        eprintln!(
            "{protocol}: {ok} answers, {} failures; the leaving replica served {}",
            failures.len(),
            leaving_seen.requests_seen()
        );
        assert!(failures.is_empty(), "{protocol}: requests lost to the shutdown: {failures:#?}");
        assert_eq!(outcome, DrainOutcome::Complete, "{protocol}");
        staying.stop().await;
    }
}

/// Sends `GET url` back to back until the agent answers that it is shutting down (503) or stops accepting
/// connections, as a client would before moving elsewhere; counts the requests that got no answer at all.
async fn hammer_until_gone(client: reqwest::Client, url: String) -> Seen {
    let mut seen = Seen::default();
    let give_up = Instant::now() + Duration::from_secs(10);
    while Instant::now() < give_up {
        match client.get(&url).send().await {
            Ok(response) if response.status() == StatusCode::OK => match response.bytes().await {
                Ok(_) => seen.ok += 1,
                Err(err) => seen.failures.push(format!("body cut off: {err:?}")),
            },
            Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => return seen,
            Ok(response) => seen.failures.push(format!("status {}", response.status())),
            Err(err) if err.is_connect() => return seen,
            Err(err) => seen.failures.push(format!("{err:?}")),
        }
    }
    seen.failures.push("still served after 10 s".to_owned());
    seen
}

/// The single-replica case: nobody takes the agent out of a balancer, its keep-alive clients keep coming until it
/// answers 503 or refuses connections. Each of them must get an answer or a refused connection, never a request
/// lost in flight, including when the listener closes right after a fast drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_lone_agent_get_an_answer_or_a_refusal_never_a_lost_request() {
    const CLIENTS: usize = 8;
    for round in 0..3 {
        let mut config = data::Config::for_tests();
        config.server.shutdown_delay = Duration::from_millis(300);
        let (mut data, seen) = spawn_counted_data(config).await;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let client = shared::http_client::builder().no_proxy().timeout(Duration::from_secs(5)).build();
                tokio::spawn(hammer_until_gone(client.unwrap(), data.url("/data")))
            })
            .collect();
        wait_until("load", || seen.requests_seen() >= 20 * CLIENTS as u64).await;
        data.begin_shutdown();
        assert_eq!(data.finished().await, DrainOutcome::Complete);
        let mut failures = Vec::new();
        for client in clients {
            failures.extend(client.await.unwrap().failures);
        }
        assert!(failures.is_empty(), "round {round}: requests lost: {failures:#?}");
    }
}

/// During SHUTDOWN_DELAY an HTTP/1 answer says `Connection: close`, so the client's next request goes elsewhere.
#[tokio::test]
async fn during_the_delay_http1_answers_close_their_connection() {
    let mut config = data::Config::for_tests();
    config.server.shutdown_delay = Duration::from_secs(2);
    let (mut data, _) = spawn_counted_data(config).await;
    let client = agent_tests::client();
    let before = client.get(data.url("/data")).send().await.unwrap();
    assert!(before.headers().get("connection").is_none(), "keep-alive while serving normally");

    data.begin_shutdown();
    wait_until("readiness failing", || data.health.is_draining()).await;
    let during = client.get(data.url("/data")).send().await.unwrap();
    assert_eq!(during.status(), StatusCode::OK, "still served during the delay");
    assert_eq!(during.headers()["connection"], "close");
    assert_eq!(data.finished().await, DrainOutcome::Complete);
}

/// During SHUTDOWN_DELAY an HTTP/2 connection gets a GOAWAY: with no stream open, the server then closes it, long
/// before the drain.
#[tokio::test]
async fn during_the_delay_http2_connections_are_sent_away() {
    let mut config = data::Config::for_tests();
    config.server.shutdown_delay = Duration::from_secs(3);
    let (mut data, _) = spawn_counted_data(config).await;
    let (mut sender, closed) = agent_tests::h2_connection(data.addr).await;
    let (status, _) = agent_tests::h2_get(&mut sender, data.addr, "/data").await.unwrap();
    assert_eq!(status, StatusCode::OK);

    let shutdown_began = Instant::now();
    data.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(10), closed).await.unwrap().unwrap();
    let after = shutdown_began.elapsed();
    assert!(after < Duration::from_secs(1), "the HTTP/2 connection stayed open {after:?} into a 3 s delay");
    assert!(agent_tests::h2_get(&mut sender, data.addr, "/data").await.is_err());
    assert_eq!(data.finished().await, DrainOutcome::Complete);
}
