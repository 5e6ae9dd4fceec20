//! Route tests for the recommendation agent that need no data agent, driven in-process with `oneshot`.

use std::sync::Arc;

use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Method, Request, StatusCode},
};
use recommendation::{AppState, Config};
use serde_json::{Value, json};
use shared::agent::{Agent, router};
use tower::ServiceExt;

fn app() -> Router {
    // Nothing listens on port 9 (discard) on loopback; these tests never reach the data call.
    let config = Config::for_tests("http://127.0.0.1:9".parse().unwrap());
    router(&Arc::new(AppState::new(&config).unwrap()))
}

async fn get(uri: &str) -> (StatusCode, Value) {
    let response = app().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn non_integer_limit_is_422_in_fastapi_shape() {
    let (status, body) = get("/recommend?limit=ten").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body,
        json!({"detail": [{"type": "int_parsing", "loc": ["query", "limit"],
            "msg": "Input should be a valid integer, unable to parse string as an integer", "input": "ten"}]})
    );
}

#[tokio::test]
async fn limit_outside_1_to_100_is_422_naming_the_bound() {
    let (status, body) = get("/recommend?limit=0").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["detail"][0]["type"], "greater_than_equal");
    assert_eq!(body["detail"][0]["ctx"], json!({"ge": 1}));

    let (status, body) = get("/recommend?limit=101").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["detail"][0]["msg"], "Input should be less than or equal to 100");
}

#[tokio::test]
async fn unknown_path_and_wrong_method_answer_fastapi_shapes() {
    assert_eq!(get("/recommendations").await, (StatusCode::NOT_FOUND, json!({"detail": "Not Found"})));
    let response = app()
        .oneshot(Request::builder().method(Method::DELETE).uri("/recommend").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    assert_eq!(&body[..], br#"{"detail":"Method Not Allowed"}"#);
}

#[tokio::test]
async fn readiness_reports_data_mode_before_any_call_without_failing() {
    let (status, body) = get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["checks"]["data"]["mode"], "direct");
    assert!(body["checks"]["data"].get("last_outcome").is_none());
}

#[tokio::test]
async fn openapi_documents_recommend_with_its_parameter_and_every_error() {
    let (status, spec) = get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(spec["openapi"], "3.1.0");
    let op = &spec["paths"]["/recommend"]["get"];
    let limit = op["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "limit").unwrap();
    assert_eq!(limit["in"], "query");
    assert_eq!(limit["required"], false);
    assert_eq!(limit["schema"]["minimum"], json!(recommendation::LIMIT_RANGE.start()));
    assert_eq!(limit["schema"]["maximum"], json!(recommendation::LIMIT_RANGE.end()));
    for code in ["200", "422", "502", "503", "504"] {
        assert!(op["responses"][code].is_object(), "response {code} undocumented");
    }
    for path in ["/healthz", "/readyz"] {
        assert!(spec["paths"][path]["get"].is_object(), "{path} missing");
    }
}

#[tokio::test]
async fn openapi_documents_the_user_and_event_routes() {
    let (_, spec) = get("/openapi.json").await;
    let prefs = &spec["paths"]["/users/{user_id}/preferences"];
    for (method, codes) in [("get", &["200", "404", "422", "503"][..]), ("put", &["200", "412", "422", "503"][..])] {
        for code in codes {
            assert!(prefs[method]["responses"][code].is_object(), "{method} preferences: {code} undocumented");
        }
    }
    assert!(prefs["put"]["requestBody"].is_object());
    assert!(spec["paths"]["/dapr/subscribe"]["get"].is_object());
    assert!(spec["paths"]["/events/data-updated"]["post"]["responses"]["200"].is_object());
    // The schemas say what the routes do: unknown fields are refused (422 extra_forbidden), and an event without a
    // body is answered (DROP), not refused.
    assert_eq!(spec["components"]["schemas"]["Preferences"]["additionalProperties"], json!(false));
    let event_body = &spec["paths"]["/events/data-updated"]["post"]["requestBody"];
    assert_ne!(event_body["required"], json!(true), "{event_body}");
    let recommend = spec["paths"]["/recommend"]["get"]["parameters"].as_array().unwrap();
    assert!(recommend.iter().any(|p| p["name"] == "user" && p["in"] == "query"));
}

#[tokio::test]
async fn openapi_documents_the_model_and_the_items() {
    let (_, spec) = get("/openapi.json").await;
    let body = &spec["components"]["schemas"]["RecommendationBody"];
    assert_eq!(body["properties"]["model"]["pattern"], "^v[12]$", "{body}");
    assert_eq!(body["properties"]["items"]["items"]["$ref"], "#/components/schemas/RecommendedItem", "{body}");
    let item = &spec["components"]["schemas"]["RecommendedItem"];
    for field in ["id", "title", "score", "reason"] {
        assert!(item["required"].as_array().unwrap().contains(&json!(field)), "{field}: {item}");
    }
    let limit = spec["paths"]["/recommend"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .cloned();
    assert!(limit.unwrap()["description"].as_str().unwrap().contains("max_results"));
}

/// A request whose body sends `sent` and then nothing more; the sender is returned so the body stays open.
async fn stalled(method: Method, uri: &str, sent: &'static [u8]) -> (Request<Body>, impl Send) {
    let (mut sender, body) = http_body_util::channel::Channel::<axum::body::Bytes, std::convert::Infallible>::new(1);
    sender.send_data(axum::body::Bytes::from_static(sent)).await.unwrap();
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .header("content-length", "1000")
        .body(Body::new(body))
        .unwrap();
    (request, sender)
}

async fn answer(request: Request<Body>) -> (StatusCode, Value) {
    let response = tokio::time::timeout(std::time::Duration::from_secs(60), app().oneshot(request))
        .await
        .expect("a stalled body must not hold its request")
        .unwrap();
    let status = response.status();
    let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test(start_paused = true)]
async fn stalled_bodies_are_answered_408_json_on_every_route_that_reads_one() {
    for (method, uri) in [(Method::PUT, "/users/alice/preferences"), (Method::POST, "/events/data-updated")] {
        let (request, _sender) = stalled(method, uri, br#"{"categories":"#).await;
        let started = tokio::time::Instant::now();
        let (status, body) = answer(request).await;
        assert_eq!(
            (status, body),
            (StatusCode::REQUEST_TIMEOUT, json!({"detail": "Request body not received within 5s"})),
            "{uri}"
        );
        assert_eq!(started.elapsed(), std::time::Duration::from_secs(5), "{uri}");
    }
}

#[tokio::test]
async fn an_event_body_over_the_limit_is_413_json() {
    let (mut sender, body) = http_body_util::channel::Channel::<axum::body::Bytes, std::convert::Infallible>::new(2);
    tokio::spawn(async move {
        for _ in 0..2 {
            let _ = sender.send_data(axum::body::Bytes::from(vec![b' '; 40 * 1024])).await;
        }
    });
    let request = Request::post("/events/data-updated").body(Body::new(body)).unwrap();
    let (status, body) = answer(request).await;
    assert_eq!(
        (status, body),
        (StatusCode::PAYLOAD_TOO_LARGE, json!({"detail": "Request body too large: the limit is 65536 bytes"}))
    );
}

#[tokio::test]
async fn a_user_id_that_is_not_utf8_is_a_422_like_fastapi_not_a_plain_400() {
    // FastAPI (uvicorn) percent-decodes the path with invalid bytes replaced by U+FFFD, then the pattern fails.
    let expected = json!({"detail": [{"type": "string_pattern_mismatch", "loc": ["path", "user_id"],
        "msg": "String should match pattern '^[A-Za-z0-9._-]{1,64}$'", "input": "\u{fffd}",
        "ctx": {"pattern": "^[A-Za-z0-9._-]{1,64}$"}}]});
    for method in [Method::GET, Method::PUT] {
        let request = Request::builder()
            .method(method.clone())
            .uri("/users/%ff/preferences")
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let response = app().oneshot(request).await.unwrap();
        let status = response.status();
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{method}: {}", String::from_utf8_lossy(&body));
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), expected, "{method}");
    }
}
