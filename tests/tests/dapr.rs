//! The agents with real Dapr sidecars (daprd 1.18) and a real Redis: invocation, tokens and secrets, state,
//! pub/sub with SUCCESS/RETRY/DROP, and resiliency. See `agent_tests::dapr` for how the mesh is set up and where
//! daprd comes from. Every test here is `#[ignore]`d (plain `cargo test` needs no installers and lists them as
//! ignored); `scripts/dapr-test.sh` runs them, and CI runs that script through `scripts/ci/dapr.sh`.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agent_tests::{
    StandIn, client,
    dapr::{APP_API_TOKEN, DAPR_API_TOKEN, Mesh, MeshOptions, tools, wait_until_async},
};
use axum::{
    Router,
    http::{HeaderMap, StatusCode as HttpStatus, header::CONTENT_TYPE},
    routing::get,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const CONTRACT: &str = r#"{"recommendation":"Based on data","data":{"processed_data":"some_insights"}}"#;
const EVENT_BOUND: Duration = Duration::from_secs(30);

macro_rules! mesh {
    ($options:expr) => {
        Mesh::start(tools(), $options).await
    };
}

async fn get_text(url: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut request = client().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

const APP: (&str, &str) = ("dapr-api-token", APP_API_TOKEN);
const DAPR: (&str, &str) = ("dapr-api-token", DAPR_API_TOKEN);

async fn readyz_events(mesh: &Mesh) -> Value {
    let ready: Value = client().get(mesh.reco_url("/readyz")).send().await.unwrap().json().await.unwrap();
    ready["checks"]["events"].clone()
}

#[tokio::test]
#[ignore = "needs daprd and redis-server: scripts/dapr-test.sh runs it"]
async fn invocation_through_two_sidecars_in_both_forms_with_tokens_from_env_and_secret_store() {
    let mesh = mesh!(MeshOptions::default());

    // The user calls the recommendation agent, which reaches data through both sidecars.
    assert_eq!(get_text(&mesh.reco_url("/recommend"), &[APP]).await, (StatusCode::OK, CONTRACT.to_owned()));
    // Through the data sidecar to the recommendation app, then on to data: both invoke forms.
    let via_url = mesh.data_sidecar.url("/v1.0/invoke/recommendation/method/recommend");
    assert_eq!(get_text(&via_url, &[DAPR]).await, (StatusCode::OK, CONTRACT.to_owned()));
    let via_header = mesh.reco_sidecar.url("/data");
    let (status, body) = get_text(&via_header, &[DAPR, ("dapr-app-id", "data")]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"processed_data":"some_insights"}"#));
    let ready: Value = client().get(mesh.reco_url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["checks"]["data"]["mode"], "dapr");
    assert_eq!(ready["checks"]["state"], "dapr");

    // The data agent has its app token from the environment, the recommendation agent from the secret store:
    // both refuse callers without it, and say which problem it is.
    for url in [mesh.data_url("/data"), mesh.reco_url("/recommend")] {
        let (status, body) = get_text(&url, &[]).await;
        assert_eq!((status, body.as_str()), (StatusCode::UNAUTHORIZED, r#"{"detail":"Not authenticated"}"#), "{url}");
        let (status, body) = get_text(&url, &[("dapr-api-token", "guess")]).await;
        assert_eq!((status, body.as_str()), (StatusCode::FORBIDDEN, r#"{"detail":"Invalid API token"}"#), "{url}");
        let probe = url.replace("/data", "/healthz").replace("/recommend", "/healthz");
        assert_eq!(get_text(&probe, &[]).await.0, StatusCode::OK, "{probe} must stay open for probes");
    }
    // The sidecar refuses API calls without its token (what the agents' DAPR_API_TOKEN is for).
    assert_eq!(get_text(&via_url, &[]).await.0, StatusCode::UNAUTHORIZED);
}

/// A data app that records the headers of each request.
fn recording_data(seen: Arc<Mutex<Vec<HeaderMap>>>) -> Router {
    Router::new().route(
        "/data",
        get(move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(headers);
                axum::Json(json!({"processed_data": "some_insights"}))
            }
        }),
    )
}

#[tokio::test]
#[ignore = "needs daprd and redis-server: scripts/dapr-test.sh runs it"]
async fn traceparent_reaches_data_through_both_sidecars() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stand_in = StandIn::serve(recording_data(seen.clone())).await;
    let mesh = mesh!(MeshOptions { data_stand_in_port: Some(stand_in.addr.port()), ..MeshOptions::default() });

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let (status, _) = get_text(&mesh.reco_url("/recommend"), &[APP, ("traceparent", &traceparent)]).await;
    assert_eq!(status, StatusCode::OK);

    let seen = seen.lock().unwrap();
    let arrived = seen.last().expect("data was called")["traceparent"].to_str().unwrap().to_owned();
    // Each sidecar adds its own span, so the parent id changes; the trace id must survive both hops.
    assert_eq!(arrived.split('-').nth(1), Some(trace_id), "traceparent at data: {arrived}");
    // The app token reaches the app from its sidecar; the sidecar token never leaves the recommendation pod.
    assert_eq!(seen.last().unwrap()["dapr-api-token"], APP_API_TOKEN);
}

async fn put_json(url: &str, body: Value, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Value) {
    let mut request = client().put(url).json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.json().await.unwrap())
}

#[tokio::test]
#[ignore = "needs daprd and redis-server: scripts/dapr-test.sh runs it"]
async fn user_state_round_trips_through_redis_with_ttl_and_etag_conflicts() {
    let mesh = mesh!(MeshOptions { reco_env: vec![("STATE_TTL".into(), "3s".into())], ..MeshOptions::default() });
    let prefs = mesh.reco_url("/users/alice/preferences");

    let stored = json!({"categories": ["books"], "max_results": 5});
    let (status, headers, body) = put_json(&prefs, stored.clone(), &[APP]).await;
    assert_eq!((status, &body), (StatusCode::OK, &stored));
    let first_etag = headers["etag"].to_str().unwrap().to_owned();
    let (status, headers, body) = put_json(&prefs, json!({"max_results": 7}), &[APP, ("if-match", &first_etag)]).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"categories": [], "max_results": 7})));
    assert_ne!(headers["etag"].to_str().unwrap(), first_etag);
    // A writer still holding the first version loses: 412, and the newer preferences stay.
    let (status, _, body) = put_json(&prefs, stored.clone(), &[APP, ("if-match", &first_etag)]).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    let read: Value = client().get(&prefs).header(APP.0, APP.1).send().await.unwrap().json().await.unwrap();
    assert_eq!(read, json!({"categories": [], "max_results": 7}));

    // Stored in Redis through the sidecar's state API, where the sidecar itself can read it.
    let (status, raw) = get_text(&mesh.reco_sidecar.url("/v1.0/state/statestore/preferences-alice"), &[DAPR]).await;
    assert_eq!((status, serde_json::from_str::<Value>(&raw).unwrap()), (StatusCode::OK, read));

    // Concurrent recommendations for one user: the ETag retries lose no update.
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let url = mesh.reco_url("/recommend?user=alice");
            tokio::spawn(async move {
                let body: Value = client().get(url).header(APP.0, APP.1).send().await.unwrap().json().await.unwrap();
                assert_eq!(body["preferences"], json!({"categories": [], "max_results": 7}), "{body}");
                body["recommendations_served"].as_u64().unwrap()
            })
        })
        .collect();
    let mut served = Vec::new();
    for task in tasks {
        served.push(task.await.unwrap());
    }
    served.sort_unstable();
    assert_eq!(served, vec![1, 2, 3, 4, 5, 6]);

    // The last recommendation carries ttlInSeconds (STATE_TTL=3s): Redis expires it.
    let history = mesh.reco_sidecar.url("/v1.0/state/statestore/history-alice");
    let (status, raw) = get_text(&history, &[DAPR]).await;
    assert_eq!(status, StatusCode::OK);
    let stored: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(stored["recommendations_served"], 6);
    assert_eq!(stored["last"]["data"], json!({"processed_data": "some_insights"}));
    let started = Instant::now();
    wait_until_async("the last recommendation expires", Duration::from_secs(10), || {
        let history = history.clone();
        async move { get_text(&history, &[DAPR]).await.0 == StatusCode::NO_CONTENT }
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5), "expired only after {:?}", started.elapsed());
    let preferences_kept = get_text(&mesh.reco_sidecar.url("/v1.0/state/statestore/preferences-alice"), &[DAPR]).await;
    assert_eq!(preferences_kept.0, StatusCode::OK, "preferences have no TTL");
}

#[tokio::test]
#[ignore = "needs daprd and redis-server: scripts/dapr-test.sh runs it"]
async fn a_data_change_is_published_delivered_and_seen_by_the_next_recommendation() {
    let mesh = mesh!(MeshOptions::default());
    mesh.wait_subscribed().await;
    // Warm the cache (30 s by default with events): without the event the old data would be served.
    assert_eq!(get_text(&mesh.reco_url("/recommend"), &[APP]).await.1, CONTRACT);

    let (status, _, body) =
        put_json(&mesh.data_url("/data"), json!({"processed_data": "fresh_insights"}), &[APP]).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"version": 1, "processed_data": "fresh_insights", "event": "published"}))
    );
    wait_until_async("the event is delivered and handled", EVENT_BOUND, || async {
        readyz_events(&mesh).await["success"] == 1
    })
    .await;
    let (_, body) = get_text(&mesh.reco_url("/recommend"), &[APP]).await;
    assert_eq!(body, r#"{"recommendation":"Based on data","data":{"processed_data":"fresh_insights"}}"#);
}

async fn publish_raw(mesh: &Mesh, body: Value) {
    let response = client()
        .post(mesh.data_sidecar.url("/v1.0/publish/pubsub/data-updated"))
        .header(DAPR.0, DAPR.1)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
#[ignore = "needs daprd and redis-server: scripts/dapr-test.sh runs it"]
async fn retry_answers_are_redelivered_and_drop_answers_are_not() {
    let mut mesh = mesh!(MeshOptions::default());
    mesh.wait_subscribed().await;

    // An event that can never be handled: DROP, once.
    publish_raw(&mesh, json!({"unexpected": true})).await;
    wait_until_async("the malformed event is dropped", EVENT_BOUND, || async {
        readyz_events(&mesh).await["drop"] == 1
    })
    .await;

    // A good event while data is down: the cache is cleared but the new data cannot be fetched, so RETRY, and
    // the sidecar delivers it again (Resiliency eventRetry: every second).
    mesh.stop_data();
    publish_raw(&mesh, json!({"version": 7, "processed_data": "while_down"})).await;
    wait_until_async("the event is redelivered", EVENT_BOUND, || async {
        readyz_events(&mesh).await["retry"].as_u64().unwrap_or(0) >= 3
    })
    .await;
    // Redeliveries at one-second intervals have happened meanwhile; the dropped event was not among them.
    assert_eq!(readyz_events(&mesh).await["drop"], 1);

    // Data is back: a later redelivery succeeds (once the data circuit breaker lets calls through again).
    mesh.restart_data().await;
    wait_until_async("the retried event finally succeeds", EVENT_BOUND, || async {
        readyz_events(&mesh).await["success"] == 1
    })
    .await;
    assert_eq!(readyz_events(&mesh).await["drop"], 1);
}

#[tokio::test]
#[ignore = "needs daprd and redis-server: scripts/dapr-test.sh runs it"]
async fn resiliency_retries_a_failing_data_agent() {
    // Data fails twice with 503 (say, while restarting), then answers.
    let calls = Arc::new(Mutex::new(0u32));
    let counter = calls.clone();
    let flaky = Router::new().route(
        "/data",
        get(move || {
            let counter = counter.clone();
            async move {
                let mut calls = counter.lock().unwrap();
                *calls += 1;
                let status = if *calls <= 2 { HttpStatus::SERVICE_UNAVAILABLE } else { HttpStatus::OK };
                (status, [(CONTENT_TYPE, "application/json")], r#"{"processed_data":"some_insights"}"#)
            }
        }),
    );
    let stand_in = StandIn::serve(flaky).await;
    let mesh = mesh!(MeshOptions {
        data_stand_in_port: Some(stand_in.addr.port()),
        // The agent's own retries (if any) are off: every retry seen here is the sidecar's.
        reco_env: vec![("DATA_RETRIES".into(), "0".into())],
        ..MeshOptions::default()
    });

    let started = Instant::now();
    let (status, body) = get_text(&mesh.reco_url("/recommend"), &[APP]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, CONTRACT));
    assert_eq!(*calls.lock().unwrap(), 3, "one request from the agent, two retries by the sidecar");
    assert!(started.elapsed() < Duration::from_secs(2), "retries took {:?}", started.elapsed());
}

#[tokio::test]
#[ignore = "needs daprd and redis-server: scripts/dapr-test.sh runs it"]
async fn new_interactions_reach_cached_predictions_through_pub_sub() {
    let mesh = mesh!(MeshOptions { reco_env: vec![("MODEL".into(), "v2".into())], ..MeshOptions::default() });
    mesh.wait_subscribed().await;
    let recommend = mesh.reco_url("/recommend?user=u1&limit=5");
    let items = |body: &str| -> Vec<String> {
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["model"], "v2", "{body}");
        body["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().to_owned()).collect()
    };
    let (status, first) = get_text(&recommend, &[APP]).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let first = items(&first);
    assert_eq!(first.len(), 5);
    // Cached in Redis through the sidecar (PREDICTION_CACHE_TTL is 5m with a sidecar), under the generation key.
    let (status, generation) =
        get_text(&mesh.reco_sidecar.url("/v1.0/state/statestore/predictions-generation"), &[DAPR]).await;
    assert_eq!(status, StatusCode::OK, "{generation}");

    // u1 takes the first recommendation; data publishes data-updated, the recommendation agent drops predictions.
    let taken = first[0].clone();
    let response = client()
        .post(mesh.data_url("/interactions"))
        .header(APP.0, APP.1)
        .json(&json!({"interactions": [{"user": "u1", "item": taken, "weight": 5.0}]}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{:?}", response.text().await);
    wait_until_async("the event is delivered and handled", EVENT_BOUND, || async {
        readyz_events(&mesh).await["success"].as_u64() >= Some(1)
    })
    .await;
    let (status, after) = get_text(&recommend, &[APP]).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    let after = items(&after);
    assert!(!after.contains(&taken), "the cached prediction was not dropped: {after:?}");
    let (_, new_generation) =
        get_text(&mesh.reco_sidecar.url("/v1.0/state/statestore/predictions-generation"), &[DAPR]).await;
    assert_ne!(new_generation, generation, "the event started a new generation");
}

#[tokio::test]
#[ignore = "needs daprd and redis-server: scripts/dapr-test.sh runs it"]
async fn user_insights_through_dapr_keep_their_query_and_a_burst_of_batches_is_published_once() {
    let mut mesh = mesh!(MeshOptions {
        // A quiet window no burst below can outlast on a loaded machine, so exactly one event is due.
        data_env: vec![("EVENT_DEBOUNCE".into(), "3s".into()), ("EVENT_MAX_DELAY".into(), "20s".into())],
        ..MeshOptions::default()
    });
    mesh.wait_subscribed().await;

    // The contract route through the recommendation sidecar: Dapr forwards the query string (repeated keys too).
    let query = "insights/users/u1?limit=5&category=books&category=music";
    let (status, direct) = get_text(&mesh.data_url(&format!("/{query}")), &[APP]).await;
    assert_eq!(status, StatusCode::OK, "{direct}");
    let via_dapr = mesh.reco_sidecar.url(&format!("/v1.0/invoke/data/method/{query}"));
    let (status, invoked) = get_text(&via_dapr, &[DAPR]).await;
    assert_eq!((status, &invoked), (StatusCode::OK, &direct));
    let answer: Value = serde_json::from_str(&invoked).unwrap();
    assert_eq!(answer["popular"].as_array().unwrap().len(), 5, "limit reached the app");
    assert_eq!(answer["popular_in"][1]["category"], "music", "both categories reached the app");

    // A burst of batches: each applied at once, announced by one event with the latest version.
    let page: Value = serde_json::from_str(&get_text(&mesh.data_url("/items?limit=5"), &[APP]).await.1).unwrap();
    for (n, item) in page["items"].as_array().unwrap().iter().enumerate() {
        let batch = json!({"interactions": [{"user": "u1", "item": item["id"], "weight": 1}]});
        let response =
            client().post(mesh.data_url("/interactions")).header(APP.0, APP.1).json(&batch).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let applied: Value = response.json().await.unwrap();
        assert_eq!(applied, json!({"applied": 1, "new_users": 0, "version": n + 1, "event": "scheduled"}));
    }
    let data = mesh.data.take().expect("the data agent runs");
    let deadline = Instant::now() + EVENT_BOUND;
    let published = loop {
        let line = data
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the data agent logs the publication within the bound");
        if line.contains("data change published") {
            break line;
        }
        assert!(!line.contains("data change not published"), "the sidecar refused the event: {line}");
    };
    // The first event published already has version 5: batches 1 to 4 were not announced on their own.
    assert!(
        published.contains(r#""insights_version":5"#),
        "one event for the burst, with the latest version: {published}"
    );
    // Delivered to the recommendation agent's subscription, whatever its answer to the new `insights_version` field.
    wait_until_async("the event is delivered", EVENT_BOUND, || async {
        let events = readyz_events(&mesh).await;
        ["success", "retry", "drop"].iter().map(|k| events[k].as_u64().unwrap_or(0)).sum::<u64>() >= 1
    })
    .await;
}
