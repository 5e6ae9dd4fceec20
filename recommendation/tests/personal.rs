//! `/recommend?user=`: the models, `limit`, preferences, the prediction cache, its revalidation and its
//! invalidation, driven with `oneshot` against a small in-test data agent that serves the real wire type
//! ([`recsys::UserInsights`], built by [`recsys::Insights`] from the default data set) on the route the data agent
//! serves it on, tagged and answered 304 as the data agent does.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::{Body, to_bytes},
    extract::{Path, RawQuery, State},
    http::{HeaderMap, Request, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use recommendation::{AppState, Config, state::Backend};
use recsys::{Insights, Limits, ModelName, NewInteraction, UserQuery, default_dataset};
use serde_json::{Value, json};
use shared::agent::{Agent, router};
use tower::ServiceExt;

/// The in-test data agent: `/data` and `/insights/users/{user}`, over insights the test can change.
struct FakeData {
    insights: Mutex<Insights>,
    insights_calls: AtomicUsize,
    /// The `neighbours` parameter of each insights call (`None`: not given).
    neighbours_asked: Mutex<Vec<Option<usize>>>,
    /// Each insights call's `If-None-Match` and the status it got.
    conditions: Mutex<Vec<(Option<String>, StatusCode)>>,
    failing: AtomicBool,
    /// Answer without an `ETag`, as a data agent that predates them.
    untagged: AtomicBool,
}

async fn seed() -> Json<Value> {
    Json(json!({"processed_data": "some_insights"}))
}

async fn user_insights(
    State(data): State<Arc<FakeData>>,
    Path(user): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    data.insights_calls.fetch_add(1, Ordering::SeqCst);
    if data.failing.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"detail": "down"}))).into_response();
    }
    let (mut limit, mut categories, mut neighbours) = (10, Vec::new(), None);
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*name {
            "limit" => limit = value.parse().unwrap(),
            "category" => categories.push(value.into_owned()),
            "neighbours" => neighbours = Some(value.parse().unwrap()),
            other => panic!("unexpected query parameter {other}"),
        }
    }
    data.neighbours_asked.lock().unwrap().push(neighbours);
    let insights = data.insights.lock().unwrap();
    let (etag, untagged) = (insights.etag(), data.untagged.load(Ordering::SeqCst));
    let condition = headers.get("if-none-match").map(|tag| tag.to_str().unwrap().to_owned());
    let status = if !untagged && condition.as_ref() == Some(&etag) { StatusCode::NOT_MODIFIED } else { StatusCode::OK };
    data.conditions.lock().unwrap().push((condition, status));
    if status == StatusCode::NOT_MODIFIED {
        return (status, [("etag", etag)]).into_response();
    }
    let query = UserQuery {
        neighbours: neighbours.unwrap_or(recsys::insights::NEIGHBOURS),
        ..UserQuery::new(&user, limit, &categories)
    };
    let body = Json(insights.user_insights(&query).unwrap());
    if untagged { body.into_response() } else { ([("etag", etag)], body).into_response() }
}

struct Mesh {
    data: Arc<FakeData>,
    addr: SocketAddr,
}

impl Mesh {
    async fn start() -> Self {
        // Built once (a debug build takes a while), each test changing its own copy.
        static BUILT: OnceLock<Insights> = OnceLock::new();
        let built = BUILT.get_or_init(|| Insights::build(&default_dataset(), &Limits::default()));
        let data = Arc::new(FakeData {
            insights: Mutex::new(built.clone()),
            insights_calls: AtomicUsize::new(0),
            neighbours_asked: Mutex::default(),
            conditions: Mutex::default(),
            failing: AtomicBool::new(false),
            untagged: AtomicBool::new(false),
        });
        let app = Router::new()
            .route("/data", get(seed))
            .route("/insights/users/{user}", get(user_insights))
            .with_state(data.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { data, addr }
    }

    fn config(&self, model: ModelName) -> Config {
        let mut config = Config::for_tests(format!("http://{}", self.addr).parse().unwrap());
        config.model.model = model;
        config
    }

    fn agent(&self, model: ModelName) -> Arc<AppState> {
        Arc::new(AppState::new(&self.config(model)).unwrap())
    }

    /// An agent caching predictions for `ttl` and serving them without asking data (PREDICTION_REVALIDATE=false,
    /// as with a sidecar, whose data-updated events drop them).
    fn caching_agent(&self, model: ModelName, ttl: Duration) -> AppState {
        let mut config = self.config(model);
        config.model.prediction_cache_ttl = Some(ttl);
        config.model.prediction_revalidate = Some(false);
        AppState::new(&config).unwrap()
    }

    /// Each insights call's `If-None-Match` and the status it got, since the last time this was asked.
    fn conditions(&self) -> Vec<(Option<String>, StatusCode)> {
        std::mem::take(&mut *self.data.conditions.lock().unwrap())
    }

    /// The `ETag` of the insights now.
    fn etag(&self) -> String {
        self.data.insights.lock().unwrap().etag()
    }

    fn insights_calls(&self) -> usize {
        self.data.insights_calls.load(Ordering::SeqCst)
    }

    /// What `POST /interactions` does on the data agent.
    fn interact(&self, user: &str, item: &str) {
        let row = NewInteraction { user: user.to_owned(), item: item.to_owned(), weight: 5.0, time: None };
        self.data.insights.lock().unwrap().apply(&[row], 1_800_000_000).unwrap();
    }
}

async fn call(agent: &Arc<AppState>, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let response = router(agent).oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, headers, serde_json::from_slice(&body).unwrap())
}

async fn recommend(agent: &Arc<AppState>, query: &str) -> Value {
    let (status, _, body) = call(agent, Request::get(format!("/recommend?{query}")).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body
}

fn ids(body: &Value) -> Vec<String> {
    body["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().to_owned()).collect()
}

/// Every item `user` interacted with in the default data set.
fn history(user: &str) -> HashSet<String> {
    let data = recsys::default_dataset();
    data.interactions()
        .iter()
        .filter(|i| data.users().id(i.user) == user)
        .map(|i| data.catalog().item(i.item).id.clone())
        .collect()
}

async fn put_preferences(agent: &Arc<AppState>, user: &str, preferences: Value) {
    let request = Request::put(format!("/users/{user}/preferences"))
        .header("content-type", "application/json")
        .body(Body::from(preferences.to_string()))
        .unwrap();
    let (status, _, body) = call(agent, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn v1_and_v2_differ_for_a_user_with_history_and_keep_the_seed_fields() {
    let mesh = Mesh::start().await;
    let seen = history("u1");
    let mut answers = Vec::new();
    for model in ModelName::ALL {
        let body = recommend(&mesh.agent(model), "user=u1&limit=5").await;
        assert_eq!(body["recommendation"], "Based on data");
        assert_eq!(body["data"], json!({"processed_data": "some_insights"}));
        assert_eq!(body["model"], model.as_str());
        assert_eq!(body["user"], "u1");
        let items = ids(&body);
        assert_eq!(items.len(), 5, "{body}");
        assert!(items.iter().all(|id| !seen.contains(id)), "{model} recommended an item u1 interacted with");
        for item in body["items"].as_array().unwrap() {
            assert!(item["score"].is_number() && item["reason"].as_str().is_some_and(|r| !r.is_empty()), "{item}");
        }
        answers.push(items);
    }
    assert_ne!(answers[0], answers[1], "v1 and v2 must differ for a user with history");
}

#[tokio::test]
async fn each_model_asks_data_for_the_neighbours_it_reads_and_answers_as_with_all_of_them() {
    let mesh = Mesh::start().await;
    for (model, asked) in [(ModelName::V1, Some(0)), (ModelName::V2, None)] {
        mesh.data.neighbours_asked.lock().unwrap().clear();
        for user in ["u1", "u42", "newcomer"] {
            let body = recommend(&mesh.agent(model), &format!("user={user}&limit=7")).await;
            // What the model makes of every neighbour data has, as the agent answered before asking for fewer.
            let all = mesh.data.insights.lock().unwrap().user_insights(&UserQuery::new(user, 7, &[])).unwrap();
            let expected = model.model().recommend(&all, &recsys::Preferences::default(), 7);
            let expected: Vec<&str> = expected.iter().map(|r| r.id.as_str()).collect();
            assert_eq!(ids(&body), expected, "{model} {user}");
        }
        assert_eq!(*mesh.data.neighbours_asked.lock().unwrap(), [asked; 3], "{model}");
    }
}

#[tokio::test]
async fn the_seed_answer_has_no_model_and_no_items() {
    let mesh = Mesh::start().await;
    for query in ["", "?limit=5"] {
        let (status, _, body) =
            call(&mesh.agent(ModelName::V2), Request::get(format!("/recommend{query}")).body(Body::empty()).unwrap())
                .await;
        assert_eq!(
            (status, body),
            (
                StatusCode::OK,
                json!({"recommendation": "Based on data",
            "data": {"processed_data": "some_insights"}})
            )
        );
    }
    assert_eq!(mesh.insights_calls(), 0);
}

#[tokio::test]
async fn limit_is_honoured_and_defaults_to_the_stored_max_results() {
    let mesh = Mesh::start().await;
    for model in ModelName::ALL {
        let agent = mesh.agent(model);
        for limit in [1, 7, 100] {
            let body = recommend(&agent, &format!("user=u2&limit={limit}")).await;
            assert_eq!(ids(&body).len(), limit, "{model} limit {limit}");
        }
        assert_eq!(ids(&recommend(&agent, "user=u2").await).len(), 10, "default max_results");
        put_preferences(&agent, "u2", json!({"max_results": 3})).await;
        assert_eq!(ids(&recommend(&agent, "user=u2").await).len(), 3, "{model}: stored max_results");
        assert_eq!(ids(&recommend(&agent, "user=u2&limit=4").await).len(), 4, "{model}: limit wins");
    }
}

#[tokio::test]
async fn preferences_change_v1() {
    let mesh = Mesh::start().await;
    let agent = mesh.agent(ModelName::V1);
    let before = recommend(&agent, "user=u3&limit=5").await;
    put_preferences(&agent, "u3", json!({"categories": ["toys"]})).await;
    let after = recommend(&agent, "user=u3&limit=5").await;
    assert_ne!(ids(&before), ids(&after));
    assert_eq!(after["preferences"]["categories"], json!(["toys"]));
    for item in after["items"].as_array().unwrap() {
        assert!(item["id"].as_str().unwrap().starts_with("toys-"), "{item}");
        assert_eq!(item["reason"], "Popular in toys, one of your preferred categories");
    }
}

#[tokio::test]
async fn a_cached_prediction_hides_changes_until_its_ttl_passes() {
    let mesh = Mesh::start().await;
    let agent = Arc::new(mesh.caching_agent(ModelName::V1, Duration::from_secs(30)));
    let first = recommend(&agent, "user=u4&limit=5").await;
    assert_eq!(mesh.insights_calls(), 1);
    let top = ids(&first)[0].clone();
    mesh.interact("u4", &top);

    // The in-test data agent is served on this runtime, so the clock only jumps between requests.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(29)).await;
    tokio::time::resume();
    assert_eq!(recommend(&agent, "user=u4&limit=5").await["items"], first["items"], "cached within the TTL");
    assert_eq!(mesh.insights_calls(), 1, "a hit does not call data");

    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(1)).await;
    tokio::time::resume();
    let fresh = recommend(&agent, "user=u4&limit=5").await;
    assert_eq!(mesh.insights_calls(), 2, "expired: data is asked again");
    assert!(!ids(&fresh).contains(&top), "the new interaction shows: {fresh}");
}

#[tokio::test]
async fn predictions_are_per_model_limit_and_preferences() {
    let mesh = Mesh::start().await;
    let shared = Backend::memory();
    let ttl = Duration::from_secs(300);
    let v1 = Arc::new(mesh.caching_agent(ModelName::V1, ttl).with_prediction_store(shared.clone()));
    let v2 = Arc::new(mesh.caching_agent(ModelName::V2, ttl).with_prediction_store(shared.clone()));
    recommend(&v1, "user=u5&limit=5").await;
    recommend(&v1, "user=u5&limit=5").await;
    assert_eq!(mesh.insights_calls(), 1);
    assert_eq!(recommend(&v2, "user=u5&limit=5").await["model"], "v2");
    recommend(&v1, "user=u5&limit=6").await;
    assert_eq!(mesh.insights_calls(), 3, "another model or limit is another prediction");
    put_preferences(&v1, "u5", json!({"categories": ["garden"]})).await;
    let garden = recommend(&v1, "user=u5&limit=5").await;
    assert_eq!(mesh.insights_calls(), 4, "new preferences are a new prediction");
    assert!(ids(&garden).iter().all(|id| id.starts_with("garden-")), "{garden}");
}

#[tokio::test]
async fn data_updated_drops_predictions_for_every_replica() {
    let mesh = Mesh::start().await;
    // Two replicas of the app id share the state store (Dapr's), and Dapr delivers an event to one of them.
    let shared = Backend::memory();
    let ttl = Duration::from_secs(300);
    let replica_a = Arc::new(mesh.caching_agent(ModelName::V1, ttl).with_prediction_store(shared.clone()));
    let replica_b = Arc::new(mesh.caching_agent(ModelName::V1, ttl).with_prediction_store(shared.clone()));
    let first = recommend(&replica_b, "user=u6&limit=5").await;
    let top = ids(&first)[0].clone();
    mesh.interact("u6", &top);
    assert_eq!(recommend(&replica_a, "user=u6&limit=5").await["items"], first["items"], "shared, cached");
    assert_eq!(mesh.insights_calls(), 1);

    let event = json!({"specversion": "1.0", "id": "e1", "type": "com.dapr.event.sent",
        "data": {"version": 1, "insights_version": 1}});
    let delivery = Request::post("/events/data-updated")
        .header("content-type", "application/cloudevents+json")
        .body(Body::from(event.to_string()))
        .unwrap();
    assert_eq!(call(&replica_a, delivery).await.2, json!({"status": "SUCCESS"}));

    let after = recommend(&replica_b, "user=u6&limit=5").await;
    assert_eq!(mesh.insights_calls(), 2, "the replica that did not get the event asks data again");
    assert!(!ids(&after).contains(&top), "the interaction shows on the other replica: {after}");
}

#[tokio::test]
async fn data_failures_keep_their_fastapi_answers_and_the_stale_fallback() {
    let mesh = Mesh::start().await;
    let mut config = mesh.config(ModelName::V2);
    config.data.data_retries = 0;
    let agent = Arc::new(AppState::new(&config).unwrap());
    mesh.data.failing.store(true, Ordering::SeqCst);
    let (status, _, body) = call(&agent, Request::get("/recommend?user=u7").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status, body),
        (StatusCode::BAD_GATEWAY, json!({"detail": "The data agent returned an invalid response."}))
    );

    config.data.stale_cache_ttl = Duration::from_secs(60);
    let agent = Arc::new(AppState::new(&config).unwrap());
    mesh.data.failing.store(false, Ordering::SeqCst);
    let good = recommend(&agent, "user=u7&limit=5").await;
    mesh.data.failing.store(true, Ordering::SeqCst);
    let (status, headers, stale) =
        call(&agent, Request::get("/recommend?user=u7&limit=5").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{stale}");
    assert_eq!(headers["x-data-stale"], "true");
    assert_eq!(stale["items"], good["items"], "the last good insights of that user");
}

#[tokio::test]
async fn a_body_that_is_not_user_insights_is_a_bad_gateway() {
    let app = Router::new()
        .route("/data", get(seed))
        .route("/insights/users/{user}", get(|| async { Json(json!({"processed_data": "x"})) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let agent = Arc::new(AppState::new(&Config::for_tests(format!("http://{addr}").parse().unwrap())).unwrap());
    let (status, _, body) = call(&agent, Request::get("/recommend?user=u1").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status, body["detail"].clone()),
        (StatusCode::BAD_GATEWAY, json!("The data agent returned an invalid response."))
    );
}

/// Insights answered with `body`: every call fails (a bad answer, 502); whether data's circuit breaker opens on
/// them is returned.
async fn breaker_opens_on_insights_body(body: &'static str) -> bool {
    let app = Router::new()
        .route("/insights/users/{user}", get(move || async move { ([("content-type", "application/json")], body) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = Config::for_tests(format!("http://{addr}").parse().unwrap());
    let agent = Arc::new(AppState::new(&config).unwrap());
    for _ in 0..config.data.data_breaker_threshold {
        let answer = agent.data().user_insights("u1", 10, &[], 10, None, &shared::obs::TraceHeaders::default()).await;
        assert!(matches!(answer, Err(recommendation::DataError::DataBadBody(_))), "{answer:?}");
    }
    agent.data().reachability().circuit.state == recommendation::breaker::CircuitState::Open
}

#[tokio::test]
async fn a_body_that_is_not_json_counts_against_data_and_json_of_another_shape_does_not() {
    assert!(breaker_opens_on_insights_body("{\"popular\": [").await, "a broken body is data failing");
    assert!(!breaker_opens_on_insights_body(r#"{"processed_data": "x"}"#).await, "another shape is an answer");
}

#[tokio::test]
async fn dot_user_ids_are_refused_as_they_cannot_be_a_path_segment() {
    let mesh = Mesh::start().await;
    for user in [".", ".."] {
        let request = Request::get(format!("/recommend?user={user}")).body(Body::empty()).unwrap();
        let (status, _, body) = call(&mesh.agent(ModelName::V1), request).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["detail"][0]["loc"], json!(["query", "user"]));
    }
    assert_eq!(mesh.insights_calls(), 0);
}

#[tokio::test]
async fn by_default_a_cached_prediction_is_served_after_a_304_and_a_change_shows_at_once() {
    let mesh = Mesh::start().await;
    for model in ModelName::ALL {
        let agent = mesh.agent(model);
        let user = format!("u1{}", model.as_str());
        let query = format!("user={user}&limit=5");
        let first = recommend(&agent, &query).await;
        let tag = mesh.etag();
        assert_eq!(mesh.conditions(), [(None, StatusCode::OK)], "{model}: nothing cached yet, a plain call");
        assert_eq!(recommend(&agent, &query).await["items"], first["items"], "{model}");
        assert_eq!(mesh.conditions(), [(Some(tag.clone()), StatusCode::NOT_MODIFIED)], "{model}: revalidated");

        // What `POST /interactions` does on data: the next recommendation follows it, with no stale prediction.
        let top = ids(&first)[0].clone();
        mesh.interact(&user, &top);
        let after = recommend(&agent, &query).await;
        assert!(!ids(&after).contains(&top), "{model}: the new interaction shows: {after}");
        assert_eq!(mesh.conditions(), [(Some(tag), StatusCode::OK)], "{model}: the old tag no longer matches");
        assert_eq!(recommend(&agent, &query).await["items"], after["items"]);
        assert_eq!(mesh.conditions(), [(Some(mesh.etag()), StatusCode::NOT_MODIFIED)], "{model}: the new tag kept");
    }
}

#[tokio::test]
async fn without_revalidation_a_cached_prediction_is_served_without_asking_data() {
    let mesh = Mesh::start().await;
    let mut config = mesh.config(ModelName::V2);
    config.model.prediction_revalidate = Some(false);
    let agent = Arc::new(AppState::new(&config).unwrap());
    let first = recommend(&agent, "user=u9&limit=5").await;
    assert_eq!(recommend(&agent, "user=u9&limit=5").await["items"], first["items"]);
    assert_eq!(mesh.conditions(), [(None, StatusCode::OK)], "the default TTL caches it; the hit calls nobody");
}

#[tokio::test]
async fn an_answer_without_an_etag_is_not_cached_when_revalidating() {
    let mesh = Mesh::start().await;
    mesh.data.untagged.store(true, Ordering::SeqCst);
    let agent = mesh.agent(ModelName::V1);
    for _ in 0..2 {
        recommend(&agent, "user=u10&limit=5").await;
    }
    assert_eq!(mesh.conditions(), [(None, StatusCode::OK), (None, StatusCode::OK)], "nothing to revalidate with");
    let mut config = mesh.config(ModelName::V1);
    config.model.prediction_revalidate = Some(false);
    let agent = Arc::new(AppState::new(&config).unwrap());
    for _ in 0..2 {
        recommend(&agent, "user=u10&limit=5").await;
    }
    assert_eq!(mesh.conditions(), [(None, StatusCode::OK)], "without revalidation the TTL bounds it: cached");
}

#[tokio::test]
async fn a_304_is_a_success_for_the_breaker_and_retries_and_only_answers_a_conditional_call() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = Router::new().route(
        "/insights/users/{user}",
        get(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { (StatusCode::NOT_MODIFIED, [("etag", "\"t\"")]) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = Config::for_tests(format!("http://{addr}").parse().unwrap());
    let agent = Arc::new(AppState::new(&config).unwrap());
    let trace = shared::obs::TraceHeaders::default();
    let rounds = config.data.data_breaker_threshold as usize + 1;
    for _ in 0..rounds {
        let answer = agent.data().user_insights("u1", 10, &[], 10, Some("\"t\""), &trace).await;
        assert_eq!(answer.unwrap(), recommendation::InsightsAnswer::NotModified);
    }
    assert_eq!(calls.load(Ordering::SeqCst), rounds, "never retried");
    let reachability = agent.data().reachability();
    assert_eq!(reachability.last_outcome, Some("ok"));
    assert_eq!(reachability.circuit.state, recommendation::breaker::CircuitState::Closed);
    let unasked = agent.data().user_insights("u1", 10, &[], 10, None, &trace).await;
    assert!(matches!(unasked, Err(recommendation::DataError::DataBadStatus(StatusCode::NOT_MODIFIED))), "{unasked:?}");
}
