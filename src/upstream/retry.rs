//! The retry policy of every outbound call: exponential backoff with full jitter, bounded by an
//! attempt count and an overall deadline, honouring `Retry-After`.
//!
//! backon drives the loop; the jitter is ours. backon's `ExponentialBuilder::with_jitter` *adds*
//! a uniform share of the current delay to it (`d + d·U[0, 1)`, so delays lie in `[d, 2d)`):
//! every client still waits at least `d`, and clients that failed together retry together
//! within a window only as wide as `d`. Full jitter ("Exponential Backoff And Jitter", AWS
//! Architecture Blog, 2015) draws each delay uniformly from `[0, d]` with
//! `d = min(max_delay, base_delay · 2ⁿ)`, which spreads the retries of many clients over the
//! whole window and halves the mean wait. So backon's exponential sequence, without its jitter,
//! gives the ceilings `d` and [`FullJitter`] draws the delays under them.
//!
//! Never sleeps past the deadline: a delay (or a `Retry-After`) that would end after it stops
//! the call at once with the last error, as [`Stopped::DeadlineExceeded`].

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use tokio::time::Instant;

use super::RetrySettings;

/// What the retry loop needs to know about an error.
pub(crate) trait Transient {
    /// Whether the same request may succeed if sent again soon.
    fn is_retryable(&self) -> bool;
    /// The wait the server asked for, if any.
    fn retry_after(&self) -> Option<Duration>;
}

/// Why the loop gave up.
#[derive(Debug)]
pub(crate) enum Stopped<E> {
    /// A permanent error, or a transient one on the last allowed attempt.
    Failed(E),
    /// The next attempt could not start before the deadline.
    DeadlineExceeded { attempts: u32, last: E },
}

/// Delays drawn uniformly from `[0, ceiling]` for each ceiling of the inner sequence.
pub(crate) struct FullJitter<B> {
    ceilings: B,
}

impl<B: Iterator<Item = Duration>> Iterator for FullJitter<B> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.ceilings.next().map(full_jitter)
    }
}

/// A delay uniform in `[0, ceiling]`, at nanosecond resolution.
pub(crate) fn full_jitter(ceiling: Duration) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::random_range(0..=nanos))
}

/// The delays of one call: ceilings `base · 2ⁿ` capped at `max_delay`, one per retry.
pub(crate) fn delays(settings: &RetrySettings) -> FullJitter<backon::ExponentialBackoff> {
    let ceilings = ExponentialBuilder::new()
        .with_min_delay(settings.base_delay)
        .with_max_delay(settings.max_delay)
        .with_factor(2.0)
        .with_max_times(settings.max_attempts.saturating_sub(1) as usize)
        .build();
    FullJitter { ceilings }
}

/// Runs `attempt` until it succeeds, fails permanently, runs out of attempts or would pass
/// `deadline`. Each attempt must bound its own time by the deadline too (see
/// [`attempt_timeout`]).
pub(crate) async fn run<T, E, F, Fut>(
    settings: &RetrySettings,
    deadline: Instant,
    what: &'static str,
    attempt: F,
) -> Result<T, Stopped<E>>
where
    E: Transient + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempts: u32 = 1;
    let mut past_deadline = false;
    let outcome = attempt
        .retry(delays(settings))
        .when(E::is_retryable)
        .adjust(|error: &E, delay: Option<Duration>| {
            // `None`: the attempts are used up.
            let delay = delay?;
            // The server's wait is a minimum: a shorter jittered delay is stretched to it.
            let delay = error.retry_after().map_or(delay, |asked| asked.max(delay));
            if Instant::now() + delay >= deadline {
                past_deadline = true;
                return None;
            }
            attempts += 1;
            Some(delay)
        })
        .notify(|error: &E, delay: Duration| {
            tracing::debug!(%error, ?delay, what, "retrying an outbound call");
        })
        .await;
    match outcome {
        Ok(value) => Ok(value),
        Err(last) if past_deadline => Err(Stopped::DeadlineExceeded { attempts, last }),
        Err(error) => Err(Stopped::Failed(error)),
    }
}

/// The timeout of an attempt starting now: its own limit, or less when the deadline is nearer.
pub(crate) fn attempt_timeout(settings: &RetrySettings, deadline: Instant) -> Duration {
    settings
        .attempt_timeout
        .min(deadline.saturating_duration_since(Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_lie_under_doubling_ceilings() {
        let settings = RetrySettings {
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(80),
            max_attempts: 7,
            ..RetrySettings::default()
        };
        let ceilings = [10, 20, 40, 80, 80, 80].map(Duration::from_millis);
        for _ in 0..200 {
            let drawn: Vec<Duration> = delays(&settings).collect();
            assert_eq!(drawn.len(), ceilings.len(), "one delay per retry");
            for (delay, ceiling) in drawn.iter().zip(ceilings) {
                assert!(*delay <= ceiling, "{delay:?} > {ceiling:?}");
            }
        }
    }

    #[test]
    fn full_jitter_is_uniform_from_zero_to_the_ceiling() {
        let ceiling = Duration::from_millis(100);
        let samples: Vec<f64> = (0..20_000)
            .map(|_| full_jitter(ceiling).as_secs_f64() / ceiling.as_secs_f64())
            .collect();
        assert!(samples.iter().all(|share| (0.0..=1.0).contains(share)));
        // Uniform on [0, 1]: mean 1/2, and each tenth holds about a tenth of the draws.
        let mean = samples.iter().sum::<f64>() / 20_000.0;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        for tenth in 0..10 {
            let low = f64::from(tenth) / 10.0;
            let count = samples
                .iter()
                .filter(|share| (low..low + 0.1).contains(*share))
                .count();
            assert!((1_600..2_400).contains(&count), "tenth {tenth}: {count}");
        }
    }

    #[derive(Debug)]
    struct Flaky {
        retry_after: Option<Duration>,
    }

    impl std::fmt::Display for Flaky {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("flaky")
        }
    }

    impl Transient for Flaky {
        fn is_retryable(&self) -> bool {
            true
        }

        fn retry_after(&self) -> Option<Duration> {
            self.retry_after
        }
    }

    // Paused time: sleeps advance the clock at once, so the waits are exact and cost nothing.
    #[tokio::test(start_paused = true)]
    async fn stops_before_a_delay_would_pass_the_deadline() {
        let settings = RetrySettings {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_attempts: 1_000,
            ..RetrySettings::default()
        };
        let start = Instant::now();
        let deadline = start + Duration::from_secs(5);
        let mut calls = 0_u32;
        let outcome: Result<(), _> = run(&settings, deadline, "test", || {
            calls += 1;
            async { Err(Flaky { retry_after: None }) }
        })
        .await;
        let Err(Stopped::DeadlineExceeded { attempts, .. }) = outcome else {
            panic!("expected the deadline to stop the loop");
        };
        assert_eq!(attempts, calls);
        assert!(Instant::now() < deadline);
        // Ceilings reach 1 s after four delays: several attempts, far from a tight loop.
        assert!((3..200).contains(&calls), "{calls} attempts");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_a_minimum_and_bounded_by_the_deadline() {
        let settings = RetrySettings {
            base_delay: Duration::from_millis(1),
            max_attempts: 3,
            ..RetrySettings::default()
        };
        let asked = Duration::from_secs(2);
        let start = Instant::now();
        let mut calls = 0;
        let outcome: Result<(), _> =
            run(&settings, start + Duration::from_secs(10), "test", || {
                calls += 1;
                async move {
                    Err(Flaky {
                        retry_after: Some(asked),
                    })
                }
            })
            .await;
        assert!(
            matches!(outcome, Err(Stopped::Failed(_))),
            "attempts used up"
        );
        assert_eq!(calls, 3);
        let waited = start.elapsed();
        assert!(
            waited >= asked * 2 && waited <= asked * 2 + Duration::from_millis(2),
            "{waited:?}"
        );

        let start = Instant::now();
        let outcome: Result<(), _> = run(
            &settings,
            start + Duration::from_secs(1),
            "test",
            || async {
                Err(Flaky {
                    retry_after: Some(Duration::from_secs(30)),
                })
            },
        )
        .await;
        assert!(matches!(
            outcome,
            Err(Stopped::DeadlineExceeded { attempts: 1, .. })
        ));
        assert_eq!(start.elapsed(), Duration::ZERO, "gave up without sleeping");
    }
}
