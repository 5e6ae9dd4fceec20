//! Baseline for `bench/run.sh`: the agents' two-hop shape (`GET /recommend` calls `GET /data` and wraps its JSON)
//! in plain axum + reqwest, with nothing else: no middleware, logs, metrics or tracing. The difference between
//! this and the agents is what the agents' production features cost.
//!
//! Usage: `bare_chain data PORT`, `bare_chain recommend PORT DATA_URL`, or `bare_chain otlp-sink PORT` (accepts
//! OTLP/HTTP exports and discards them, to measure span export without a collector).

use std::{net::SocketAddr, time::Duration};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    routing::{get, post},
    serve::ListenerExt,
};
use serde_json::{Value, json};

async fn serve(port: u16, app: Router) {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await.expect("bind");
    // Same as the agents: small answers must not wait for Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await.expect("serve");
}

async fn recommend(State((client, url)): State<(reqwest::Client, String)>) -> Result<Json<Value>, StatusCode> {
    let response = client.get(&url).send().await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    let data: Value = response.json().await.map_err(|_| StatusCode::BAD_GATEWAY)?;
    Ok(Json(json!({"recommendation": "Based on data", "data": data})))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = |raw: Option<&String>| raw.and_then(|p| p.parse::<u16>().ok()).expect("a port number");
    match args.first().map(String::as_str) {
        Some("data") => {
            let app = Router::new().route("/data", get(|| async { Json(json!({"processed_data": "some_insights"})) }));
            serve(port(args.get(1)), app).await;
        }
        Some("recommend") => {
            let url = format!("{}/data", args.get(2).expect("DATA_URL").trim_end_matches('/'));
            let client = shared::http::client::builder()
                .timeout(Duration::from_secs(2))
                .no_proxy()
                .build()
                .expect("client builds");
            let app = Router::new().route("/recommend", get(recommend)).with_state((client, url));
            serve(port(args.get(1)), app).await;
        }
        Some("otlp-sink") => {
            let app = Router::new().route("/v1/traces", post(|| async { StatusCode::OK }));
            serve(port(args.get(1)), app).await;
        }
        _ => {
            eprintln!("usage: bare_chain data PORT | bare_chain recommend PORT DATA_URL | bare_chain otlp-sink PORT");
            std::process::exit(2);
        }
    }
}
