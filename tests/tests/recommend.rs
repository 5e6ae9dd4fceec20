//! Both real agents on loopback, directly (no sidecar): `/recommend?user=` on the data agent's real insights, v1
//! against v2, a `POST /interactions` to data showing in the next recommendation, and cached predictions
//! revalidated with data (`If-None-Match`, 304), as the defaults do without a sidecar.

use std::sync::{Arc, Mutex};

use agent_tests::{StandIn, client, spawn_data, spawn_recommendation};
use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    response::Response,
};
use recommendation::Config;
use recsys::ModelName;
use reqwest::StatusCode;
use serde_json::{Value, json};
use url::Url;

async fn get(url: &str) -> Value {
    let response = client().get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    response.json().await.unwrap()
}

fn ids(body: &Value) -> Vec<String> {
    body["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn v1_and_v2_answer_from_the_data_agent_and_new_interactions_show_at_once() {
    let data = spawn_data().await;
    let mut agents = Vec::new();
    for model in ModelName::ALL {
        let mut config = Config::for_tests(data.base_url());
        config.model.model = model;
        agents.push(spawn_recommendation(config).await);
    }
    let (v1, v2) = (&agents[0], &agents[1]);

    let first_v1 = get(&v1.url("/recommend?user=u1&limit=5")).await;
    let first_v2 = get(&v2.url("/recommend?user=u1&limit=5")).await;
    assert_eq!((first_v1["model"].clone(), first_v2["model"].clone()), (json!("v1"), json!("v2")));
    assert_eq!((ids(&first_v1).len(), ids(&first_v2).len()), (5, 5));
    assert_ne!(ids(&first_v1), ids(&first_v2), "v1 and v2 differ for a user with history");
    assert_eq!(first_v1["data"], json!({"processed_data": "some_insights"}));

    // u1 takes v2's first recommendation: data updates its insights, and both models stop offering it.
    let taken = ids(&first_v2)[0].clone();
    let response = client()
        .post(data.url("/interactions"))
        .json(&json!({"interactions": [{"user": "u1", "item": taken, "weight": 5.0}]}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{:?}", response.text().await);
    for agent in [v1, v2] {
        let after = get(&agent.url("/recommend?user=u1&limit=5")).await;
        assert_eq!(ids(&after).len(), 5);
        assert!(!ids(&after).contains(&taken), "{after}");
    }
    let after_v2 = get(&v2.url("/recommend?user=u1&limit=5")).await;
    assert_ne!(ids(&after_v2), ids(&first_v2), "v2 follows the new history");
}

/// Each insights call through the proxy: its `If-None-Match`, the status data answered and the `ETag` it sent.
type Calls = Arc<Mutex<Vec<(Option<String>, StatusCode, String)>>>;

/// A proxy in front of `data` that passes GETs through and records each insights call (the data agent's own
/// request log, which the test can read).
async fn recording_proxy(data: Url) -> (StandIn, Calls) {
    async fn pass(State((data, calls)): State<(Url, Calls)>, request: Request) -> Response {
        let target = data.join(&request.uri().to_string()).unwrap();
        let condition = request.headers().get("if-none-match").map(|tag| tag.to_str().unwrap().to_owned());
        let mut call = client().get(target.clone());
        if let Some(tag) = &condition {
            call = call.header("if-none-match", tag);
        }
        let answer = call.send().await.unwrap();
        let (status, headers) = (answer.status(), answer.headers().clone());
        if target.path().starts_with("/insights/") {
            let etag = headers["etag"].to_str().unwrap().to_owned();
            calls.lock().unwrap().push((condition, status, etag));
        }
        let mut response = Response::builder().status(status);
        for name in ["etag", "content-type"] {
            if let Some(value) = headers.get(name) {
                response = response.header(name, value);
            }
        }
        response.body(Body::from(answer.bytes().await.unwrap())).unwrap()
    }
    let calls = Calls::default();
    let router = Router::new().fallback(pass).with_state((data, calls.clone()));
    (StandIn::serve(router).await, calls)
}

#[tokio::test]
async fn by_default_a_repeated_recommendation_is_revalidated_with_data_and_a_change_shows_at_once() {
    let data = spawn_data().await;
    let (proxy, calls) = recording_proxy(data.base_url()).await;
    let reco = spawn_recommendation(Config::for_tests(proxy.base_url())).await;
    let url = reco.url("/recommend?user=u1&limit=5");
    let take = |calls: &Calls| std::mem::take(&mut *calls.lock().unwrap());

    let first = get(&url).await;
    let [(None, StatusCode::OK, tag)] = &take(&calls)[..] else { panic!("one plain insights call first") };
    assert_eq!(get(&url).await["items"], first["items"]);
    assert_eq!(take(&calls), [(Some(tag.clone()), StatusCode::NOT_MODIFIED, tag.clone())], "revalidated: 304");

    let taken = ids(&first)[0].clone();
    let response = client()
        .post(data.url("/interactions"))
        .json(&json!({"interactions": [{"user": "u1", "item": taken, "weight": 5.0}]}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{:?}", response.text().await);
    let after = get(&url).await;
    assert!(!ids(&after).contains(&taken), "no stale prediction: {after}");
    let [(Some(sent), StatusCode::OK, new_tag)] = &take(&calls)[..] else { panic!("the old tag got the new insights") };
    assert_eq!(sent, tag);
    assert_ne!(new_tag, tag);
    assert_eq!(get(&url).await["items"], after["items"]);
    assert_eq!(take(&calls), [(Some(new_tag.clone()), StatusCode::NOT_MODIFIED, new_tag.clone())]);
}
