//! `DATA_FILE` as the data binary sees it: a good file is what the agent serves; a bad one stops start-up with one
//! message naming the file and the line, a non-zero exit status, and nothing served.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use agent_tests::{AgentProcess, binary, client};
use serde_json::{Value, json};

/// A file in a fresh scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn file(name: &str, text: &str) -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("agent-mesh-data-file-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

const GOOD: &str = r#"{"type":"item","id":"b1","title":"Harbor Chronicles","category":"books"}
{"type":"item","id":"m1","title":"Ember Sessions","category":"music"}

{"type":"interaction","user":"u1","item":"b1","weight":1,"time":1700000000}
{"type":"interaction","user":"u2","item":"m1","weight":5,"time":1700000060}
"#;

#[tokio::test]
async fn the_agent_serves_the_data_file_it_is_given() {
    let file = Scratch::file("catalog.jsonl", GOOD);
    let agent = AgentProcess::start("data", &[("DATA_FILE", file.0.to_str().unwrap())]);
    let url = |path: &str| format!("http://{}{path}", agent.addr);
    let page: Value = client().get(url("/items")).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["total"], json!(2));
    assert_eq!(page["items"][1], json!({"id": "m1", "title": "Ember Sessions", "category": "music"}));
    let user: Value = client().get(url("/insights/users/u1?limit=1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(user["history"][0]["id"], "b1");
    assert_eq!(user["popular"][0]["id"], "m1", "the only item u1 has not seen");
}

/// Runs the data binary with `DATA_FILE=data_file` until it exits (bounded): exit code, stdout, stderr.
fn run_until_exit(data_file: &std::path::Path) -> (Option<i32>, String, String) {
    let mut child = Command::new(binary("data"))
        .env_clear()
        .envs([("PORT", "0"), ("BIND_ADDR", "127.0.0.1"), ("LOG_FORMAT", "json")])
        .env("DATA_FILE", data_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("data kept running with DATA_FILE={}", data_file.display());
        }
        std::thread::sleep(Duration::from_millis(10)); // polling a child's exit, bounded
    };
    let output = child.wait_with_output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (status.code(), text(&output.stdout), text(&output.stderr))
}

#[test]
fn a_malformed_data_file_stops_startup_naming_file_and_line() {
    let bad = GOOD.replace(r#""user":"u2","item":"m1","weight":5"#, r#""user":"u2","item":"m1","weight":0"#);
    let file = Scratch::file("bad.jsonl", &bad);
    let (code, stdout, stderr) = run_until_exit(&file.0);
    assert_eq!(code, Some(1), "stderr: {stderr}");
    let expected = format!("data: {}:5: `weight` must be greater than 0", file.0.display());
    assert_eq!(stderr.trim_end(), expected, "one line naming the file and the line");
    assert!(!stdout.contains("listening"), "nothing may be served: {stdout}");
}

#[test]
fn a_missing_data_file_stops_startup_naming_it() {
    let (code, stdout, stderr) = run_until_exit(std::path::Path::new("/nonexistent/data.jsonl"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.starts_with("data: /nonexistent/data.jsonl: cannot read the file"), "{stderr}");
    assert!(!stdout.contains("listening"), "nothing may be served: {stdout}");
}
