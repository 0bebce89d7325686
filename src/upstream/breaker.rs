//! The catalogue's circuit breaker: recloser's failure-rate breaker, plus the state recloser
//! keeps to itself.
//!
//! recloser (1.4) decides: it counts the outcomes of the last `window` attempts, opens when
//! their failure rate reaches the threshold, rejects every call while open, and after the
//! cool-down lets calls through again (half-open) until the next outcome decides. It does not
//! expose its state (the enum is private and `call_permitted` is `pub(crate)`), and `/ready` and
//! the metrics need it, so [`Breaker`] keeps an *observed* state beside it:
//!
//! - **Open** is read from recloser itself, without recording anything: a [`probe`] polls a
//!   call wrapping a future that never completes once and drops it. recloser checks its state on
//!   the first poll (answering `Rejected` when open, and moving open to half-open once the
//!   cool-down is over, exactly as a real call would) and records an outcome only when the
//!   wrapped future completes, which this one never does.
//! - **Half-open versus closed** (both let calls through) is followed from the outcomes: a call
//!   let through while the observed state is open means the cool-down is over; recloser's
//!   half-open window is [`HALF_OPEN_WINDOW`] = 1 with a threshold of ½, so the *second* outcome
//!   after that decides, every time: a failure reopens, a success closes. (recloser computes a
//!   window's rate only once it is full, and a one-slot window's rate is its last outcome, 0 or
//!   1, which always crosses ½ one way or the other.)
//!
//! The observed state is exact when calls do not overlap; with overlapping calls an outcome of a
//! call started in one state may be counted in the next, as recloser itself does. It is for
//! operators and `/ready`; the decision to reject a call is always recloser's.
//!
//! Never records a rejected call as an outcome, and never lets a client error (4xx) open it: the
//! caller passes which errors count.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use recloser::{AsyncRecloser, Recloser};

use super::{BreakerSettings, UpstreamError};

/// The state of a breaker, for `/ready` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls fail at once with [`UpstreamError::CircuitOpen`] until the cool-down is over.
    Open,
    /// The cool-down is over: calls go through, and their outcome closes or reopens it.
    HalfOpen,
}

/// recloser's half-open window: one slot, decided by the outcome after the one that fills it.
pub const HALF_OPEN_WINDOW: usize = 1;

/// One upstream's breaker.
pub(crate) struct Breaker {
    recloser: AsyncRecloser,
    /// Names the upstream in the state gauge (`upstream_circuit_breaker_state`).
    upstream: &'static str,
    /// The observed [`BreakerState`], as a `u8` (see `encode`).
    observed: AtomicU8,
    /// Outcomes recorded since the observed state became half-open.
    half_open_outcomes: AtomicUsize,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

impl Breaker {
    pub(crate) fn new(settings: &BreakerSettings, upstream: &'static str) -> Self {
        let recloser = Recloser::custom()
            .error_rate_closed(settings.failure_rate)
            .error_rate_half_open(0.5)
            .closed_len(settings.window.max(1))
            .half_open_len(HALF_OPEN_WINDOW)
            .open_wait(settings.cool_down)
            .build();
        crate::meter::breaker_state(upstream, BreakerState::Closed);
        Breaker {
            recloser: AsyncRecloser::from(recloser),
            upstream,
            observed: AtomicU8::new(CLOSED),
            half_open_outcomes: AtomicUsize::new(0),
        }
    }

    /// The current state. Moves open to half-open when the cool-down is over, as the next call
    /// would.
    pub(crate) fn state(&self) -> BreakerState {
        if !probe(&self.recloser) {
            self.observe(OPEN);
            return BreakerState::Open;
        }
        self.enter_half_open_if_open();
        decode(self.observed.load(Ordering::Relaxed))
    }

    /// Runs `attempt` unless the breaker is open; `counts` says which errors are failures.
    pub(crate) async fn call<T, Fut>(
        &self,
        counts: fn(&UpstreamError) -> bool,
        attempt: Fut,
    ) -> Result<T, UpstreamError>
    where
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let let_through = async {
            // Runs only if recloser let the call through.
            self.enter_half_open_if_open();
            attempt.await
        };
        match self.recloser.call_with(counts, let_through).await {
            Ok(value) => {
                self.record(false);
                Ok(value)
            }
            Err(recloser::Error::Rejected) => {
                self.observe(OPEN);
                Err(UpstreamError::CircuitOpen)
            }
            Err(recloser::Error::Inner(error)) => {
                self.record(counts(&error));
                Err(error)
            }
        }
    }

    /// A call was let through, or a probe passed: if the breaker was open, the cool-down is over.
    fn enter_half_open_if_open(&self) {
        if self
            .observed
            .compare_exchange(OPEN, HALF_OPEN, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.half_open_outcomes.store(0, Ordering::Relaxed);
            crate::meter::breaker_state(self.upstream, BreakerState::HalfOpen);
        }
    }

    /// Sets the observed state and exports it (the gauge is last-write-wins, like the state).
    fn observe(&self, state: u8) {
        self.observed.store(state, Ordering::Relaxed);
        crate::meter::breaker_state(self.upstream, decode(state));
    }

    /// Follows the transition recloser may just have made on this outcome.
    fn record(&self, failed: bool) {
        match self.observed.load(Ordering::Relaxed) {
            // A full window over the threshold opens it; only recloser knows the window.
            CLOSED if !probe(&self.recloser) => self.observe(OPEN),
            HALF_OPEN => {
                let outcomes = self.half_open_outcomes.fetch_add(1, Ordering::Relaxed) + 1;
                if outcomes > HALF_OPEN_WINDOW {
                    let next = if failed { OPEN } else { CLOSED };
                    let moved = self.observed.compare_exchange(
                        HALF_OPEN,
                        next,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    if moved.is_ok() {
                        crate::meter::breaker_state(self.upstream, decode(next));
                    }
                }
            }
            // Still closed; or a call started before the breaker opened, whose outcome recloser
            // ignores too.
            _ => {}
        }
    }
}

/// Whether recloser would let a call through now, without recording an outcome.
fn probe(recloser: &AsyncRecloser) -> bool {
    let call = pin!(recloser.call(std::future::pending::<Result<(), ()>>()));
    let mut context = Context::from_waker(Waker::noop());
    !matches!(
        call.poll(&mut context),
        Poll::Ready(Err(recloser::Error::Rejected))
    )
}

fn decode(state: u8) -> BreakerState {
    match state {
        OPEN => BreakerState::Open,
        HALF_OPEN => BreakerState::HalfOpen,
        _ => BreakerState::Closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const COOL_DOWN: Duration = Duration::from_millis(60);

    fn breaker(window: usize) -> Breaker {
        Breaker::new(
            &BreakerSettings {
                failure_rate: 0.5,
                window,
                cool_down: COOL_DOWN,
            },
            "test",
        )
    }

    fn counts(error: &UpstreamError) -> bool {
        error.counts_against_breaker()
    }

    async fn fail(breaker: &Breaker) -> Result<(), UpstreamError> {
        breaker
            .call(counts, async { Err(UpstreamError::Timeout) })
            .await
    }

    async fn succeed(breaker: &Breaker) -> Result<(), UpstreamError> {
        breaker.call(counts, async { Ok(()) }).await
    }

    #[tokio::test]
    async fn opens_when_the_full_window_fails_and_rejects_without_calling() {
        let breaker = breaker(4);
        // The rate is computed from the fifth outcome on, over the last four.
        for _ in 0..4 {
            assert!(matches!(fail(&breaker).await, Err(UpstreamError::Timeout)));
            assert_eq!(breaker.state(), BreakerState::Closed);
        }
        assert!(matches!(fail(&breaker).await, Err(UpstreamError::Timeout)));
        assert_eq!(breaker.state(), BreakerState::Open);

        let mut ran = false;
        let outcome = breaker
            .call(counts, async {
                ran = true;
                Ok(())
            })
            .await;
        assert!(matches!(outcome, Err(UpstreamError::CircuitOpen)));
        assert!(!ran, "an open breaker must not run the call");
    }

    #[tokio::test]
    async fn client_errors_keep_it_closed() {
        let breaker = breaker(2);
        for _ in 0..10 {
            let outcome: Result<(), _> = breaker
                .call(counts, async {
                    Err(UpstreamError::Status {
                        status: 404,
                        retry_after: None,
                    })
                })
                .await;
            assert!(outcome.is_err());
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn probing_records_nothing() {
        let breaker = breaker(2);
        fail(&breaker).await.unwrap_err();
        fail(&breaker).await.unwrap_err();
        // Probes between outcomes must not count as successes in the window.
        for _ in 0..10 {
            assert_eq!(breaker.state(), BreakerState::Closed);
        }
        fail(&breaker).await.unwrap_err();
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test]
    async fn half_opens_after_the_cool_down_then_closes_on_success() {
        let breaker = breaker(1);
        fail(&breaker).await.unwrap_err();
        fail(&breaker).await.unwrap_err();
        assert_eq!(breaker.state(), BreakerState::Open);
        // The cool-down itself is the subject: real time, kept short.
        tokio::time::sleep(COOL_DOWN + Duration::from_millis(20)).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        succeed(&breaker).await.unwrap();
        assert_eq!(breaker.state(), BreakerState::HalfOpen, "fills the window");
        succeed(&breaker).await.unwrap();
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn a_failure_while_half_open_reopens() {
        let breaker = breaker(1);
        fail(&breaker).await.unwrap_err();
        fail(&breaker).await.unwrap_err();
        tokio::time::sleep(COOL_DOWN + Duration::from_millis(20)).await;
        // No probe first: the call itself finds the cool-down over.
        succeed(&breaker).await.unwrap();
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        fail(&breaker).await.unwrap_err();
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(matches!(
            succeed(&breaker).await,
            Err(UpstreamError::CircuitOpen)
        ));
    }
}
