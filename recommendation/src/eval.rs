//! `recommendation eval`: the offline comparison of the models this agent serves, so choosing MODEL (and running
//! the v2 canary) rests on figures. It splits a data set leave-last-out per user and prints precision@k, recall@k
//! and nDCG@k of v1 and v2 side by side ([`recsys::eval`] documents the method). The data set is the default one
//! (what the data agent serves without DATA_FILE), or `--data-file` / `DATA_FILE` in the data agent's format.
//!
//! It is a subcommand of the agent binary, so it ships in the same image:
//! `docker compose run --rm recommendation eval`, `kubectl exec deploy/recommendation -- recommendation eval`.
//! The serving command line is [`shared::agent::main`]'s; [`main_if_asked`] takes `eval` before it.

use std::{ffi::OsString, io::Write, path::PathBuf, process::ExitCode};

use clap::Parser;
use recsys::{DataSet, default_dataset, eval::evaluate, load};

/// `recommendation eval` settings.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "recommendation eval",
    version,
    about = "Compares the models offline: precision, recall and nDCG of v1 and v2 on a leave-last-out split"
)]
pub struct EvalArgs {
    /// A data set in the data agent's DATA_FILE format (JSON Lines); without it, the default data set.
    #[arg(long, env = "DATA_FILE")]
    pub data_file: Option<PathBuf>,

    /// Length of the recommendation lists, k in precision@k, recall@k and nDCG@k.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub k: u8,
}

/// Evaluates both models and writes the table to `out`.
pub fn run(args: &EvalArgs, out: &mut impl Write) -> Result<(), Box<dyn std::error::Error>> {
    let data: DataSet = match &args.data_file {
        Some(path) => load::load(path)?,
        None => default_dataset(),
    };
    let evaluation = evaluate(&data, usize::from(args.k))?;
    write!(out, "{evaluation}")?;
    Ok(())
}

/// Runs `recommendation eval ...` when the command line asks for it (its first argument is `eval`): the exit
/// status, or `None` to serve.
pub fn main_if_asked() -> Option<ExitCode> {
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_default();
    if args.next().is_none_or(|first| first != "eval") {
        return None;
    }
    let argv = std::iter::once(OsString::from(format!("{} eval", program.to_string_lossy()))).chain(args);
    let eval = EvalArgs::parse_from(argv);
    Some(match run(&eval, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("recommendation eval: {err}");
            ExitCode::FAILURE
        }
    })
}
