//! Debouncing: many changes in a burst become one announcement, sent once the changes pause for a quiet window, and
//! at the latest a bounded delay after the first change of the burst (so a steady stream of batches still gets
//! announced). The announcement carries the latest value only: subscribers need to know that the insights changed
//! and to which version, not every step.
//!
//! Hand-written (a `watch` channel and a task) because what is needed is small and specific: a trailing-edge
//! debounce with a maximum wait over the latest value. Time comes from `tokio::time`, so tests run it on a paused
//! clock.

use std::{future::Future, time::Duration};

use tokio::{
    sync::watch,
    time::{Instant, sleep_until},
};

/// When a burst is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Announce once no change came for this long.
    pub quiet: Duration,
    /// Announce at the latest this long after the first change of a burst.
    pub max_delay: Duration,
}

/// The sending side: [`Debouncer::notify`] records the latest value; a task announces it.
#[derive(Debug, Clone)]
pub struct Debouncer<T> {
    latest: watch::Sender<Option<T>>,
}

impl<T: Clone + Send + Sync + 'static> Debouncer<T> {
    /// Starts the task that calls `announce` with the latest value of each burst, one call at a time. Must be
    /// called within a Tokio runtime. The task ends when every [`Debouncer`] clone is dropped, after announcing a
    /// burst still pending.
    pub fn spawn<F, Fut>(timing: Timing, mut announce: F) -> Self
    where
        F: FnMut(T) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let (latest, mut changes) = watch::channel(None);
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let deadline = Instant::now() + timing.max_delay;
                loop {
                    let wake = (Instant::now() + timing.quiet).min(deadline);
                    tokio::select! {
                        changed = changes.changed() => {
                            if changed.is_err() || Instant::now() >= deadline {
                                break;
                            }
                        }
                        () = sleep_until(wake) => break,
                    }
                }
                let value = changes.borrow_and_update().clone();
                if let Some(value) = value {
                    announce(value).await;
                }
            }
        });
        Self { latest }
    }

    /// Records a change; it is announced when its burst ends.
    pub fn notify(&self, value: T) {
        self.latest.send_replace(Some(value));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::time::{advance, sleep};

    use super::*;

    const TIMING: Timing = Timing { quiet: Duration::from_millis(200), max_delay: Duration::from_secs(2) };

    type Log = Arc<Mutex<Vec<(u64, Duration)>>>;

    /// A debouncer recording each announcement with the time since `start`.
    fn recording(start: Instant) -> (Debouncer<u64>, Log) {
        let log: Log = Arc::default();
        let seen = Arc::clone(&log);
        let debouncer = Debouncer::spawn(TIMING, move |version| {
            seen.lock().unwrap().push((version, start.elapsed()));
            async {}
        });
        (debouncer, log)
    }

    /// Lets the debouncing task run what is due now.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_announced_once_with_its_latest_value_after_the_quiet_window() {
        let start = Instant::now();
        let (debouncer, log) = recording(start);
        for version in 1..=5 {
            debouncer.notify(version);
            settle().await;
            advance(Duration::from_millis(50)).await;
        }
        assert!(log.lock().unwrap().is_empty(), "nothing is announced while the burst goes on");
        sleep(Duration::from_secs(1)).await;
        assert_eq!(*log.lock().unwrap(), [(5, Duration::from_millis(200 + 200))]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_is_announced_at_the_latest_after_the_max_delay() {
        let start = Instant::now();
        let (debouncer, log) = recording(start);
        // A change every 150 ms for about 5 s: never quiet for 200 ms.
        for version in 1..=34 {
            debouncer.notify(version);
            sleep(Duration::from_millis(150)).await;
        }
        sleep(Duration::from_secs(1)).await;
        let log = log.lock().unwrap().clone();
        let times: Vec<Duration> = log.iter().map(|entry| entry.1).collect();
        // Bursts start at 0, 2100 and 4200 ms; the first two hit the 2 s bound, the last ends 200 ms after the last
        // change (4950 ms).
        assert_eq!(times, [2000, 4100, 5150].map(Duration::from_millis));
        assert_eq!(log.last().unwrap().0, 34, "the last announcement has the latest value");
        assert!(log.windows(2).all(|pair| pair[0].0 < pair[1].0));
    }

    #[tokio::test(start_paused = true)]
    async fn separate_bursts_are_announced_separately_and_a_pending_one_survives_the_drop() {
        let start = Instant::now();
        let (debouncer, log) = recording(start);
        debouncer.notify(1);
        sleep(Duration::from_secs(1)).await;
        debouncer.notify(2);
        drop(debouncer);
        sleep(Duration::from_secs(1)).await;
        assert_eq!(*log.lock().unwrap(), [(1, Duration::from_millis(200)), (2, Duration::from_secs(1))]);
    }
}
