//! Reading settings: the value parsers the agents' settings share, and the handling of a bad setting (one line on
//! stderr naming the setting and its environment variable, exit status 2).
//!
//! The settings themselves are declared where they are used ([`crate::http::ServerArgs`],
//! [`crate::obs::TelemetryArgs`], [`crate::dapr::DaprArgs`], each agent's own) and gathered by
//! [`crate::agent::CommonArgs`].

use std::time::Duration;

use clap::{
    Command, FromArgMatches,
    error::{ContextKind, ContextValue, ErrorKind},
};

/// Parses a human-friendly duration such as `2s`, `500ms` or `1m 30s`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim()).map_err(|e| format!("{e} (expected a duration such as 2s or 500ms)"))
}

/// Like [`parse_duration`], but zero is refused: used where zero would disable a protection by accident.
pub fn parse_positive_duration(raw: &str) -> Result<Duration, String> {
    match parse_duration(raw)? {
        d if d.is_zero() => Err("must be greater than zero".to_owned()),
        d => Ok(d),
    }
}

/// A setting that parsed but makes no sense with the others: the setting to fix (its environment variable) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSetting {
    /// The environment variable to fix.
    pub setting: &'static str,
    /// What is wrong with it, for people.
    pub why: String,
}

impl BadSetting {
    /// A bad `setting`, for the reason `why`.
    pub fn new(setting: &'static str, why: impl Into<String>) -> Self {
        Self { setting, why: why.into() }
    }
}

/// Parses the command line and environment against `command`, or exits: help and version print as usual (status
/// 0); any bad setting prints one line naming the flag and its environment variable, and exits with status 2.
pub(crate) fn parse_or_exit<T: FromArgMatches>(mut command: Command) -> T {
    let parsed = command.try_get_matches_from_mut(std::env::args_os()).and_then(|m| T::from_arg_matches(&m));
    match parsed {
        Ok(parsed) => parsed,
        Err(err) => match err.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => err.exit(),
            _ => {
                eprintln!("{}", one_line_error(&command, &err));
                std::process::exit(2);
            }
        },
    }
}

/// Renders a clap error as a single line, adding the environment variable behind the offending flag, because in a
/// container the setting almost always came from the environment, not the command line.
pub(crate) fn one_line_error(command: &Command, err: &clap::Error) -> String {
    let rendered = err.to_string();
    let first_line = rendered.lines().find(|l| !l.trim().is_empty()).unwrap_or("error: invalid settings").trim();
    let env_name = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => env_of_flag(command, arg),
        _ => None,
    };
    match env_name {
        Some(env) => format!("{first_line} (env {env})"),
        _ => first_line.to_owned(),
    }
}

fn env_of_flag(command: &Command, rendered_arg: &str) -> Option<String> {
    let long = rendered_arg.split_whitespace().next()?.strip_prefix("--")?;
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|env| env.to_string_lossy().into_owned())
}

/// Prints one line naming a setting that parsed but makes no sense with the others, and exits with status 2.
pub(crate) fn exit_bad_setting(bad: &BadSetting) -> ! {
    eprintln!("error: invalid setting {}: {}", bad.setting, bad.why);
    std::process::exit(2);
}

#[cfg(test)]
mod tests {
    use clap::{Args, CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        server: Port,
    }

    #[derive(Debug, Args)]
    struct Port {
        /// A port.
        #[arg(long, env = "PORT", default_value_t = 8000)]
        port: u16,
    }

    #[test]
    fn bad_port_is_reported_on_one_line_naming_flag_and_env() {
        let err = Cli::try_parse_from(["x", "--port", "eighty"]).unwrap_err();
        let line = one_line_error(&Cli::command(), &err);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("--port"), "{line}");
        assert!(line.contains("(env PORT)"), "{line}");
        assert!(line.contains("eighty"), "{line}");
    }

    #[test]
    fn durations_accept_human_forms_and_reject_garbage() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_positive_duration("0s").is_err());
    }
}
