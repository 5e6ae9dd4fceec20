//! The recommendation agent's settings, read once at startup from flags and environment.
//!
//! Cache defaults follow from whether a Dapr sidecar delivers `data-updated` events. Predictions are cached either
//! way (PREDICTION_CACHE_TTL, 5m unless set): with a sidecar each event drops them; without one nothing would, so
//! each is revalidated with data before it is served (PREDICTION_REVALIDATE, a conditional insights request that
//! data answers 304 while its insights are unchanged). The seed `/data` answer has no such tag and is cached only
//! with events (DATA_CACHE_TTL).

use std::{fmt, time::Duration};

use clap::{Args, ValueEnum};
use recsys::ModelName;
use shared::{
    agent::{AgentConfig, CommonArgs},
    config::{BadSetting, parse_duration, parse_positive_duration},
    dapr::{DEFAULT_HTTP_PORT, parse_name, parse_required_token},
};
use url::Url;

/// Every setting of the recommendation agent.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Serving, telemetry and Dapr settings (the same for both agents).
    #[command(flatten)]
    pub common: CommonArgs,
    /// How the data agent is reached.
    #[command(flatten)]
    pub data: DataArgs,
    /// Per-user state and the data cache.
    #[command(flatten)]
    pub state: StateArgs,
    /// The recommendation model and its prediction cache.
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Which model recommends, and how long its predictions are reused.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// The model behind `/recommend?user=`: `v1` (popularity, boosted by the user's preferred categories) or `v2`
    /// (item-item co-occurrence on the user's history, v1 for users without one). The canary Deployment sets v2.
    #[arg(long, env = "MODEL", default_value = "v1", value_parser = parse_model)]
    pub model: ModelName,

    /// How long a prediction (the items computed for one model, user, limit and set of preferred categories) is
    /// kept in the state store (sent as `ttlInSeconds`; whole seconds; 0s turns the cache off). Unset: 5m. Data
    /// changes still show at once: with a sidecar each data-updated event drops every prediction; without one,
    /// each is revalidated with data before it is served (PREDICTION_REVALIDATE).
    #[arg(long, env = "PREDICTION_CACHE_TTL", value_parser = parse_cache_ttl)]
    pub prediction_cache_ttl: Option<Duration>,

    /// `true`: a cached prediction is served only after data confirms that the insights it was computed from are
    /// still current (the insights request is sent with `If-None-Match: <their ETag>`, and data answers 304
    /// without computing them); a data answer without an ETag is then not cached. `false`: a cached prediction is
    /// served without asking data, until a data-updated event drops it or its TTL ends. Unset: `true` without a
    /// Dapr sidecar (no events would drop predictions), `false` with one (events do, and every revalidation would
    /// cost two more sidecar hops).
    #[arg(long, env = "PREDICTION_REVALIDATE", value_parser = clap::value_parser!(bool))]
    pub prediction_revalidate: Option<bool>,
}

/// Prediction cache lifetime when PREDICTION_CACHE_TTL is unset.
pub const PREDICTION_CACHE_TTL_DEFAULT: Duration = Duration::from_secs(300);

impl ModelArgs {
    /// Defaults, as `--help` documents them.
    pub fn defaults() -> Self {
        Self { model: ModelName::V1, prediction_cache_ttl: None, prediction_revalidate: None }
    }
}

fn parse_model(raw: &str) -> Result<ModelName, String> {
    raw.trim().parse::<ModelName>().map_err(|unknown| unknown.to_string())
}

/// A cache lifetime in whole seconds (what `ttlInSeconds` can say), or zero.
fn parse_cache_ttl(raw: &str) -> Result<Duration, String> {
    let ttl = parse_duration(raw)?;
    if ttl.subsec_nanos() != 0 {
        return Err("must be a whole number of seconds (0s turns the cache off)".to_owned());
    }
    Ok(ttl)
}

/// Settings for per-user state (Dapr state store, or in-process without Dapr) and the cache of the data agent's
/// answer.
#[derive(Debug, Clone, Args)]
pub struct StateArgs {
    /// Name of the Dapr state store component holding user preferences and last recommendations.
    #[arg(long, env = "STATE_STORE", default_value = "statestore", value_parser = parse_name)]
    pub state_store: String,

    /// How long a user's last recommendation is kept (sent as `ttlInSeconds`; whole seconds, at least 1s).
    #[arg(long, env = "STATE_TTL", default_value = "1h", value_parser = parse_ttl)]
    pub state_ttl: Duration,

    /// How many times a state write that lost against a concurrent one (ETag conflict) is retried before the
    /// request fails with 503.
    #[arg(long, env = "STATE_WRITE_RETRIES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=50))]
    pub state_write_retries: u32,

    /// Without a Dapr sidecar, how many entries the in-process state store keeps (a user's preferences and their
    /// last recommendation are one entry each); beyond, the least recently used entry is dropped. Anyone who can
    /// call the agent can fill it, pushing idle users out: use a Dapr state store for state that must last.
    #[arg(long, env = "STATE_MEMORY_MAX_ENTRIES", default_value_t = crate::state::MEMORY_MAX_ENTRIES,
        value_parser = parse_max_entries)]
    pub state_memory_max_entries: usize,

    /// How long the data agent's answer is reused. Unset: 30s when a Dapr sidecar delivers data-updated events
    /// (each event clears the cache), else 0s, which turns the cache off.
    #[arg(long, env = "DATA_CACHE_TTL", value_parser = parse_duration)]
    pub data_cache_ttl: Option<Duration>,
}

/// Data cache lifetime when events keep it fresh and DATA_CACHE_TTL is unset.
pub const DATA_CACHE_TTL_WITH_EVENTS: Duration = Duration::from_secs(30);

impl StateArgs {
    /// Defaults, as `--help` documents them.
    pub fn defaults() -> Self {
        Self {
            state_store: "statestore".to_owned(),
            state_ttl: Duration::from_secs(3600),
            state_write_retries: 5,
            state_memory_max_entries: crate::state::MEMORY_MAX_ENTRIES,
            data_cache_ttl: None,
        }
    }
}

fn parse_max_entries(raw: &str) -> Result<usize, String> {
    match raw.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_ttl(raw: &str) -> Result<Duration, String> {
    let ttl = parse_duration(raw)?;
    if ttl.as_secs() == 0 || ttl.subsec_nanos() != 0 {
        return Err("must be a whole number of seconds, at least 1s".to_owned());
    }
    Ok(ttl)
}

/// Settings for the call to the data agent.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// How to reach the data agent: `direct` HTTP to DATA_URL, `dapr` service invocation through the local Dapr
    /// sidecar, or `auto`: `dapr` when DAPR_HTTP_PORT is set (the Dapr sidecar injector sets it), else `direct`.
    #[arg(long, env = "DATA_MODE", value_enum, default_value_t = DataModeSetting::Auto)]
    pub data_mode: DataModeSetting,

    /// Base URL of the data agent in direct mode; `/data` is appended.
    #[arg(long, env = "DATA_URL", default_value = "http://data:8000", value_parser = parse_base_url)]
    pub data_url: Url,

    /// Dapr app id of the data agent, used in dapr mode (`name` or `name.namespace`).
    #[arg(long, env = "DATA_APP_ID", default_value = "data", value_parser = parse_name)]
    pub data_app_id: String,

    /// Bound on one attempt at the data call, from connecting to the last byte of the body (cut shorter when
    /// REQUEST_DEADLINE is nearer); past it the attempt counts as timed out and the caller gets 504.
    #[arg(long, env = "DATA_TIMEOUT", default_value = "2s", value_parser = parse_positive_duration)]
    pub data_timeout: Duration,

    /// Bound on establishing the TCP connection to the data agent (or its sidecar); past it the caller gets 503.
    #[arg(long, env = "DATA_CONNECT_TIMEOUT", default_value = "500ms", value_parser = parse_positive_duration)]
    pub data_connect_timeout: Duration,

    /// Overall deadline of one /recommend request: every data attempt and the backoff between them must fit in it;
    /// a retry that could not get a useful share of it is not started, and past it the caller gets 504.
    #[arg(long, env = "REQUEST_DEADLINE", default_value = "5s", value_parser = parse_positive_duration)]
    pub request_deadline: Duration,

    /// Retries of a failed data call after the first attempt, only for failures worth retrying (connect errors,
    /// timeouts, the statuses in DATA_RETRY_STATUSES). Set 0 under Istio, whose sidecar already retries.
    #[arg(long, env = "DATA_RETRIES", default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub data_retries: u32,

    /// Base of the exponential retry backoff: before retry n the agent waits a random time between zero and
    /// DATA_RETRY_BACKOFF x 2^(n-1), capped by DATA_RETRY_BACKOFF_MAX ("full jitter").
    #[arg(long, env = "DATA_RETRY_BACKOFF", default_value = "50ms", value_parser = parse_duration)]
    pub data_retry_backoff: Duration,

    /// Upper bound of one retry backoff, before jitter.
    #[arg(long, env = "DATA_RETRY_BACKOFF_MAX", default_value = "1s", value_parser = parse_duration)]
    pub data_retry_backoff_max: Duration,

    /// Data answer statuses that are retried (comma-separated). Add 500 in Dapr mode, where a failed invocation
    /// surfaces as 500.
    #[arg(long, env = "DATA_RETRY_STATUSES", value_delimiter = ',', default_value = "502,503,504",
        value_parser = clap::value_parser!(u16).range(400..=599))]
    pub data_retry_statuses: Vec<u16>,

    /// Consecutive failed data attempts that open the circuit breaker; while open, /recommend answers 503 with
    /// Retry-After at once, without calling data (0 = no breaker).
    #[arg(long, env = "DATA_BREAKER_THRESHOLD", default_value_t = 5)]
    pub data_breaker_threshold: u32,

    /// How long the breaker stays open before it lets one probe call through (half-open); the probe's success
    /// closes it, its failure opens it for another cool-down.
    #[arg(long, env = "DATA_BREAKER_COOLDOWN", default_value = "2s", value_parser = parse_positive_duration)]
    pub data_breaker_cooldown: Duration,

    /// How long the last good data answer may be served when data is unavailable, marked with the headers
    /// `X-Data-Stale: true` and `X-Data-Age: <seconds>` (0s = never; fresh answers are never marked).
    #[arg(long, env = "STALE_CACHE_TTL", default_value = "0s", value_parser = parse_duration)]
    pub stale_cache_ttl: Duration,

    /// Direct mode only: token sent to the data agent in the `dapr-api-token` header, i.e. the data agent's
    /// APP_API_TOKEN when it has one (through Dapr, data's sidecar presents it instead).
    #[arg(long, env = "DATA_API_TOKEN", hide_env_values = true, value_parser = parse_required_token)]
    pub data_api_token: Option<String>,
}

/// The `DATA_MODE` setting as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataModeSetting {
    /// `dapr` when DAPR_HTTP_PORT is set, else `direct`.
    Auto,
    /// Plain HTTP to DATA_URL.
    Direct,
    /// Dapr service invocation through the sidecar.
    Dapr,
}

/// The mode in effect after resolving `auto`; also a log field and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataMode {
    /// Plain HTTP to the data agent.
    Direct,
    /// Through the local Dapr sidecar.
    Dapr,
}

impl DataMode {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Dapr => "dapr",
        }
    }
}

impl fmt::Display for DataMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Config {
    /// The data call's mode in effect: DATA_MODE, with `auto` resolved by whether DAPR_HTTP_PORT is set.
    pub fn data_mode(&self) -> DataMode {
        match (self.data.data_mode, self.common.dapr.dapr_http_port) {
            (DataModeSetting::Direct, _) | (DataModeSetting::Auto, None) => DataMode::Direct,
            (DataModeSetting::Dapr, _) | (DataModeSetting::Auto, Some(_)) => DataMode::Dapr,
        }
    }

    /// The URL `GET /recommend` fetches data from, in the mode in effect.
    pub fn data_endpoint(&self) -> Url {
        data_route(&self.data_base(), &["data"])
    }

    /// The URL the data agent's routes hang under, in the mode in effect: DATA_URL in direct mode, the sidecar's
    /// invocation path in dapr mode; a route's path segments are appended to it (see [`crate::DataClient`]).
    pub fn data_base(&self) -> Url {
        let raw = match self.data_mode() {
            DataMode::Direct => self.data.data_url.as_str().trim_end_matches('/').to_owned(),
            DataMode::Dapr => format!(
                "http://127.0.0.1:{}/v1.0/invoke/{}/method",
                self.sidecar_port().unwrap_or(DEFAULT_HTTP_PORT),
                self.data.data_app_id
            ),
        };
        // Both inputs were validated when parsed, so the URL is valid too.
        Url::parse(&raw).expect("validated base URL and app id form a valid URL")
    }

    /// How long predictions are cached (zero: not cached).
    pub fn prediction_cache_ttl(&self) -> Duration {
        self.model.prediction_cache_ttl.unwrap_or(PREDICTION_CACHE_TTL_DEFAULT)
    }

    /// Whether cached predictions are revalidated with data before they are served: PREDICTION_REVALIDATE, else
    /// whenever no sidecar delivers events.
    pub fn prediction_revalidate(&self) -> bool {
        self.model.prediction_revalidate.unwrap_or(self.sidecar_port().is_none())
    }

    /// How long the data agent's answer is cached (zero: not cached).
    pub fn data_cache_ttl(&self) -> Duration {
        match (self.state.data_cache_ttl, self.sidecar_port()) {
            (Some(ttl), _) => ttl,
            (None, Some(_)) => DATA_CACHE_TTL_WITH_EVENTS,
            (None, None) => Duration::ZERO,
        }
    }
}

impl AgentConfig for Config {
    fn common(&self) -> &CommonArgs {
        &self.common
    }

    fn check(&self) -> Result<(), BadSetting> {
        let data = &self.data;
        if data.data_connect_timeout >= data.data_timeout {
            return Err(BadSetting::new(
                "DATA_CONNECT_TIMEOUT",
                format!(
                    "{:?} must be shorter than DATA_TIMEOUT ({:?}), or an unreachable data agent would be reported as slow",
                    data.data_connect_timeout, data.data_timeout
                ),
            ));
        }
        if data.data_api_token.is_some() && self.data_mode() == DataMode::Dapr {
            return Err(BadSetting::new(
                "DATA_API_TOKEN",
                "is sent in direct mode only; through Dapr the data agent's sidecar presents its APP_API_TOKEN",
            ));
        }
        if data.data_retry_backoff_max < data.data_retry_backoff {
            return Err(BadSetting::new(
                "DATA_RETRY_BACKOFF_MAX",
                format!("must not be below DATA_RETRY_BACKOFF ({:?})", data.data_retry_backoff),
            ));
        }
        Ok(())
    }

    /// DAPR_HTTP_PORT, or Dapr's default port when DATA_MODE=dapr.
    fn sidecar_port(&self) -> Option<u16> {
        match (self.common.dapr.dapr_http_port, self.data_mode()) {
            (Some(port), _) => Some(port),
            (None, DataMode::Dapr) => Some(DEFAULT_HTTP_PORT),
            (None, DataMode::Direct) => None,
        }
    }
}

impl Config {
    /// Settings for tests: loopback, ephemeral port, direct mode to `data_url`, resilience settings at their
    /// defaults.
    pub fn for_tests(data_url: Url) -> Self {
        Self {
            common: CommonArgs::for_tests(),
            data: DataArgs {
                data_mode: DataModeSetting::Direct,
                data_url,
                data_app_id: "data".to_owned(),
                data_timeout: Duration::from_secs(2),
                data_connect_timeout: Duration::from_millis(500),
                request_deadline: Duration::from_secs(5),
                data_retries: 2,
                data_retry_backoff: Duration::from_millis(50),
                data_retry_backoff_max: Duration::from_secs(1),
                data_retry_statuses: vec![502, 503, 504],
                data_breaker_threshold: 5,
                data_breaker_cooldown: Duration::from_secs(2),
                stale_cache_ttl: Duration::ZERO,
                data_api_token: None,
            },
            state: StateArgs::defaults(),
            model: ModelArgs::defaults(),
        }
    }
}

/// `base` with `segments` appended, each percent-encoded as one path segment (so a user id can never add a segment
/// or a query).
pub fn data_route(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    url.path_segments_mut().expect("an http(s) URL has a path").pop_if_empty().extend(segments);
    url
}

fn parse_base_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme must be http or https, not {}", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("a host is required".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment; give the base URL only".to_owned());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The command line, as the binary parses it (see `shared::agent::main`).
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn args(mode: DataModeSetting, dapr_port: Option<u16>, base: &str) -> Config {
        let mut config = Config::for_tests(parse_base_url(base).unwrap());
        config.data.data_mode = mode;
        config.common.dapr.dapr_http_port = dapr_port;
        config
    }

    #[test]
    fn auto_mode_follows_the_dapr_port() {
        assert_eq!(args(DataModeSetting::Auto, None, "http://data:8000").data_mode(), DataMode::Direct);
        assert_eq!(args(DataModeSetting::Auto, Some(3501), "http://data:8000").data_mode(), DataMode::Dapr);
        assert_eq!(args(DataModeSetting::Direct, Some(3501), "http://data:8000").data_mode(), DataMode::Direct);
        assert_eq!(args(DataModeSetting::Dapr, None, "http://data:8000").data_mode(), DataMode::Dapr);
    }

    #[test]
    fn endpoints_are_built_per_mode() {
        let direct = args(DataModeSetting::Direct, None, "http://data:8000/");
        assert_eq!(direct.data_endpoint().as_str(), "http://data:8000/data");
        let prefixed = args(DataModeSetting::Direct, None, "http://gw:80/agents");
        assert_eq!(prefixed.data_endpoint().as_str(), "http://gw/agents/data");
        let dapr = args(DataModeSetting::Dapr, None, "http://data:8000");
        assert_eq!(dapr.data_endpoint().as_str(), "http://127.0.0.1:3500/v1.0/invoke/data/method/data");
        let dapr_port = args(DataModeSetting::Auto, Some(3601), "http://data:8000");
        assert_eq!(dapr_port.data_endpoint().as_str(), "http://127.0.0.1:3601/v1.0/invoke/data/method/data");
    }

    #[test]
    fn the_data_cache_is_off_without_a_sidecar_unless_asked_for() {
        let mut config = Config::for_tests(parse_base_url("http://data:8000").unwrap());
        assert_eq!((config.sidecar_port(), config.data_cache_ttl()), (None, Duration::ZERO));
        config.data.data_mode = DataModeSetting::Dapr;
        assert_eq!((config.sidecar_port(), config.data_cache_ttl()), (Some(3500), DATA_CACHE_TTL_WITH_EVENTS));
        config.state.data_cache_ttl = Some(Duration::from_secs(2));
        assert_eq!(config.data_cache_ttl(), Duration::from_secs(2));
        assert!(parse_ttl("1500ms").is_err());
        assert!(parse_ttl("0s").is_err());
        assert_eq!(parse_ttl("2m"), Ok(Duration::from_secs(120)));
    }

    #[test]
    fn the_model_is_v1_unless_set_and_a_bad_name_is_refused_by_name() {
        assert_eq!(Cli::try_parse_from(["recommendation"]).unwrap().config.model.model, ModelName::V1);
        let v2 = Cli::try_parse_from(["recommendation", "--model", "v2"]).unwrap();
        assert_eq!(v2.config.model.model, ModelName::V2);
        let err = Cli::try_parse_from(["recommendation", "--model", "v3"]).unwrap_err().to_string();
        assert!(err.contains("unknown model `v3` (expected `v1` or `v2`)"), "{err}");
    }

    #[test]
    fn predictions_are_cached_by_default_and_revalidated_unless_a_sidecar_delivers_events() {
        let mut config = Config::for_tests(parse_base_url("http://data:8000").unwrap());
        assert_eq!(
            (config.prediction_cache_ttl(), config.prediction_revalidate()),
            (PREDICTION_CACHE_TTL_DEFAULT, true)
        );
        config.data.data_mode = DataModeSetting::Dapr;
        assert_eq!(
            (config.prediction_cache_ttl(), config.prediction_revalidate()),
            (PREDICTION_CACHE_TTL_DEFAULT, false)
        );
        config.model.prediction_revalidate = Some(true);
        assert!(config.prediction_revalidate());
        config.data.data_mode = DataModeSetting::Direct;
        config.model.prediction_revalidate = Some(false);
        assert!(!config.prediction_revalidate());
        config.model.prediction_cache_ttl = Some(Duration::ZERO);
        assert_eq!(config.prediction_cache_ttl(), Duration::ZERO);
        assert!(parse_cache_ttl("1500ms").is_err());
        assert_eq!(parse_cache_ttl("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn prediction_revalidate_is_true_or_false() {
        let parse = |value: &str| {
            Cli::try_parse_from(["recommendation", "--prediction-revalidate", value])
                .map(|cli| cli.config.model.prediction_revalidate)
        };
        assert_eq!(parse("true").unwrap(), Some(true));
        assert_eq!(parse("false").unwrap(), Some(false));
        assert!(parse("maybe").is_err());
        assert_eq!(Cli::try_parse_from(["recommendation"]).unwrap().config.model.prediction_revalidate, None);
    }

    #[test]
    fn data_routes_hang_under_the_base_in_both_modes() {
        let direct = args(DataModeSetting::Direct, None, "http://data:8000/agents/");
        assert_eq!(direct.data_base().as_str(), "http://data:8000/agents");
        let dapr = args(DataModeSetting::Dapr, None, "http://data:8000");
        assert_eq!(dapr.data_base().as_str(), "http://127.0.0.1:3500/v1.0/invoke/data/method");
        let user = data_route(&dapr.data_base(), &["insights", "users", "u1"]);
        assert_eq!(user.as_str(), "http://127.0.0.1:3500/v1.0/invoke/data/method/insights/users/u1");
        let root = data_route(&args(DataModeSetting::Direct, None, "http://data:8000/").data_base(), &["data"]);
        assert_eq!(root.as_str(), "http://data:8000/data");
    }

    #[test]
    fn bad_base_urls_are_refused_with_a_reason() {
        assert!(parse_base_url("data:8000").unwrap_err().contains("scheme"));
        assert!(parse_base_url("ftp://data").unwrap_err().contains("scheme"));
        assert!(parse_base_url("http://data:8000/?x=1").unwrap_err().contains("query"));
        assert!(parse_base_url("not a url").is_err());
    }

    #[test]
    fn test_settings_match_the_documented_defaults() {
        let mut parsed = Cli::try_parse_from(["recommendation"]).unwrap().config.data;
        parsed.data_mode = DataModeSetting::Direct; // the one deliberate difference
        let for_tests = Config::for_tests("http://data:8000".parse().unwrap()).data;
        assert_eq!(format!("{parsed:?}"), format!("{for_tests:?}"));
    }

    #[test]
    fn retry_statuses_are_a_comma_list_of_error_codes() {
        let parsed = Cli::try_parse_from(["recommendation", "--data-retry-statuses", "500,503"]).unwrap();
        assert_eq!(parsed.config.data.data_retry_statuses, vec![500, 503]);
        assert!(Cli::try_parse_from(["recommendation", "--data-retry-statuses", "200"]).is_err());
    }

    #[test]
    fn a_backoff_cap_below_its_base_is_refused() {
        let mut config = Config::for_tests("http://data:8000".parse().unwrap());
        assert!(config.check().is_ok());
        config.data.data_retry_backoff_max = Duration::from_millis(10);
        assert_eq!(config.check().unwrap_err().setting, "DATA_RETRY_BACKOFF_MAX");
    }

    #[test]
    fn a_data_api_token_is_for_direct_mode_only() {
        let mut config = Config::for_tests("http://data:8000".parse().unwrap());
        config.data.data_api_token = Some("t".to_owned());
        assert!(config.check().is_ok());
        config.data.data_mode = DataModeSetting::Dapr;
        assert_eq!(config.check().unwrap_err().setting, "DATA_API_TOKEN");
    }

    #[test]
    fn app_ids_allow_namespaced_names_only() {
        assert!(parse_name("data.agents").is_ok());
        assert!(parse_name("data/../x").is_err());
        assert!(parse_name("").is_err());
    }
}
