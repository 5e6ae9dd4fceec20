//! `recommendation eval`: the binary prints both models' figures, on the default data set or a DATA_FILE, and a
//! bad file fails with its name and line.

use std::process::{Command, Output};

use recsys::generate::{GeneratorConfig, generate};

fn eval(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recommendation"))
        .arg("eval")
        .args(args)
        .env_remove("DATA_FILE")
        .output()
        .expect("run recommendation eval")
}

/// The (precision, recall, nDCG) row of `model` in the table.
fn row(stdout: &str, model: &str) -> [f64; 3] {
    let line = stdout.lines().find(|line| line.split_whitespace().next() == Some(model)).expect(model);
    let figures: Vec<f64> = line.split_whitespace().skip(1).map(|f| f.parse().unwrap()).collect();
    figures.try_into().unwrap_or_else(|figures| panic!("three figures for {model}: {figures:?}"))
}

#[test]
fn eval_prints_v1_and_v2_side_by_side() {
    let output = eval(&[]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("precision@10") && stdout.contains("recall@10") && stdout.contains("nDCG@10"), "{stdout}");
    let (v1, v2) = (row(&stdout, "v1"), row(&stdout, "v2"));
    for figures in [v1, v2] {
        assert!(figures.iter().all(|f| (0.0..=1.0).contains(f)), "{stdout}");
    }
    // The default data set has the user tastes co-occurrence finds: the canary's reason to exist.
    assert!(v2[1] > v1[1] && v2[2] > v1[2], "v2 should beat v1 on the default set:\n{stdout}");
}

#[test]
fn eval_reads_a_data_file_and_names_a_bad_line() {
    let dir = std::env::temp_dir().join(format!("recommendation-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("small.jsonl");
    let small = generate(&GeneratorConfig { seed: 7, items: 60, users: 40, interactions: 600 }).unwrap();
    recsys::load::write(&small, std::fs::File::create(&good).unwrap()).unwrap();
    let output = eval(&["--data-file", good.to_str().unwrap(), "--k", "5"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("precision@5"), "{stdout}");
    row(&stdout, "v1");
    row(&stdout, "v2");

    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"type\":\"item\",\"id\":\"a\",\"title\":\"A\",\"category\":\"x\"}\n{\"type\":\"nope\"}\n")
        .unwrap();
    let output = eval(&["--data-file", bad.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.jsonl:2"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
