//! The recommender routes of the data agent, driven in-process with `oneshot`: the catalog (`GET /items`), the
//! insights contract (`GET /insights/users/{user}`, `GET /insights`) and new interactions (`POST /interactions`).

mod support;

use axum::{
    Router,
    body::{Body, Bytes, to_bytes},
    http::{HeaderMap, Method, Request, StatusCode},
};
use data::{AppState, Config};
use recsys::UserQuery;
use serde_json::{Value, json};
use support::{app, app_with};
use tower::ServiceExt;

async fn send(app: &Router, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    let body = match body {
        Some(json) => {
            request = request.header("content-type", "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    let response = app.clone().oneshot(request.body(body).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {bytes:?}")))
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    send(app, Method::GET, uri, None).await
}

async fn post(app: &Router, body: Value) -> (StatusCode, Value) {
    send(app, Method::POST, "/interactions", Some(body)).await
}

fn locs(body: &Value) -> Vec<Value> {
    body["detail"].as_array().unwrap().iter().map(|issue| issue["loc"].clone()).collect()
}

fn kinds(body: &Value) -> Vec<String> {
    body["detail"].as_array().unwrap().iter().map(|issue| issue["type"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn items_are_paginated_in_catalog_order() {
    let (app, state) = app();
    let catalog = state.insights().catalog().clone();
    let (status, page) = get(&app, "/items").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (page["total"].clone(), page["offset"].clone(), page["limit"].clone()),
        (json!(480), json!(0), json!(100))
    );
    assert_eq!(page["items"].as_array().unwrap().len(), 100);
    assert_eq!(page["items"][0], serde_json::to_value(&catalog.items()[0]).unwrap());
    assert_eq!(page["items"][0].as_object().unwrap().keys().collect::<Vec<_>>(), ["id", "title", "category"]);

    let (_, page) = get(&app, "/items?offset=470&limit=20").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 10, "the last page is short");
    assert_eq!(page["items"][9]["id"], json!(catalog.items()[479].id));
    let (status, page) = get(&app, "/items?offset=10000").await;
    assert_eq!((status, page["items"].clone(), page["total"].clone()), (StatusCode::OK, json!([]), json!(480)));
}

#[tokio::test]
async fn item_page_bounds_are_checked_like_fastapi() {
    let (app, _) = app();
    let (status, body) = get(&app, "/items?offset=-1&limit=1001").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body,
        json!({"detail": [
            {"type": "greater_than_equal", "loc": ["query", "offset"], "msg": "Input should be greater than or equal to 0",
                "input": "-1", "ctx": {"ge": 0}},
            {"type": "less_than_equal", "loc": ["query", "limit"], "msg": "Input should be less than or equal to 1000",
                "input": "1001", "ctx": {"le": 1000}},
        ]})
    );
    let (_, body) = get(&app, "/items?limit=0").await;
    assert_eq!(kinds(&body), ["greater_than_equal"]);
    let (_, body) = get(&app, "/items?offset=first").await;
    assert_eq!(kinds(&body), ["int_parsing"]);
}

#[tokio::test]
async fn one_item_by_id() {
    let (app, state) = app();
    let first = state.insights().catalog().items()[0].clone();
    let (status, item) = get(&app, &format!("/items/{}", first.id)).await;
    assert_eq!((status, item), (StatusCode::OK, serde_json::to_value(&first).unwrap()));
    assert_eq!(get(&app, "/items/no-such-item").await, (StatusCode::NOT_FOUND, json!({"detail": "Item not found"})));
    let (status, body) = get(&app, "/items/bad%20id").await;
    assert_eq!((status, locs(&body)), (StatusCode::UNPROCESSABLE_ENTITY, vec![json!(["path", "id"])]));
}

#[tokio::test]
async fn user_insights_answer_what_the_recsys_crate_computes() {
    let (app, state) = app();
    let (status, body) = get(&app, "/insights/users/u1?limit=5&category=books&category=music&category=books").await;
    assert_eq!(status, StatusCode::OK);
    let categories = ["books".to_owned(), "music".to_owned(), "books".to_owned()];
    let expected =
        state.insights().read(|insights| insights.user_insights(&UserQuery::new("u1", 5, &categories))).unwrap();
    assert_eq!(body, serde_json::to_value(&expected).unwrap());
    assert!(expected.interacted > 0, "u1 has a history in the default data set");
    assert_eq!(body["popular"].as_array().unwrap().len(), 5);
    let asked: Vec<&Value> = body["popular_in"].as_array().unwrap().iter().map(|c| &c["category"]).collect();
    assert_eq!(asked, [&json!("books"), &json!("music")], "in the order asked, each once");
    assert!(body["popular_in"][0]["items"].as_array().unwrap().iter().all(|item| item["category"] == "books"));

    let (_, defaults) = get(&app, "/insights/users/u1").await;
    assert_eq!(defaults["popular"].as_array().unwrap().len(), 10, "limit defaults to 10");
    assert_eq!(defaults["popular_in"], json!([]));
    assert_eq!(defaults, get(&app, "/insights/users/u1?neighbours=10").await.1, "neighbours defaults to 10");
}

#[tokio::test]
async fn neighbours_asks_for_fewer_neighbours_and_changes_nothing_else() {
    let (app, _) = app();
    let (_, all) = get(&app, "/insights/users/u1?limit=5").await;
    let lists = |body: &Value| -> Vec<usize> {
        body["neighbours"].as_array().unwrap().iter().map(|n| n["neighbours"].as_array().unwrap().len()).collect()
    };
    assert!(lists(&all).iter().any(|&n| n > 3), "u1 has neighbours to cut: {:?}", lists(&all));
    for n in [0, 3] {
        let (status, mut fewer) = get(&app, &format!("/insights/users/u1?limit=5&neighbours={n}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(lists(&fewer), lists(&all).iter().map(|&len| len.min(n)).collect::<Vec<_>>());
        for (few, every) in fewer["neighbours"].as_array().unwrap().iter().zip(all["neighbours"].as_array().unwrap()) {
            assert_eq!(few["item"], every["item"]);
            let kept = &every["neighbours"].as_array().unwrap()[..few["neighbours"].as_array().unwrap().len()];
            assert_eq!(few["neighbours"].as_array().unwrap()[..], kept[..], "the first, most similar ones");
        }
        fewer["neighbours"] = all["neighbours"].clone();
        assert_eq!(fewer, all, "the rest of the answer is the same");
    }
    let (status, body) = get(&app, "/insights/users/u1?neighbours=11").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(kinds(&body), ["less_than_equal"]);
    assert_eq!(body["detail"][0]["loc"], json!(["query", "neighbours"]));
}

#[tokio::test]
async fn an_unknown_user_is_a_cold_user_not_a_404() {
    let (app, _) = app();
    let (status, body) =
        get(&app, "/insights/users/nobody-yet?limit=3&category=garden&category=no-such-category").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((body["user"].clone(), body["interacted"].clone()), (json!("nobody-yet"), json!(0)));
    assert_eq!((body["history"].clone(), body["neighbours"].clone()), (json!([]), json!([])));
    assert_eq!(body["popular"].as_array().unwrap().len(), 3);
    assert_eq!(body["popular_in"][1], json!({"category": "no-such-category", "items": []}));
}

#[tokio::test]
async fn user_insights_parameters_are_checked_like_fastapi_all_at_once() {
    let (app, _) = app();
    let long = "x".repeat(41);
    let (status, body) =
        get(&app, &format!("/insights/users/bad%20id?neighbours=-1&limit=0&category=&category={long}")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        locs(&body),
        [
            json!(["path", "user"]),
            json!(["query", "limit"]),
            json!(["query", "category", 0]),
            json!(["query", "category", 1]),
            json!(["query", "neighbours"])
        ]
    );
    assert_eq!(
        kinds(&body),
        ["string_pattern_mismatch", "greater_than_equal", "string_too_short", "string_too_long", "greater_than_equal"]
    );
    assert_eq!(body["detail"][0]["input"], "bad id");
    assert_eq!(body["detail"][3]["ctx"], json!({"max_length": 40}));

    let (_, body) = get(&app, "/insights/users/u1?limit=101").await;
    assert_eq!(kinds(&body), ["less_than_equal"]);
    let eleven: String = (0..11).map(|n| format!("&category=c{n}")).collect();
    let (status, body) = get(&app, &format!("/insights/users/u1?limit=5{eleven}")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["detail"][0]["type"], "too_long");
    assert_eq!(body["detail"][0]["loc"], json!(["query", "category"]));
    assert_eq!(body["detail"][0]["ctx"], json!({"field_type": "List", "max_length": 10, "actual_length": 11}));
    let ten: String = (0..10).map(|n| format!("&category=c{n}")).collect();
    assert_eq!(get(&app, &format!("/insights/users/u1?limit=5{ten}")).await.0, StatusCode::OK);
    // A preference may hold any 1 to 40 characters: one no catalog category can match is answered, not refused.
    let (status, body) = get(&app, "/insights/users/u1?category=%20books").await;
    assert_eq!((status, body["popular_in"][0]["items"].clone()), (StatusCode::OK, json!([])));
}

#[tokio::test]
async fn the_summary_lists_counts_and_popular_items() {
    let (app, _) = app();
    let (status, body) = get(&app, "/insights?limit=3").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((body["version"].clone(), body["items"].clone()), (json!(0), json!(480)));
    assert_eq!((body["users"].clone(), body["interactions"].clone()), (json!(1000), json!(30000)));
    assert_eq!(body["popular"].as_array().unwrap().len(), 3);
    assert_eq!(body["categories"].as_array().unwrap().len(), 8);
    assert_eq!(get(&app, "/insights?limit=0").await.0, StatusCode::UNPROCESSABLE_ENTITY);
}

/// An item of the catalog, by position.
fn item(state: &AppState, n: usize) -> String {
    state.insights().catalog().items()[n].id.clone()
}

#[tokio::test]
async fn a_batch_is_applied_and_shows_in_the_next_answers() {
    let (app, state) = app();
    let (a, b) = (item(&state, 7), item(&state, 300));
    let (status, body) = post(
        &app,
        json!({"interactions": [
            {"user": "newcomer", "item": a, "weight": 2.5, "time": 1_700_000_000u64},
            {"user": "newcomer", "item": b, "weight": "1"},
            {"user": "u1", "item": b, "weight": 1, "time": null},
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"applied": 3, "new_users": 1, "version": 1, "event": "disabled"}));

    let (_, user) = get(&app, "/insights/users/newcomer").await;
    assert_eq!((user["version"].clone(), user["interacted"].clone()), (json!(1), json!(2)));
    let history: Vec<&Value> = user["history"].as_array().unwrap().iter().map(|h| &h["id"]).collect();
    assert_eq!(history, [&json!(b), &json!(a)], "latest first: the row without a time got the time of the batch");
    assert_eq!(user["history"][1]["weight"], json!(2.5));
    assert!(user["popular"].as_array().unwrap().iter().all(|c| c["id"] != json!(a) && c["id"] != json!(b)));
    let (_, summary) = get(&app, "/insights").await;
    assert_eq!((summary["version"].clone(), summary["interactions"].clone()), (json!(1), json!(30003)));
    assert_eq!(summary["users"], json!(1001));
}

#[tokio::test]
async fn bad_rows_are_all_reported_where_they_are_and_nothing_is_applied() {
    let (app, state) = app();
    let good = json!({"user": "u1", "item": item(&state, 0), "weight": 1.0});
    let (_, before) = get(&app, "/insights/users/u1").await;
    let (status, body) = post(
        &app,
        json!({"interactions": [
            good,
            {"user": "u 2", "item": "no-such-item", "weight": 0},
            {"user": "u3", "item": item(&state, 1), "weight": 1001, "time": 1_700_000_000_000u64, "wieght": 1},
            {"item": 5, "weight": "heavy", "time": 1.5},
            "not a row",
        ], "extra": true}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let row = |n: usize, field: &str| json!(["body", "interactions", n, field]);
    assert_eq!(
        locs(&body),
        [
            row(1, "user"),
            row(1, "item"),
            row(1, "weight"),
            row(2, "weight"),
            row(2, "time"),
            row(2, "wieght"),
            row(3, "user"),
            row(3, "item"),
            row(3, "weight"),
            row(3, "time"),
            json!(["body", "interactions", 4]),
            json!(["body", "extra"]),
        ]
    );
    assert_eq!(
        kinds(&body),
        [
            "string_pattern_mismatch",
            "value_error",
            "greater_than",
            "less_than_equal",
            "less_than_equal",
            "extra_forbidden",
            "missing",
            "string_type",
            "float_parsing",
            "int_from_float",
            "model_attributes_type",
            "extra_forbidden",
        ]
    );
    assert_eq!(
        body["detail"][1],
        json!({"type": "value_error", "loc": ["body", "interactions", 1, "item"],
            "msg": "Value error, no item of the catalog has this id", "input": "no-such-item", "ctx": {"error": {}}})
    );
    assert_eq!(body["detail"][2]["ctx"], json!({"gt": 0}));

    let (_, after) = get(&app, "/insights/users/u1").await;
    assert_eq!(after, before, "the good row was not applied either");
    assert_eq!(get(&app, "/insights").await.1["version"], json!(0));
}

#[tokio::test]
async fn the_batch_itself_is_checked_like_fastapi() {
    let mut config = Config::for_tests();
    config.common.server.max_body_bytes = 1 << 20;
    let (app, state) = app_with(&config);
    let expect = |body: Value, kind: &str, loc: Value| {
        let app = app.clone();
        let kind = kind.to_owned();
        async move {
            let (status, answer) = post(&app, body).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!((kinds(&answer), locs(&answer)), (vec![kind], vec![loc]), "{answer}");
            answer
        }
    };
    let empty = expect(json!({"interactions": []}), "too_short", json!(["body", "interactions"])).await;
    assert_eq!(empty["detail"][0]["ctx"], json!({"min_length": 1, "field_type": "List", "actual_length": 0}));
    let row = json!({"user": "u1", "item": item(&state, 0), "weight": 1});
    let long =
        expect(json!({"interactions": vec![row.clone(); 1001]}), "too_long", json!(["body", "interactions"])).await;
    assert_eq!(long["detail"][0]["msg"], "List should have at most 1000 items after validation, not 1001");
    expect(json!({}), "missing", json!(["body", "interactions"])).await;
    expect(json!({"interactions": row.clone()}), "list_type", json!(["body", "interactions"])).await;
    expect(json!([row.clone()]), "model_attributes_type", json!(["body"])).await;
    let (status, answer) = send(&app, Method::POST, "/interactions", None).await;
    assert_eq!((status, kinds(&answer)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["missing".to_owned()]));
    assert_eq!(get(&app, "/insights").await.1["version"], json!(0), "nothing was applied");

    let (status, applied) = post(&app, json!({"interactions": vec![row; 1000]})).await;
    assert_eq!((status, applied["applied"].clone()), (StatusCode::OK, json!(1000)), "1000 rows is a batch");
}

#[tokio::test]
async fn the_new_routes_are_app_routes_behind_the_token() {
    let mut config = Config::for_tests();
    config.common.dapr.app_api_token = Some("app-secret".to_owned());
    let (app, _) = app_with(&config);
    for uri in ["/items", "/items/x", "/insights", "/insights/users/u1"] {
        assert_eq!(get(&app, uri).await.0, StatusCode::UNAUTHORIZED, "{uri}");
    }
    assert_eq!(post(&app, json!({"interactions": []})).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn openapi_describes_the_new_routes_their_bodies_and_errors() {
    let (app, _) = app();
    let (_, spec) = get(&app, "/openapi.json").await;
    let paths = &spec["paths"];
    for (path, method, codes) in [
        ("/items", "get", &["200", "422"][..]),
        ("/items/{id}", "get", &["200", "404", "422"]),
        ("/insights", "get", &["200", "304", "422"]),
        ("/insights/users/{user}", "get", &["200", "304", "422"]),
        ("/interactions", "post", &["200", "400", "401", "403", "408", "413", "422", "507"]),
    ] {
        for code in codes {
            assert!(paths[path][method]["responses"][code].is_object(), "{method} {path}: {code} undocumented");
        }
    }
    let params: Vec<&Value> =
        paths["/insights/users/{user}"]["get"]["parameters"].as_array().unwrap().iter().map(|p| &p["name"]).collect();
    assert_eq!(
        params,
        [&json!("user"), &json!("limit"), &json!("category"), &json!("neighbours"), &json!("if-none-match")]
    );
    for path in ["/insights", "/insights/users/{user}"] {
        for code in ["200", "304"] {
            assert!(paths[path]["get"]["responses"][code]["headers"]["etag"].is_object(), "{path} {code}: no ETag");
        }
        let header = paths[path]["get"]["parameters"].as_array().unwrap().iter().find(|p| p["in"] == "header");
        assert_eq!(header.map(|p| &p["name"]), Some(&json!("if-none-match")), "{path}");
    }
    let schemas = &spec["components"]["schemas"];
    for schema in
        ["UserInsights", "InsightsSummary", "ItemsPage", "Item", "InteractionBatch", "BatchApplied", "NewInteraction"]
    {
        assert!(schemas[schema].is_object(), "schema {schema} missing");
    }
    assert_eq!(
        paths["/interactions"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/InteractionBatch"
    );
}

/// `GET uri` with `headers`: the status, the answer's headers and its body.
async fn get_with(app: &Router, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Bytes) {
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, to_bytes(response.into_body(), usize::MAX).await.unwrap())
}

/// The `ETag` of a plain `GET uri`.
async fn etag_of(app: &Router, uri: &str) -> String {
    let (status, headers, _) = get_with(app, uri, &[]).await;
    assert_eq!(status, StatusCode::OK, "{uri}");
    headers["etag"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn insights_are_tagged_and_a_matching_if_none_match_gets_304_without_a_body() {
    let (app, _) = app();
    for uri in ["/insights/users/u1?limit=5&category=books", "/insights?limit=3"] {
        let etag = etag_of(&app, uri).await;
        assert!(etag.starts_with('"') && etag.ends_with("-0\""), "strong, fingerprint-version: {etag}");
        let weak = format!("W/{etag}");
        let listed = format!("\"other\", {etag}");
        let odd_list = format!(" , W/\"x,y\" ,{etag} ,");
        let matching_lines: [&[&str]; 6] =
            [&[&etag], &[&weak], &["*"], &[&listed], &[&odd_list], &["\"other\"", &etag]];
        for matching in matching_lines {
            let headers: Vec<_> = matching.iter().map(|value| ("if-none-match", *value)).collect();
            let (status, answer_headers, body) = get_with(&app, uri, &headers).await;
            assert_eq!(status, StatusCode::NOT_MODIFIED, "{uri} {matching:?}");
            assert_eq!(answer_headers["etag"], etag.as_str(), "{uri} {matching:?}");
            assert!(body.is_empty(), "{uri} {matching:?}");
        }
        let unquoted = etag.trim_matches('"').to_owned();
        let glued = format!("{etag}\"x\"");
        for other in ["\"other\"", "W/\"other\", \"0000000000000000-0\"", &unquoted, &glued, "*, \"x\"", ""] {
            let (status, answer_headers, body) = get_with(&app, uri, &[("if-none-match", other)]).await;
            assert_eq!(status, StatusCode::OK, "{uri} {other:?}");
            assert_eq!(answer_headers["etag"], etag.as_str());
            assert!(serde_json::from_slice::<Value>(&body).unwrap().is_object(), "{uri} {other:?}: the full answer");
        }
    }
}

#[tokio::test]
async fn the_tag_changes_with_every_batch_and_the_old_one_gets_the_full_answer() {
    let (app, state) = app();
    let uri = "/insights/users/u1?limit=5";
    let before = etag_of(&app, uri).await;
    assert_eq!(etag_of(&app, "/insights").await, before, "one tag for the insights' content, whatever the route");
    let row = json!({"user": "u1", "item": item(&state, 3), "weight": 1.0, "time": 1_700_000_000u64});
    assert_eq!(post(&app, json!({"interactions": [row]})).await.0, StatusCode::OK);
    let (status, headers, body) = get_with(&app, uri, &[("if-none-match", &before)]).await;
    assert_eq!(status, StatusCode::OK);
    let after = headers["etag"].to_str().unwrap().to_owned();
    assert_ne!(after, before);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["version"], json!(1));
    assert_eq!(get_with(&app, uri, &[("if-none-match", &after)]).await.0, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn replicas_with_the_same_data_and_batches_share_tags_and_different_batches_do_not() {
    let replicas = [app(), app(), app()];
    let uri = "/insights/users/u2";
    async fn tags(replicas: &[(Router, std::sync::Arc<AppState>)], uri: &str) -> Vec<String> {
        let mut tags = Vec::new();
        for (app, _) in replicas {
            tags.push(etag_of(app, uri).await);
        }
        tags
    }
    let start = tags(&replicas, uri).await;
    assert!(start.iter().all(|tag| *tag == start[0]), "the same data set: {start:?}");
    let row = |n: usize| json!({"user": "u2", "item": item(&replicas[0].1, n), "weight": 2, "time": 1_700_000_000u64});
    for (replica, n) in replicas.iter().zip([10, 10, 11]) {
        assert_eq!(post(&replica.0, json!({"interactions": [row(n)]})).await.0, StatusCode::OK);
    }
    let after = tags(&replicas, uri).await;
    assert_eq!(after[0], after[1], "the same batch");
    assert_ne!(after[0], after[2], "another batch, though at the same version: {after:?}");
    assert!(after.iter().all(|tag| tag.ends_with("-1\"")));
    assert!(after.iter().all(|tag| *tag != start[0]));
}

#[tokio::test]
async fn an_invalid_query_is_a_422_whatever_if_none_match_says() {
    let (app, _) = app();
    let etag = etag_of(&app, "/insights").await;
    for uri in
        ["/insights/users/a%20b", "/insights/users/u1?limit=0", "/insights/users/u1?neighbours=11", "/insights?limit=0"]
    {
        for condition in [etag.as_str(), "*"] {
            let (status, _, body) = get_with(&app, uri, &[("if-none-match", condition)]).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri} {condition}");
            assert!(serde_json::from_slice::<Value>(&body).unwrap()["detail"].is_array());
        }
    }
}
