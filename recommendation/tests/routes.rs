//! Route tests for the recommendation agent that need no data agent, driven in-process with `oneshot`.

use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Method, Request, StatusCode},
};
use recommendation::{AppState, Config, router};
use serde_json::{Value, json};
use tower::ServiceExt;

fn app() -> Router {
    // Nothing listens on port 9 (discard) on loopback; these tests never reach the data call.
    let config = Config::for_tests("http://127.0.0.1:9".parse().unwrap());
    router(AppState::new(&config).unwrap())
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
    let recommend = spec["paths"]["/recommend"]["get"]["parameters"].as_array().unwrap();
    assert!(recommend.iter().any(|p| p["name"] == "user" && p["in"] == "query"));
}
