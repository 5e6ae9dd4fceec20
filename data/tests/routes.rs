//! Route tests for the data agent, driven in-process with `oneshot`.

mod support;

use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Method, Request, StatusCode},
};
use data::Config;
use serde_json::{Value, json};
use shared::agent::Agent;
use support::{app, app_with};
use tower::ServiceExt;

async fn call(app: Router, method: Method, uri: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = app.oneshot(Request::builder().method(method).uri(uri).body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec();
    (status, headers, body)
}

#[tokio::test]
async fn data_answers_the_original_contract_byte_for_byte() {
    let (status, headers, body) = call(app().0, Method::GET, "/data").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body, br#"{"processed_data":"some_insights"}"#);
}

#[tokio::test]
async fn unknown_path_is_404_in_fastapi_shape() {
    let (status, headers, body) = call(app().0, Method::GET, "/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body, br#"{"detail":"Not Found"}"#);
}

#[tokio::test]
async fn wrong_method_is_405_in_fastapi_shape() {
    let (status, _, body) = call(app().0, Method::POST, "/data").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body, br#"{"detail":"Method Not Allowed"}"#);
}

#[tokio::test]
async fn request_id_is_generated_when_absent_and_echoed_when_given() {
    let (_, headers, _) = call(app().0, Method::GET, "/data").await;
    assert!(!headers["x-request-id"].is_empty());

    let response = app()
        .0
        .oneshot(Request::get("/nope").header("x-request-id", "abc-123").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn readiness_fails_while_draining_but_liveness_holds() {
    let (app, state) = app();
    assert_eq!(call(app.clone(), Method::GET, "/readyz").await.0, StatusCode::OK);
    state.core().health().start_draining();
    let (status, _, body) = call(app.clone(), Method::GET, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["status"], "draining");
    assert_eq!(call(app, Method::GET, "/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn openapi_is_3_1_and_lists_every_route() {
    let (status, _, body) = call(app().0, Method::GET, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let spec: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    for path in ["/data", "/healthz", "/readyz"] {
        assert!(spec["paths"][path]["get"].is_object(), "{path} missing from the spec");
    }
    assert_eq!(spec["components"]["schemas"]["DataBody"]["properties"]["processed_data"]["type"], json!("string"));
}

#[tokio::test]
async fn swagger_ui_is_served_at_docs_from_the_binary_without_external_assets() {
    for path in ["/docs", "/docs/"] {
        let (status, headers, body) = call(app().0, Method::GET, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
        let html = String::from_utf8_lossy(&body);
        assert!(html.contains("swagger-ui-bundle.js"), "{path}: {html}");
        assert!(!html.contains("http://") && !html.contains("https://"), "{path} loads assets from elsewhere: {html}");
    }
    let (_, _, bare) = call(app().0, Method::GET, "/docs").await;
    assert!(String::from_utf8_lossy(&bare).contains(r#"<base href="/docs/">"#), "assets must resolve under /docs/");
    for asset in ["/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"] {
        assert_eq!(call(app().0, Method::GET, asset).await.0, StatusCode::OK, "{asset}");
    }
    let (_, _, initializer) = call(app().0, Method::GET, "/docs/swagger-initializer.js").await;
    assert!(String::from_utf8_lossy(&initializer).contains(r#""url": "/openapi.json""#));
}

#[tokio::test]
async fn unknown_docs_asset_is_json_404() {
    let (status, _, body) = call(app().0, Method::GET, "/docs/no-such-asset.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, br#"{"detail":"Not Found"}"#);
}

async fn put(app: Router, body: &'static str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut req = Request::builder().method(Method::PUT).uri("/data").header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let response = app.oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
    let status = response.status();
    let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn put_data_changes_what_get_data_serves_and_reports_events_disabled_without_dapr() {
    let (app, _) = app();
    let (status, body) = put(app.clone(), r#"{"processed_data":"fresh"}"#, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"version": 1, "processed_data": "fresh", "event": "disabled"}));
    let (_, _, served) = call(app, Method::GET, "/data").await;
    assert_eq!(served, br#"{"processed_data":"fresh"}"#);
}

#[tokio::test]
async fn put_data_validates_like_fastapi() {
    let (app, _) = app();
    let (status, body) = put(app.clone(), r#"{"processed_data": 5}"#, &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body,
        json!({"detail": [{"type": "string_type", "loc": ["body", "processed_data"],
            "msg": "Input should be a valid string", "input": 5}]})
    );
    let (_, body) = put(app.clone(), "{}", &[]).await;
    assert_eq!(
        body,
        json!({"detail": [{"type": "missing", "loc": ["body", "processed_data"], "msg": "Field required", "input": {}}]})
    );
    let (_, body) = put(app.clone(), "", &[]).await;
    assert_eq!(body, json!({"detail": [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": null}]}));
    let (_, body) = put(app.clone(), "[1]", &[]).await;
    assert_eq!(body["detail"][0]["type"], "model_attributes_type");
    let (_, body) = put(app, r#"{"processed_data": ""}"#, &[]).await;
    assert_eq!(body["detail"][0]["ctx"], json!({"min_length": 1}));
}

#[tokio::test]
async fn app_api_token_guards_data_but_not_the_probes() {
    let mut config = Config::for_tests();
    config.common.dapr.app_api_token = Some("app-secret".to_owned());
    let app = app_with(&config).0;
    let (status, _, body) = call(app.clone(), Method::GET, "/data").await;
    assert_eq!((status, body.as_slice()), (StatusCode::UNAUTHORIZED, &br#"{"detail":"Not authenticated"}"#[..]));
    let (status, _) = put(app.clone(), r#"{"processed_data":"x"}"#, &[("dapr-api-token", "nope")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = put(app.clone(), r#"{"processed_data":"x"}"#, &[("dapr-api-token", "app-secret")]).await;
    assert_eq!(status, StatusCode::OK);
    for probe in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(call(app.clone(), Method::GET, probe).await.0, StatusCode::OK, "{probe}");
    }
}

#[tokio::test]
async fn openapi_documents_put_data_with_its_body_and_errors() {
    let (status, _, body) = call(app().0, Method::GET, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let spec: Value = serde_json::from_slice(&body).unwrap();
    let put = &spec["paths"]["/data"]["put"];
    assert!(put["requestBody"].is_object());
    assert_eq!(
        spec["components"]["schemas"]["DataUpdate"]["additionalProperties"],
        json!(false),
        "unknown fields are refused (422 extra_forbidden), so the schema must say so"
    );
    for code in ["200", "400", "401", "403", "408", "413", "422"] {
        assert!(put["responses"][code].is_object(), "PUT /data: {code} undocumented");
    }
}

/// A `PUT /data` whose body sends `sent` and then nothing more; the sender is returned so the body stays open.
async fn stalled_put(declared_len: Option<usize>, sent: &'static [u8]) -> (Request<Body>, impl Send) {
    let (mut sender, body) = http_body_util::channel::Channel::<axum::body::Bytes, std::convert::Infallible>::new(1);
    sender.send_data(axum::body::Bytes::from_static(sent)).await.unwrap();
    let mut req = Request::put("/data").header("content-type", "application/json");
    if let Some(len) = declared_len {
        req = req.header("content-length", len);
    }
    (req.body(Body::new(body)).unwrap(), sender)
}

async fn json_of(response: axum::response::Response) -> (StatusCode, axum::http::HeaderMap, Value) {
    let (parts, body) = response.into_parts();
    let body = to_bytes(body, usize::MAX).await.unwrap();
    (parts.status, parts.headers, serde_json::from_slice(&body).unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_stalled_body_is_answered_408_json_at_the_body_read_timeout() {
    let (app, _) = app();
    let (request, _sender) = stalled_put(Some(1000), br#"{"processed_data":"#).await;
    let started = tokio::time::Instant::now();
    let response = tokio::time::timeout(std::time::Duration::from_secs(60), app.oneshot(request))
        .await
        .expect("a stalled body must not hold its request")
        .unwrap();
    let waited = started.elapsed();
    let (status, headers, body) = json_of(response).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(body, json!({"detail": "Request body not received within 5s"}));
    assert_eq!(headers["connection"], "close", "the rest of the body will not be read");
    assert_eq!(waited, std::time::Duration::from_secs(5), "the default BODY_READ_TIMEOUT, counted from the head");
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_413_naming_the_limit_whether_declared_or_not() {
    let mut config = Config::for_tests();
    config.common.server.max_body_bytes = 1024;
    let app = app_with(&config).0;
    let too_large = json!({"detail": "Request body too large: the limit is 1024 bytes"});
    // Chunked (no declared length): refused once 1024 bytes were read.
    let (mut sender, body) = http_body_util::channel::Channel::<axum::body::Bytes, std::convert::Infallible>::new(4);
    tokio::spawn(async move {
        for _ in 0..4 {
            let _ = sender.send_data(axum::body::Bytes::from(vec![b' '; 500])).await;
        }
    });
    let chunked = Request::put("/data").header("content-type", "application/json").body(Body::new(body)).unwrap();
    let (status, _, body) = json_of(app.clone().oneshot(chunked).await.unwrap()).await;
    assert_eq!((status, body), (StatusCode::PAYLOAD_TOO_LARGE, too_large.clone()));
    // Declared: refused before reading.
    let (declared, _sender) = stalled_put(Some(2000), b"").await;
    let (status, _, body) = json_of(app.oneshot(declared).await.unwrap()).await;
    assert_eq!((status, body), (StatusCode::PAYLOAD_TOO_LARGE, too_large));
}

#[tokio::test]
async fn max_body_bytes_above_64_kib_is_honoured() {
    let mut config = Config::for_tests();
    config.common.server.max_body_bytes = 1024 * 1024;
    let app = app_with(&config).0;
    let big = format!(r#"{{"processed_data":"{}"}}"#, "x".repeat(100 * 1024));
    let request = Request::put("/data").header("content-type", "application/json").body(Body::from(big)).unwrap();
    let (status, _, body) = json_of(app.oneshot(request).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "read whole, then judged by the model: {body}");
    assert_eq!(body["detail"][0]["type"], "string_too_long");
}

#[tokio::test]
async fn a_malformed_body_is_400_in_fastapi_shape() {
    let (app, _) = app();
    let (mut sender, body) = http_body_util::channel::Channel::<axum::body::Bytes, std::io::Error>::new(2);
    sender.send_data(axum::body::Bytes::from_static(b"{\"processed")).await.unwrap();
    sender.abort(std::io::Error::other("invalid chunk size line"));
    let request = Request::put("/data").header("content-type", "application/json").body(Body::new(body)).unwrap();
    let (status, _, body) = json_of(app.oneshot(request).await.unwrap()).await;
    assert_eq!((status, body), (StatusCode::BAD_REQUEST, json!({"detail": "There was an error parsing the body"})));
}
