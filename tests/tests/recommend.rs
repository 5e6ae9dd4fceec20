//! Both real agents on loopback, directly (no sidecar): `/recommend?user=` on the data agent's real insights, v1
//! against v2, and a `POST /interactions` to data showing in the next recommendation.

use agent_tests::{client, spawn_data, spawn_recommendation};
use recommendation::Config;
use recsys::ModelName;
use reqwest::StatusCode;
use serde_json::{Value, json};

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
