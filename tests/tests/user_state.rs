//! Per-user state and the event route without Dapr: the in-process fallback behaves like the Dapr state store
//! (ETags, first-write), and validation errors have FastAPI's shapes.

use agent_tests::{client, spawn_data, spawn_recommendation};
use recommendation::config::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn preferences_and_recommendations_per_user_without_dapr() {
    let data = spawn_data().await;
    let reco = spawn_recommendation(Config::for_tests(data.base_url())).await;
    let prefs = reco.url("/users/al/preferences");

    let (status, _, body) = send(client().get(&prefs)).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, json!({"detail": "No preferences stored for this user"})));
    let (status, headers, body) = send(client().put(&prefs).json(&json!({"categories": ["books"]}))).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"categories": ["books"], "max_results": 10})));
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let (status, _, _) = send(client().put(&prefs).header("if-match", &etag).json(&json!({"max_results": 3}))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(client().put(&prefs).header("if-match", &etag).json(&json!({}))).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);

    for expected in 1..=2 {
        let (status, _, mut body) = send(client().get(reco.url("/recommend?user=al"))).await;
        assert_eq!(status, StatusCode::OK);
        // The stored max_results is the number of items when the request gives no limit (issue 16).
        let items = body.as_object_mut().unwrap().remove("items").unwrap();
        assert_eq!(items.as_array().unwrap().len(), 3, "{items}");
        assert_eq!(body.as_object_mut().unwrap().remove("model"), Some(json!("v1")));
        assert_eq!(
            body,
            json!({"recommendation": "Based on data", "data": {"processed_data": "some_insights"}, "user": "al",
                "preferences": {"categories": [], "max_results": 3}, "recommendations_served": expected})
        );
    }
    // Without a user the answer is the original contract, byte for byte.
    let plain = client().get(reco.url("/recommend")).send().await.unwrap().text().await.unwrap();
    assert_eq!(plain, r#"{"recommendation":"Based on data","data":{"processed_data":"some_insights"}}"#);
    let ready: Value = client().get(reco.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["checks"]["state"], "memory");
}

#[tokio::test]
async fn invalid_user_ids_and_bodies_are_422_like_fastapi() {
    let data = spawn_data().await;
    let reco = spawn_recommendation(Config::for_tests(data.base_url())).await;

    // Expected bodies produced by FastAPI 0.115.0 for the same declarations (Query/Path pattern, extra=forbid).
    let (status, _, body) = send(client().get(reco.url("/recommend?limit=0&user=a%20b"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body,
        json!({"detail": [
            {"type": "greater_than_equal", "loc": ["query", "limit"], "msg": "Input should be greater than or equal to 1",
                "input": "0", "ctx": {"ge": 1}},
            {"type": "string_pattern_mismatch", "loc": ["query", "user"],
                "msg": "String should match pattern '^[A-Za-z0-9._-]{1,64}$'", "input": "a b",
                "ctx": {"pattern": "^[A-Za-z0-9._-]{1,64}$"}}
        ]})
    );
    let prefs = reco.url("/users/al/preferences");
    let (status, _, body) =
        send(client().put(&prefs).json(&json!({"categories": "books", "max_results": 0, "x": 1}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body,
        json!({"detail": [
            {"type": "list_type", "loc": ["body", "categories"], "msg": "Input should be a valid list", "input": "books"},
            {"type": "greater_than_equal", "loc": ["body", "max_results"],
                "msg": "Input should be greater than or equal to 1", "input": 0, "ctx": {"ge": 1}},
            {"type": "extra_forbidden", "loc": ["body", "x"], "msg": "Extra inputs are not permitted", "input": 1}
        ]})
    );
    let (_, _, body) =
        send(client().put(&prefs).header("content-type", "application/json").body(r#"{"max_results": 5,}"#)).await;
    assert_eq!(
        body,
        json!({"detail": [{"type": "json_invalid", "loc": ["body", 18], "msg": "JSON decode error", "input": {},
            "ctx": {"error": "Expecting property name enclosed in double quotes"}}]})
    );
    let (_, _, body) = send(client().put(reco.url("/users/a%20b/preferences"))).await;
    let kinds: Vec<&str> = body["detail"].as_array().unwrap().iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["string_pattern_mismatch", "missing"], "path first, then the missing body: {body}");
}

#[tokio::test]
async fn the_event_route_answers_success_retry_and_drop_by_dapr_contract() {
    let data = spawn_data().await;
    let reco = spawn_recommendation(Config::for_tests(data.base_url())).await;
    let deliver = |body: Value| {
        let request = client()
            .post(reco.url("/events/data-updated"))
            .header("content-type", "application/cloudevents+json")
            .json(&body);
        async move { send(request).await.2["status"].as_str().unwrap().to_owned() }
    };
    let event = |data: Value| json!({"specversion": "1.0", "id": "e1", "type": "com.dapr.event.sent", "data": data});

    assert_eq!(deliver(event(json!({"version": 1, "processed_data": "x"}))).await, "SUCCESS");
    assert_eq!(deliver(event(json!({"processed_data": "x"}))).await, "DROP");
    assert_eq!(deliver(json!({"specversion": "1.0", "id": "e2"})).await, "DROP");
    let (_, _, subscriptions) = send(client().get(reco.url("/dapr/subscribe"))).await;
    assert_eq!(subscriptions, json!([]), "no sidecar, no subscription");

    data.stop().await;
    assert_eq!(deliver(event(json!({"version": 2, "processed_data": "y"}))).await, "RETRY", "data cannot be fetched");
    let ready: Value = client().get(reco.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["checks"]["events"], json!({"success": 1, "retry": 1, "drop": 2}));
}
