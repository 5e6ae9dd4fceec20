//! `recsys`: generate data sets, evaluate the models, and measure the crate (what `bench/recsys.sh` runs).
//!
//! ```text
//! recsys generate [--items N] [--users N] [--interactions N] [--seed S] [--output FILE]
//! recsys eval [--data-file FILE] [--k 10]
//! recsys bench [--data-file FILE] [--requests 20000] [--limit 10]
//! ```
//!
//! Without `--data-file` (or `DATA_FILE`), `eval` and `bench` use the default data set.

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use recsys::{
    DataSet, Insights, Limits, ModelName, Preferences, UserInsights, UserQuery,
    eval::evaluate,
    generate::{GeneratorConfig, default_dataset, generate},
    insights::MAX_LIMIT,
    load,
};

#[derive(Parser)]
#[command(version, about = "The recommender core: generate data sets, evaluate the models, measure them")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a generated data set in the DATA_FILE format (JSON Lines); the defaults give the default data set.
    Generate {
        /// Number of items.
        #[arg(long, default_value_t = GeneratorConfig::DEFAULT.items)]
        items: usize,
        /// Number of users.
        #[arg(long, default_value_t = GeneratorConfig::DEFAULT.users)]
        users: usize,
        /// Number of interactions.
        #[arg(long, default_value_t = GeneratorConfig::DEFAULT.interactions)]
        interactions: usize,
        /// Seed of the pseudo-random generator.
        #[arg(long, default_value_t = GeneratorConfig::DEFAULT.seed)]
        seed: u64,
        /// Where to write (standard output when absent).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Prints precision, recall and nDCG of v1 and v2 side by side, leave-last-out.
    Eval {
        /// The data set (the default data set when absent).
        #[arg(long, env = "DATA_FILE")]
        data_file: Option<PathBuf>,
        /// Length of the recommendation lists.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=MAX_LIMIT as i64))]
        k: u16,
    },
    /// Measures loading and processing a data set, the memory it takes, and the time per request.
    Bench {
        /// The data set (the default data set when absent).
        #[arg(long, env = "DATA_FILE")]
        data_file: Option<PathBuf>,
        /// Number of requests timed.
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        /// Items per request.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=MAX_LIMIT as i64))]
        limit: u16,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Generate { items, users, interactions, seed, output } => {
            write_generated(&GeneratorConfig { seed, items, users, interactions }, output.as_deref())
        }
        Command::Eval { data_file, k } => dataset(data_file.as_deref()).and_then(|(data, _)| {
            let started = Instant::now();
            let evaluation = evaluate(&data, usize::from(k))?;
            print!("{evaluation}");
            eprintln!("evaluated in {:.2} s", started.elapsed().as_secs_f64());
            Ok(())
        }),
        Command::Bench { data_file, requests, limit } => bench(data_file.as_deref(), requests, usize::from(limit)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("recsys: {err}");
            ExitCode::FAILURE
        }
    }
}

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn write_generated(config: &GeneratorConfig, output: Option<&Path>) -> Result {
    let data = generate(config)?;
    match output {
        Some(path) => load::write(&data, File::create(path).map_err(|err| format!("{}: {err}", path.display()))?)?,
        None => load::write(&data, io::stdout().lock())?,
    }
    Ok(())
}

/// The data set to use, and how long loading it took.
fn dataset(file: Option<&Path>) -> Result<(DataSet, Duration)> {
    let started = Instant::now();
    let data = match file {
        Some(path) => load::load(path)?,
        None => default_dataset(),
    };
    Ok((data, started.elapsed()))
}

/// `VmHWM` (peak) and `VmRSS` (current) of this process, in MiB, where /proc says.
fn memory() -> Option<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|line| line.starts_with(name))?;
        let kib: f64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// CPU time of this (single-threaded) process so far, where /proc says (updated at scheduler ticks, so only
/// meaningful over many milliseconds): on a shared machine, wall time alone measures the neighbours too.
fn cpu_time() -> Option<Duration> {
    let schedstat = std::fs::read_to_string("/proc/self/schedstat").ok()?;
    Some(Duration::from_nanos(schedstat.split_whitespace().next()?.parse().ok()?))
}

/// The load average over the last minute, where /proc says.
fn load_average() -> Option<String> {
    Some(std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.to_owned())
}

/// `wall` seconds, and the CPU seconds between `cpu_before` and `cpu_after` when both are known.
fn seconds(wall: Duration, cpu_before: Option<Duration>, cpu_after: Option<Duration>) -> String {
    match (cpu_before, cpu_after) {
        (Some(before), Some(after)) => {
            format!("{:.2} s (CPU {:.2} s)", wall.as_secs_f64(), after.saturating_sub(before).as_secs_f64())
        }
        _ => format!("{:.2} s", wall.as_secs_f64()),
    }
}

/// p50, p99 and the maximum of `samples`, in microseconds.
fn percentiles(samples: &mut [Duration]) -> String {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    format!("p50 {:>7.1} µs   p99 {:>7.1} µs   max {:>8.1} µs", at(0.5), at(0.99), at(1.0))
}

fn bench(file: Option<&Path>, requests: usize, limit: usize) -> Result {
    let cpu_start = cpu_time();
    let (data, load_time) = dataset(file)?;
    let cpu_loaded = cpu_time();
    let started = Instant::now();
    let insights = Insights::build(&data, &Limits::default());
    let build_time = started.elapsed();
    let cpu_built = cpu_time();
    println!(
        "data set: {} items, {} categories, {} users, {} interactions ({})",
        data.catalog().len(),
        data.catalog().categories().len(),
        data.users().len(),
        data.interactions().len(),
        file.map_or_else(|| "the default data set".to_owned(), |path| path.display().to_string()),
    );
    println!("load average: {}", load_average().unwrap_or_else(|| "unknown".to_owned()));
    println!("load:    {}", seconds(load_time, cpu_start, cpu_loaded));
    println!("process: {}", seconds(build_time, cpu_loaded, cpu_built));
    println!("total:   {}", seconds(load_time + build_time, cpu_start, cpu_built));
    // Part of `process` (Insights::build computes it), timed again on its own: the cost of the insights' ETag.
    let started = Instant::now();
    let fingerprint = recsys::fingerprint::of_dataset(&data);
    let fingerprint_time = started.elapsed();
    assert_eq!(fingerprint, insights.fingerprint(), "the fingerprint is a function of the data set");
    println!("of which the content fingerprint: {:.1} ms", fingerprint_time.as_secs_f64() * 1e3);
    let categories: Vec<String> = data.catalog().categories().iter().take(2).cloned().collect();
    drop(data);
    match memory() {
        Some((peak, now)) => println!("memory: peak RSS {peak:.0} MiB, RSS with the insights alone {now:.0} MiB"),
        None => println!("memory: not measured (no /proc/self/status)"),
    }

    // Requests go round the users in order; one in four is a cold user, one in two has preferred categories.
    let users = insights.users().ids();
    // Per model: the data side answers with the neighbours that model reads (UserQuery::neighbours), as the
    // recommendation agent asks for them.
    let mut data_side = [Vec::with_capacity(requests), Vec::with_capacity(requests)];
    let mut model_side = [Vec::with_capacity(requests), Vec::with_capacity(requests)];
    let mut bytes = [0; 2];
    let cpu_before = cpu_time();
    let wall_before = Instant::now();
    for n in 0..requests {
        let cold = format!("cold-{n}");
        let user = if n % 4 == 3 || users.is_empty() { cold.as_str() } else { users[n % users.len()].as_str() };
        let preferences = Preferences { categories: if n % 2 == 0 { Vec::new() } else { categories.clone() } };
        for (m, model) in ModelName::ALL.iter().enumerate() {
            let started = Instant::now();
            let query = UserQuery {
                neighbours: model.model().neighbours(),
                ..UserQuery::new(user, limit, &preferences.categories)
            };
            let json = serde_json::to_vec(&insights.user_insights(&query)?)?;
            data_side[m].push(started.elapsed());
            bytes[m] += json.len();
            let started = Instant::now();
            let input: UserInsights = serde_json::from_slice(&json)?;
            let list = model.model().recommend(&input, &preferences, limit);
            std::hint::black_box(serde_json::to_vec(&list)?);
            model_side[m].push(started.elapsed());
        }
    }
    let wall = wall_before.elapsed();
    let cpu_after = cpu_time();
    if requests > 0 {
        println!("per request ({requests} requests per model, limit {limit}):");
        // CPU time per request is only known on average: /proc updates it at scheduler ticks.
        let per_request = |total: Duration| total.as_secs_f64() * 1e6 / requests as f64;
        let cpu = match (cpu_before, cpu_after) {
            (Some(before), Some(after)) => format!(", CPU {:.1} µs", per_request(after.saturating_sub(before))),
            _ => String::new(),
        };
        println!("  mean of the four steps below together: wall {:.1} µs{cpu}", per_request(wall));
        for (m, model) in ModelName::ALL.iter().enumerate() {
            let asked = format!("data for {model} ({} bytes): user_insights + JSON", bytes[m] / requests);
            println!("  {asked:<46} {}", percentiles(&mut data_side[m]));
            let decoded = format!("{model}: JSON decoding + recommend + JSON");
            println!("  {decoded:<46} {}", percentiles(&mut model_side[m]));
        }
    }
    Ok(())
}
