//! The Istio manifests enforced by real Envoy sidecars: every expected number comes from the parsed manifests.

mod support;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use mesh::{Endpoint, Manifests, envoy};
use serde_json::Value;
use support::{StandIn, TempDir, World, assert_binomial, http};

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn with_fault_example(file: &str) -> Manifests {
    let mut m = support::manifests();
    m.replace_virtual_service(&support::istio_dir().join("examples").join(file)).expect("fault example parses");
    m
}

/// `envoy --mode validate` accepts every bootstrap the translator produces: both sidecars for the default
/// manifests, the canary and each fault example, and what `mesh-config` writes for compose.
#[tokio::test]
async fn every_generated_config_passes_envoy_validate() {
    let dir = TempDir::new("validate");
    let mut configs: Vec<(String, Value)> = Vec::new();
    let mut worlds = Vec::new(); // keeps the certificate files alive until validation
    for (label, m) in [
        ("default", support::manifests()),
        ("abort", with_fault_example("fault-abort.yaml")),
        ("delay", with_fault_example("fault-delay.yaml")),
    ] {
        let w = World::with(m, "validate-world");
        let tls = w.identity("x", &w.allowed_principal);
        let rec_host = w.recommendation_host();
        let client = envoy::client_bootstrap(
            &w.m,
            &mesh::ClientSidecar {
                node_id: "c".into(),
                admin: mesh::Addr::loopback_any(),
                tls: tls.clone(),
                outbound: vec![
                    mesh::Outbound {
                        host: w.data_host.clone(),
                        listen: mesh::Addr::loopback_any(),
                        endpoints: vec![Endpoint::version(local(1), "v1")],
                        server_identities: vec![mesh::spiffe_id(&w.namespace, "data")],
                    },
                    mesh::Outbound {
                        host: rec_host,
                        listen: mesh::Addr::loopback_any(),
                        endpoints: vec![Endpoint::version(local(2), "v1"), Endpoint::version(local(3), "v2")],
                        server_identities: vec![mesh::spiffe_id(&w.namespace, "recommendation")],
                    },
                ],
            },
        )
        .unwrap();
        configs.push((format!("{label}-client"), client));
        for app in ["data", "recommendation"] {
            let server = envoy::server_bootstrap(
                &w.m,
                &mesh::ServerSidecar {
                    node_id: app.into(),
                    admin: mesh::Addr::loopback_any(),
                    namespace: w.namespace.clone(),
                    labels: [("app".to_owned(), app.to_owned())].into(),
                    service_port: 8000,
                    listen: mesh::Addr::loopback_any(),
                    app: local(4).into(),
                    tls: tls.clone(),
                },
            )
            .unwrap();
            configs.push((format!("{label}-{app}-server"), server));
        }
        worlds.push(w);
    }
    let out = dir.0.join("compose");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-config"))
        .arg("--istio-dir")
        .arg(support::istio_dir())
        .arg("--out")
        .arg(&out)
        .arg("--mount")
        .arg(&out)
        .output()
        .expect("mesh-config runs");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    for f in ["recommendation-sidecar.json", "data-sidecar.json"] {
        let v: Value = serde_json::from_slice(&std::fs::read(out.join(f)).unwrap()).unwrap();
        configs.push((format!("compose-{f}"), v));
    }
    for (name, config) in &configs {
        let (ok, output) = support::validate(config, &dir.0, name);
        assert!(ok, "envoy --mode validate rejected {name}:\n{output}");
    }
    // And the check can fail: a route to a cluster that does not exist is rejected.
    let mut broken = configs[0].1.clone();
    broken["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["validate_clusters"] =
        true.into();
    broken["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap()
        .retain(|c| !c["name"].as_str().unwrap().contains("|v1|"));
    assert!(!support::validate(&broken, &dir.0, "broken").0, "validate accepted a route to a missing cluster");
}

/// Retries: data fails the first `attempts` tries → 200 after attempts+1 tries; one failure more → the 503 comes
/// back after exactly attempts+1 tries (`attempts` counts retries, as in Istio).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_virtual_service() {
    let w = World::new("retries");
    let attempts = w.data_route().retries.as_ref().expect("retries in the data VirtualService").attempts;
    let data = StandIn::start("data", None).await;
    let (client, port, _server, _) = w.data_pair(data.addr).await;
    let url = format!("http://127.0.0.1:{port}/data");

    let ok = http()
        .get(&url)
        .header("x-scenario", "recovers")
        .header("x-fail-first", attempts.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "{}", ok.text().await.unwrap_or_default());
    assert_eq!(data.seen("recovers"), attempts + 1, "tries seen by data");

    let fail = http()
        .get(&url)
        .header("x-scenario", "exhausted")
        .header("x-fail-first", (attempts + 1).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(fail.status(), 503);
    assert_eq!(data.seen("exhausted"), attempts + 1, "tries seen by data");
    let retries = client.stat(&format!("cluster.{}.upstream_rq_retry", w.data_cluster())).await;
    assert_eq!(retries, u64::from(2 * attempts), "Envoy's retry counter");
}

/// perTryTimeout cuts a slow try and the retry answers; when every try is slow, the route timeout (or the last
/// per-try timeout, whichever comes first) bounds the whole call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_and_overall_timeouts_bound_latency() {
    let w = World::new("timeouts");
    let route = w.data_route().clone();
    let retries = route.retries.clone().expect("retries");
    let per_try = retries.per_try_timeout.expect("perTryTimeout").0;
    let overall = route.timeout.expect("timeout").0;
    let data = StandIn::start("data", None).await;
    let (client, port, _server, _) = w.data_pair(data.addr).await;
    let url = format!("http://127.0.0.1:{port}/data");
    let slack = Duration::from_millis(1500);
    let slow = (per_try + Duration::from_secs(5)).as_millis().to_string();

    let started = Instant::now();
    let r = http()
        .get(&url)
        .header("x-scenario", "one-slow")
        .header("x-delay-first", "1")
        .header("x-delay-ms", &slow)
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(data.seen("one-slow"), 2);
    assert!(took >= per_try && took < per_try + slack, "one slow try took {took:?}, perTryTimeout {per_try:?}");

    let started = Instant::now();
    let r = http()
        .get(&url)
        .header("x-scenario", "all-slow")
        .header("x-delay-first", "1000")
        .header("x-delay-ms", (overall + Duration::from_secs(5)).as_millis().to_string())
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 504);
    let bound = overall.min(per_try * (retries.attempts + 1));
    assert!(took >= bound && took < bound + slack, "all slow took {took:?}, expected about {bound:?}");
    let tries = data.seen("all-slow");
    assert!(tries >= 2 && tries <= retries.attempts + 1, "tries {tries}");
    let per_try_timeouts = client.stat(&format!("cluster.{}.upstream_rq_per_try_timeout", w.data_cluster())).await;
    assert!(per_try_timeouts >= 2, "per-try timeouts counted: {per_try_timeouts}");
}

/// mTLS STRICT: the sidecar pair works end to end with the real agents; plain HTTP, a client certificate from
/// another CA, a server certificate from another CA and a server with the wrong identity all fail, each for the
/// reason Envoy's TLS stats name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_strict_admits_only_mesh_identities() {
    let w = World::new("mtls");
    assert_eq!(w.m.peer_mode(&w.namespace, &[("app".to_owned(), "data".to_owned())].into()), "STRICT");
    let data = agent_tests::AgentProcess::start("data", &[]);
    let (client, port, server, server_port) = w.data_pair(data.addr).await;

    // The pair, driven by the real recommendation agent.
    let rec = agent_tests::AgentProcess::start(
        "recommendation",
        &[
            ("DATA_MODE", "direct"),
            ("DATA_URL", &format!("http://127.0.0.1:{port}")),
            ("DATA_RETRIES", "0"),
            ("DATA_TIMEOUT", "7s"),
        ],
    );
    let r = http().get(format!("http://{}/recommend", rec.addr)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"]["processed_data"], "some_insights", "{body}");
    let listener_ssl = |stat: &str| format!("listener.{}.ssl.{stat}", envoy::inbound_listener_name(8000));
    assert!(server.stat(&listener_ssl("handshake")).await >= 1, "{:?}", server.stats_matching("ssl").await);

    // Plain HTTP straight to data's sidecar: no TLS handshake, no answer.
    let before = server.stat(&listener_ssl("connection_error")).await;
    let plain = http().get(format!("http://127.0.0.1:{server_port}/data")).send().await;
    assert!(plain.is_err(), "plain HTTP got an answer: {:?}", plain.map(|r| r.status()));
    assert!(server.stat(&listener_ssl("connection_error")).await > before, "{:?}", server.stats_matching("ssl").await);

    // A caller with the allowed identity, but certified by an impostor CA: the server refuses the chain.
    let impostor = mesh::certs::Ca::new("impostor CA").unwrap();
    let mut fake = w.identity_from(&impostor, "impostor-client", &w.allowed_principal);
    fake.trusted_ca = w.identity("trust-only", &w.sa_principal("unused")).trusted_ca;
    let endpoint = Endpoint::version(local(server_port), "v1");
    let (fake_client, fake_ports) =
        w.client("impostor-client", fake, vec![(w.data_host.clone(), vec![endpoint], "data".into())]).await;
    let before = server.stat(&listener_ssl("fail_verify_error")).await;
    let r = http().get(format!("http://127.0.0.1:{}/data", fake_ports[0])).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(server.stat(&listener_ssl("fail_verify_error")).await > before, "{:?}", server.stats_matching("ssl").await);
    drop(fake_client);

    // A server certified by an impostor CA, and a genuine server with another identity: the client refuses.
    let stand_in = StandIn::start("not-data", None).await;
    let fake_server_tls = w.identity_from(&impostor, "impostor-server", &w.sa_principal("data"));
    let (_fake_server, fake_port) = w.server("impostor-server", "data", "v1", stand_in.addr, fake_server_tls).await;
    let wrong_tls = w.identity("wrong-sa", &w.sa_principal("recommendation"));
    let (_wrong_server, wrong_port) = w.server("wrong-sa-server", "data", "v1", stand_in.addr, wrong_tls).await;
    for (target, stat) in [(fake_port, "fail_verify_error"), (wrong_port, "fail_verify_san")] {
        let (c, ports) = w
            .client(
                &format!("client-{stat}"),
                w.identity(&format!("client-{stat}"), &w.allowed_principal),
                vec![(w.data_host.clone(), vec![Endpoint::version(local(target), "v1")], "data".into())],
            )
            .await;
        let r = http().get(format!("http://127.0.0.1:{}/data", ports[0])).send().await.unwrap();
        assert_eq!(r.status(), 503, "{stat}");
        let counted = c.stat(&format!("cluster.{}.ssl.{stat}", w.data_cluster())).await;
        assert!(counted >= 1, "{stat}: {:?}", c.stats_matching("ssl").await);
    }
    assert_eq!(stand_in.total(), 0, "a refused server was reached");
    drop(client);
}

/// AuthorizationPolicy: only the allowed principal, method and path pass; everything else is 403 from RBAC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_allows_only_the_declared_caller_method_and_path() {
    let w = World::new("authz");
    let rule = &w.m.authorization_policies.iter().find(|a| a.metadata.name == "data").unwrap().spec.rules[0];
    let op = &rule.to[0].operation;
    let method = op.methods[0].clone();
    let path = op.paths[0].clone();
    let other_method = ["POST", "DELETE", "PUT"].into_iter().find(|m| !op.methods.iter().any(|x| x == m)).unwrap();
    let other_path =
        ["/healthz", "/openapi.json", "/not-allowed"].into_iter().find(|p| !op.paths.iter().any(|x| x == p)).unwrap();
    let data = StandIn::start("data", None).await;
    let (_client, port, server, server_port) = w.data_pair(data.addr).await;
    let base = format!("http://127.0.0.1:{port}");
    let m = |s: &str| reqwest::Method::from_bytes(s.as_bytes()).unwrap();

    let r = http().request(m(&method), format!("{base}{path}")).send().await.unwrap();
    assert_eq!(r.status(), 200, "allowed caller");
    let r = http().request(m(other_method), format!("{base}{path}")).send().await.unwrap();
    assert_eq!(r.status(), 403, "{other_method} {path}");
    let r = http().request(m(&method), format!("{base}{other_path}")).send().await.unwrap();
    assert_eq!(r.status(), 403, "{method} {other_path}");

    let intruder = w.identity("intruder", &w.sa_principal("intruder"));
    let (_c2, ports) = w
        .client(
            "intruder-client",
            intruder,
            vec![(w.data_host.clone(), vec![Endpoint::version(local(server_port), "v1")], "data".into())],
        )
        .await;
    let r = http().request(m(&method), format!("http://127.0.0.1:{}{path}", ports[0])).send().await.unwrap();
    assert_eq!(r.status(), 403, "another identity");

    let prefix = envoy::inbound_stat_prefix(8000);
    assert_eq!(server.stat(&format!("http.{prefix}.rbac.denied")).await, 3);
    assert_eq!(server.stat(&format!("http.{prefix}.rbac.allowed")).await, 1);
    assert_eq!(data.total(), 1, "only the allowed request reached data");
}

/// Outlier detection: with one replica always answering 500, it is ejected after exactly consecutive5xxErrors
/// errors; callers never see them (retries go to the other host) and nothing reaches it afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_the_failing_replica() {
    let w = World::new("outlier");
    let dr = w.m.destination_rule(&w.data_host).unwrap();
    let od = dr.spec.traffic_policy.as_ref().unwrap().outlier_detection.clone().expect("outlierDetection");
    let threshold = od.consecutive_5xx_errors.expect("consecutive5xxErrors");
    let good = agent_tests::AgentProcess::start("data", &[]);
    let bad = StandIn::start("bad", Some(500)).await;
    let (_s1, good_port) =
        w.server("data-good", "data", "v1", good.addr, w.identity("good", &w.sa_principal("data"))).await;
    let (_s2, bad_port) =
        w.server("data-bad", "data", "v1", bad.addr, w.identity("bad", &w.sa_principal("data"))).await;
    let endpoints = vec![Endpoint::version(local(good_port), "v1"), Endpoint::version(local(bad_port), "v1")];
    let (client, ports) = w
        .client(
            "client",
            w.identity("client", &w.allowed_principal),
            vec![(w.data_host.clone(), endpoints, "data".into())],
        )
        .await;
    let url = format!("http://127.0.0.1:{}/data", ports[0]);
    let ejected = format!("cluster.{}.outlier_detection.ejections_enforced_consecutive_5xx", w.data_cluster());

    let bound = 20 * threshold + 100;
    let mut sent = 0;
    while client.stat(&ejected).await == 0 {
        assert!(sent < bound, "no ejection after {sent} requests; bad replica saw {}", bad.total());
        let r = http().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "a caller saw the failing replica");
        sent += 1;
    }
    assert_eq!(bad.total(), threshold, "errors before ejection");
    let active = format!("cluster.{}.outlier_detection.ejections_active", w.data_cluster());
    assert_eq!(client.stat(&active).await, 1);
    for _ in 0..50 {
        let r = http().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(bad.total(), threshold, "the ejected replica still got traffic");
    println!("outlier: ejected after {threshold} errors, {sent} requests; then all of 50 more to the healthy replica");
}

/// Canary: 1000 calls to recommendation split by the VirtualService weights, within binomial tolerance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_weights_split_the_traffic() {
    let w = World::new("canary");
    let host = w.recommendation_host();
    let vs = w.m.virtual_service(&host).unwrap();
    let dr = w.m.destination_rule(&host).expect("canary DestinationRule");
    let weights: Vec<(String, u32)> =
        vs.spec.http[0].route.iter().map(|d| (d.destination.subset.clone().unwrap(), d.weight.unwrap_or(0))).collect();
    let total_weight: u32 = weights.iter().map(|x| x.1).sum();
    let mut stand_ins = Vec::new();
    let mut servers = Vec::new();
    let mut endpoints = Vec::new();
    for subset in &dr.spec.subsets {
        let s = StandIn::start(&subset.name, None).await;
        let version = subset.labels.get("version").cloned().unwrap_or_default();
        let tls = w.identity(&format!("rec-{}", subset.name), &w.sa_principal("recommendation"));
        let (e, port) = w.server(&format!("rec-{}", subset.name), "recommendation", &version, s.addr, tls).await;
        endpoints.push(Endpoint { addr: local(port).into(), labels: subset.labels.clone() });
        stand_ins.push(s);
        servers.push(e);
    }
    let (client, ports) = w
        .client(
            "client",
            w.identity("client", &w.sa_principal("ingress")),
            vec![(host.clone(), endpoints, "recommendation".into())],
        )
        .await;
    let url = format!("http://127.0.0.1:{}/recommend", ports[0]);
    let n = 1000u64;
    let client_http = http();
    let results = futures_join(n, 16, |_| {
        let c = client_http.clone();
        let url = url.clone();
        async move {
            let r = c.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            v["served_by"].as_str().unwrap().to_owned()
        }
    })
    .await;
    let mut report = Vec::new();
    for (subset, weight) in &weights {
        let count = results.iter().filter(|s| *s == subset).count() as u64;
        let p = f64::from(*weight) / f64::from(total_weight);
        assert_binomial(count, n, p, &format!("subset {subset}"));
        let cluster = envoy::outbound_cluster_name(8000, Some(subset), &host);
        assert_eq!(client.stat(&format!("cluster.{cluster}.upstream_rq_200")).await, count);
        report.push(format!("{subset}: {count}/{n} (weight {weight})"));
    }
    println!("canary: {}", report.join(", "));
}

/// Runs `n` jobs with at most `width` in flight.
async fn futures_join<T, F, Fut>(n: u64, width: u64, job: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let mut out = Vec::new();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        if set.len() as u64 >= width {
            out.push(set.join_next().await.unwrap().expect("job"));
        }
        set.spawn(job(i));
    }
    while let Some(r) = set.join_next().await {
        out.push(r.expect("job"));
    }
    out
}

/// fault-abort example: the declared share of calls gets the declared status, before routing (no retries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_abort_example_aborts_the_declared_share() {
    let w = World::with(with_fault_example("fault-abort.yaml"), "abort");
    let abort = w.data_route().fault.clone().unwrap().abort.expect("abort fault");
    let p = abort.percentage.map_or(100.0, |p| p.value) / 100.0;
    let data = StandIn::start("data", None).await;
    let (client, port, _server, _) = w.data_pair(data.addr).await;
    let url = format!("http://127.0.0.1:{port}/data");
    let n = 1000;
    let c = http();
    let codes = futures_join(n, 16, |_| {
        let c = c.clone();
        let url = url.clone();
        async move { c.get(url).send().await.unwrap().status().as_u16() }
    })
    .await;
    let aborted = codes.iter().filter(|c| **c == abort.http_status).count() as u64;
    assert_eq!(aborted + codes.iter().filter(|c| **c == 200).count() as u64, n, "only aborts and successes");
    assert_binomial(aborted, n, p, "aborted");
    let prefix = envoy::outbound_stat_prefix(&w.data_host);
    assert_eq!(client.stat(&format!("http.{prefix}.fault.aborts_injected")).await, aborted);
    assert_eq!(u64::from(data.total()), n - aborted, "aborted calls must not reach data (nor be retried)");
    println!("fault abort: {aborted}/{n} answered {} (declared {:.1} %)", abort.http_status, p * 100.0);
}

/// fault-delay example: the declared share of calls is delayed by the declared time, which the route timeout
/// does not cut (the delay happens before routing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_delay_example_delays_the_declared_share() {
    let w = World::with(with_fault_example("fault-delay.yaml"), "delay");
    let delay = w.data_route().fault.clone().unwrap().delay.expect("delay fault");
    let p = delay.percentage.map_or(100.0, |p| p.value) / 100.0;
    let fixed = delay.fixed_delay.0;
    let data = StandIn::start("data", None).await;
    let (client, port, _server, _) = w.data_pair(data.addr).await;
    let url = format!("http://127.0.0.1:{port}/data");
    // All calls are in flight at once (the delay is long), but their starts are spread over 2 s so the delayed
    // ones do not all reach the data cluster in the same instant: a burst above the DestinationRule's
    // http1MaxPendingRequests would (correctly) overflow with 503.
    let n = 200;
    let spread = Duration::from_secs(2) / n as u32;
    let c = shared::http::client::builder().no_proxy().timeout(fixed + Duration::from_secs(20)).build().unwrap();
    let took = futures_join(n, n, |i| {
        let c = c.clone();
        let url = url.clone();
        async move {
            tokio::time::sleep(spread * i as u32).await;
            let started = Instant::now();
            let r = c.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            started.elapsed()
        }
    })
    .await;
    // Envoy's timers run on the event loop's cached clock and may fire a few ms before a client's own clock
    // says the delay has passed; undelayed calls take milliseconds, so half the delay separates the two.
    let delayed = took.iter().filter(|t| **t >= fixed / 2).count() as u64;
    let early = took.iter().filter(|t| **t >= fixed / 2 && **t < fixed - Duration::from_millis(100)).count();
    assert_eq!(early, 0, "delayed calls shorter than the declared delay: {took:?}");
    assert_binomial(delayed, n, p, "delayed");
    let slowest = took.iter().max().unwrap();
    assert!(*slowest < fixed + Duration::from_secs(5), "slowest {slowest:?}");
    let prefix = envoy::outbound_stat_prefix(&w.data_host);
    assert_eq!(client.stat(&format!("http.{prefix}.fault.delays_injected")).await, delayed);
    println!("fault delay: {delayed}/{n} delayed by {fixed:?} (declared {:.1} %)", p * 100.0);
}

/// Trace context survives recommendation → its sidecar → data's sidecar → data, and data learns its caller's
/// SPIFFE identity from x-forwarded-client-cert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_headers_and_caller_identity_reach_data() {
    let w = World::new("trace");
    let data = StandIn::start("data", None).await;
    let (_client, port, _server, _) = w.data_pair(data.addr).await;
    let rec = agent_tests::AgentProcess::start(
        "recommendation",
        &[("DATA_MODE", "direct"), ("DATA_URL", &format!("http://127.0.0.1:{port}")), ("DATA_RETRIES", "0")],
    );
    let sent = [
        ("x-request-id", "5f0c1d2e-aaaa-4bbb-8ccc-0123456789ab"),
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("tracestate", "vendor=opaque"),
        ("baggage", "tenant=agents"),
        ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ("x-b3-parentspanid", "0020000000000001"),
        ("x-b3-sampled", "1"),
    ];
    let mut req = http().get(format!("http://{}/recommend", rec.addr));
    for (k, v) in sent {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let seen = &body["data"]["headers"];
    for (k, v) in sent {
        assert_eq!(seen[k], v, "{k} at data: {seen}");
    }
    let xfcc = seen["x-forwarded-client-cert"].as_str().unwrap_or_default();
    assert!(xfcc.contains(&format!("URI=spiffe://{}", w.allowed_principal)), "XFCC: {xfcc:?}");
    assert!(xfcc.contains(&format!("By={}", mesh::spiffe_id(&w.namespace, "data"))), "XFCC: {xfcc:?}");
}
