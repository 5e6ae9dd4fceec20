//! Which failed data attempts are retried, and how long to wait before each retry.
//!
//! The retry loop itself is backon's (see [`crate::data_client`]); this module supplies its policy:
//! exponential backoff with "full jitter" (each wait drawn uniformly between zero and the exponential bound, which
//! spreads retries of many callers best), a bound on retries, and the failures worth retrying. backon's own jitter
//! adds a random share of the delay on top of it (waits fall between d and 2d), which is not full jitter, so the
//! jitter is applied here on backon's un-jittered exponential sequence.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::{config::DataArgs, error::DataError};
use tokio::time::Instant;

/// Least time a retry must have left before the request deadline once its backoff is over; with less, the
/// attempt could not complete, so the failure at hand is returned instead.
pub const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(50);

/// The retry policy of the data call.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    retries: u32,
    backoff: Duration,
    backoff_max: Duration,
    statuses: Vec<u16>,
}

impl RetryPolicy {
    /// The policy from settings.
    pub fn new(args: &DataArgs) -> Self {
        Self {
            retries: args.data_retries,
            backoff: args.data_retry_backoff,
            backoff_max: args.data_retry_backoff_max.max(args.data_retry_backoff),
            statuses: args.data_retry_statuses.clone(),
        }
    }

    /// The waits before retry 1, 2, ...: as many as retries are allowed, each uniform in
    /// `[0, min(backoff x 2^(n-1), backoff_max)]`.
    pub fn backoff(&self) -> impl backon::Backoff + use<> {
        ExponentialBuilder::new()
            .with_min_delay(self.backoff)
            .with_max_delay(self.backoff_max)
            .with_factor(2.0)
            .with_max_times(self.retries as usize)
            .build()
            .map(|bound| bound.mul_f64(fastrand::f64()))
    }

    /// Whether a failed attempt is worth another: the data call is an idempotent GET, so any failure that may be
    /// transient (could not connect, too slow, an overloaded or restarting upstream) is; answers that would come
    /// out the same again (a broken body, other statuses), a deadline that has passed, and an open circuit are not.
    pub fn is_retryable(&self, err: &DataError) -> bool {
        match err {
            DataError::DataUnreachable(_)
            | DataError::DataConnectionClosed(_)
            | DataError::SidecarCannotReachData(_)
            | DataError::DataTimeout { .. } => true,
            DataError::DataBadStatus(status) => self.statuses.contains(&status.as_u16()),
            DataError::DataRefused { .. }
            | DataError::DataBadBody(_)
            | DataError::DeadlineExceeded { .. }
            | DataError::CircuitOpen { .. } => false,
        }
    }
}

/// Whether a retry after waiting `backoff` would still have [`MIN_ATTEMPT_TIME`] before `deadline`.
pub fn fits_before(deadline: Instant, backoff: Duration) -> bool {
    Instant::now() + backoff + MIN_ATTEMPT_TIME <= deadline
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;
    use crate::config::Config;

    fn policy(retries: u32, backoff_ms: u64, max_ms: u64) -> RetryPolicy {
        let mut args = Config::for_tests("http://data:8000".parse().unwrap()).data;
        args.data_retries = retries;
        args.data_retry_backoff = Duration::from_millis(backoff_ms);
        args.data_retry_backoff_max = Duration::from_millis(max_ms);
        RetryPolicy::new(&args)
    }

    #[test]
    fn backoff_has_one_wait_per_retry_within_the_capped_exponential_bound() {
        for _ in 0..200 {
            let waits: Vec<Duration> = policy(4, 100, 300).backoff().collect();
            assert_eq!(waits.len(), 4);
            for (n, (wait, bound)) in waits.iter().zip([100, 200, 300, 300]).enumerate() {
                assert!(*wait <= Duration::from_millis(bound), "wait {n} = {wait:?} above {bound} ms");
            }
        }
        assert_eq!(policy(0, 100, 300).backoff().count(), 0);
    }

    #[test]
    fn waits_are_spread_over_the_whole_range_not_just_its_top() {
        let firsts: Vec<Duration> = (0..400).map(|_| policy(1, 100, 100).backoff().next().unwrap()).collect();
        assert!(firsts.iter().any(|w| *w < Duration::from_millis(25)), "full jitter reaches near zero");
        assert!(firsts.iter().any(|w| *w > Duration::from_millis(75)), "and near the bound");
    }

    #[test]
    fn only_transient_failures_and_listed_statuses_are_retried() {
        let policy = policy(2, 50, 1000);
        assert!(policy.is_retryable(&DataError::DataTimeout { after: Duration::from_secs(2) }));
        for code in [502, 503, 504] {
            assert!(policy.is_retryable(&DataError::DataBadStatus(StatusCode::from_u16(code).unwrap())), "{code}");
        }
        for code in [400, 404, 500] {
            assert!(!policy.is_retryable(&DataError::DataBadStatus(StatusCode::from_u16(code).unwrap())), "{code}");
        }
        assert!(!policy.is_retryable(&DataError::DataBadBody("not JSON".to_owned())));
        assert!(!policy.is_retryable(&DataError::DeadlineExceeded { after: Duration::from_secs(5) }));
        assert!(!policy.is_retryable(&DataError::CircuitOpen { retry_after: Duration::from_secs(3) }));
    }

    #[test]
    fn a_retry_must_leave_time_for_an_attempt_before_the_deadline() {
        let deadline = Instant::now() + Duration::from_millis(500);
        assert!(fits_before(deadline, Duration::from_millis(100)));
        assert!(!fits_before(deadline, Duration::from_millis(480)));
    }
}
