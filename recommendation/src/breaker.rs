//! Circuit breaker on the data call.
//!
//! Closed: every attempt goes through; `threshold` consecutive failed attempts open it. Open: attempts are refused
//! at once (the caller answers 503 with `Retry-After` = the rest of the cool-down) so a failing data agent is not
//! hammered and callers do not wait on it. Once the cool-down has passed the breaker is half-open: exactly one
//! attempt at a time goes through as a probe; its success closes the breaker, its failure opens it for another
//! cool-down. A probe abandoned before it finished (the caller went away) frees the slot for the next one.
//!
//! The state is exported as the gauge `data_circuit_state` (0 closed, 1 half-open, 2 open) and reported in the
//! readiness body; it never affects readiness itself.
//!
//! A small state machine written here rather than a crate: the answer needs the remaining cool-down (for
//! `Retry-After`) and a one-probe-at-a-time half-open state, which the breaker crates on crates.io do not expose
//! (failsafe, the best known, lets every call through while half-open and hides the open state's deadline).

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use serde::Serialize;
use tokio::time::Instant;

/// The breaker's state, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// One probe call at a time goes through.
    HalfOpen,
    /// Calls are refused until the cool-down ends.
    Open,
}

impl CircuitState {
    /// Value of the `data_circuit_state` gauge.
    pub fn gauge_value(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }
}

/// The breaker's state for the readiness body.
#[derive(Debug, Clone, Serialize)]
pub struct CircuitSnapshot {
    /// `closed`, `half_open` or `open`.
    pub state: CircuitState,
    /// Failed attempts in a row so far (while closed).
    pub consecutive_failures: u32,
    /// While open: seconds until a probe is let through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<f64>,
}

/// An attempt refused because the breaker is open (or its probe slot is taken).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// How long until an attempt may be let through again.
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// A circuit breaker shared by every request of the process.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    state: Arc<Mutex<State>>,
    threshold: u32,
    cooldown: Duration,
}

impl CircuitBreaker {
    /// A closed breaker that opens after `threshold` consecutive failures (0: never) for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        metrics::gauge!("data_circuit_state").set(CircuitState::Closed.gauge_value());
        Self { state: Arc::new(Mutex::new(State::Closed { failures: 0 })), threshold, cooldown }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a plain value updated in one step, so a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks to make one attempt. The permit must be settled with its outcome; dropping it unsettled counts as
    /// neither (a probe's slot is freed).
    pub fn try_acquire(&self) -> Result<Permit, Refused> {
        if self.threshold == 0 {
            return Ok(Permit { breaker: self.clone(), probe: false, settled: false });
        }
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(Permit { breaker: self.clone(), probe: false, settled: false }),
            State::Open { until } => {
                let now = Instant::now();
                if now < until {
                    return Err(Refused { retry_after: until - now });
                }
                *state = State::HalfOpen { probing: true };
                drop(state);
                transition(CircuitState::HalfOpen);
                Ok(Permit { breaker: self.clone(), probe: true, settled: false })
            }
            State::HalfOpen { probing: true } => {
                // The probe is bounded by the data timeout; ask callers to come back after a short while.
                Err(Refused { retry_after: self.cooldown.min(Duration::from_secs(1)) })
            }
            State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                Ok(Permit { breaker: self.clone(), probe: true, settled: false })
            }
        }
    }

    /// The current state, for readiness.
    pub fn snapshot(&self) -> CircuitSnapshot {
        match *self.lock() {
            State::Closed { failures } => CircuitSnapshot {
                state: CircuitState::Closed,
                consecutive_failures: failures,
                retry_after_seconds: None,
            },
            State::Open { until } => CircuitSnapshot {
                state: CircuitState::Open,
                consecutive_failures: self.threshold,
                retry_after_seconds: Some(until.saturating_duration_since(Instant::now()).as_millis() as f64 / 1000.0),
            },
            State::HalfOpen { .. } => CircuitSnapshot {
                state: CircuitState::HalfOpen,
                consecutive_failures: self.threshold,
                retry_after_seconds: None,
            },
        }
    }

    fn settle(&self, probe: bool, success: bool) {
        if self.threshold == 0 {
            return;
        }
        let mut state = self.lock();
        let next = match (*state, success) {
            (State::Closed { failures: 0 }, true) => return,
            (State::Closed { .. }, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 >= self.threshold => {
                State::Open { until: Instant::now() + self.cooldown }
            }
            (State::Closed { failures }, false) => State::Closed { failures: failures + 1 },
            (State::HalfOpen { .. }, true) if probe => State::Closed { failures: 0 },
            (State::HalfOpen { .. }, false) if probe => State::Open { until: Instant::now() + self.cooldown },
            // A late answer to an attempt admitted before the breaker opened says nothing about now.
            (State::HalfOpen { .. } | State::Open { .. }, _) => return,
        };
        let reported = match (*state, next) {
            (State::Closed { .. }, State::Closed { .. }) => None,
            (_, State::Closed { .. }) => Some(CircuitState::Closed),
            (_, State::Open { .. }) => Some(CircuitState::Open),
            (_, State::HalfOpen { .. }) => Some(CircuitState::HalfOpen),
        };
        *state = next;
        drop(state);
        if let Some(reported) = reported {
            transition(reported);
        }
    }

    fn abandon_probe(&self) {
        let mut state = self.lock();
        if let State::HalfOpen { probing: true } = *state {
            *state = State::HalfOpen { probing: false };
        }
    }
}

fn transition(to: CircuitState) {
    metrics::gauge!("data_circuit_state").set(to.gauge_value());
    match to {
        CircuitState::Open => tracing::warn!(circuit = "open", "data circuit breaker opened: failing fast"),
        CircuitState::HalfOpen => tracing::info!(circuit = "half_open", "data circuit breaker half-open: probing"),
        CircuitState::Closed => tracing::info!(circuit = "closed", "data circuit breaker closed: data answers again"),
    }
}

/// Leave to make one attempt; report its outcome with [`Permit::success`] or [`Permit::failure`].
#[derive(Debug)]
pub struct Permit {
    breaker: CircuitBreaker,
    probe: bool,
    settled: bool,
}

impl Permit {
    /// The attempt got an answer that shows the data agent works.
    pub fn success(mut self) {
        self.settled = true;
        self.breaker.settle(self.probe, true);
    }

    /// The attempt failed in a way that counts against the data agent.
    pub fn failure(mut self) {
        self.settled = true;
        self.breaker.settle(self.probe, false);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.settled && self.probe {
            self.breaker.abandon_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The clock is tokio's, paused in the tests that need time to pass: `advance` moves it at once, exactly.
    const COOLDOWN: Duration = Duration::from_secs(2);

    fn fail(breaker: &CircuitBreaker) {
        breaker.try_acquire().expect("admitted").failure();
    }

    #[test]
    fn opens_after_the_threshold_of_consecutive_failures_only() {
        let breaker = CircuitBreaker::new(3, COOLDOWN);
        fail(&breaker);
        fail(&breaker);
        breaker.try_acquire().unwrap().success();
        assert_eq!(breaker.snapshot().consecutive_failures, 0, "a success resets the count");
        for _ in 0..3 {
            fail(&breaker);
        }
        let refused = breaker.try_acquire().unwrap_err();
        assert!(refused.retry_after <= COOLDOWN && refused.retry_after > Duration::ZERO);
        assert_eq!(breaker.snapshot().state, CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_one_probe_through_and_its_success_closes() {
        let breaker = CircuitBreaker::new(1, COOLDOWN);
        fail(&breaker);
        tokio::time::advance(COOLDOWN).await;
        let probe = breaker.try_acquire().expect("probe admitted after the cool-down");
        assert_eq!(breaker.snapshot().state, CircuitState::HalfOpen);
        assert!(breaker.try_acquire().is_err(), "a second caller must not probe concurrently");
        probe.success();
        assert_eq!(breaker.snapshot().state, CircuitState::Closed);
        assert!(breaker.try_acquire().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_a_full_cool_down() {
        let breaker = CircuitBreaker::new(1, COOLDOWN);
        fail(&breaker);
        tokio::time::advance(COOLDOWN).await;
        breaker.try_acquire().unwrap().failure();
        assert_eq!(breaker.snapshot().state, CircuitState::Open);
        assert_eq!(breaker.try_acquire().unwrap_err().retry_after, COOLDOWN, "a full cool-down from the failed probe");
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_frees_the_slot() {
        let breaker = CircuitBreaker::new(1, COOLDOWN);
        fail(&breaker);
        tokio::time::advance(COOLDOWN).await;
        drop(breaker.try_acquire().unwrap());
        breaker.try_acquire().expect("the next caller may probe").success();
        assert_eq!(breaker.snapshot().state, CircuitState::Closed);
    }

    #[test]
    fn late_results_of_calls_admitted_while_closed_do_not_close_an_open_breaker() {
        let breaker = CircuitBreaker::new(1, COOLDOWN);
        let slow = breaker.try_acquire().unwrap();
        fail(&breaker);
        slow.success();
        assert_eq!(breaker.snapshot().state, CircuitState::Open);
    }

    #[test]
    fn threshold_zero_never_opens() {
        let breaker = CircuitBreaker::new(0, COOLDOWN);
        for _ in 0..100 {
            fail(&breaker);
        }
        assert_eq!(breaker.snapshot().state, CircuitState::Closed);
    }
}
