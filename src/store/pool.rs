//! Store stage: counted, bounded and shed waiting for a MySQL connection.
//!
//! `mysql_async`'s `get_conn` waits forever when the pool is exhausted and says neither how many
//! connections are out nor how many callers wait, so every acquisition goes through a [`Gate`]
//! that counts both (for the metrics and the shedding rule), times the wait, and for requests
//! bounds it with `DB_POOL_WAIT_MS` and refuses at once when the pool is saturated: a queue that
//! grows only turns an overload into timeouts for everyone. Never runs a query itself.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::{Conn, Pool};

use super::StoreError;

/// How a caller waits for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// The request path: shed when saturated, else wait at most `DB_POOL_WAIT_MS`.
    Request,
    /// Off-path jobs (migrations, seed, sync) and readiness: wait as long as the caller's own
    /// deadline allows. Readiness is not shed, so an overloaded instance is not also taken out
    /// of the load balancer, which would move its load onto the others.
    Patient,
}

/// The bookkeeping around one pool.
#[derive(Debug)]
pub(super) struct Gate {
    pool_max: usize,
    wait: Duration,
    max_waiting: usize,
    /// Connections handed out and not yet returned. Shared with each [`PooledConn`].
    in_use: Arc<AtomicUsize>,
    /// Callers inside `get_conn`.
    waiting: AtomicUsize,
    /// Whether this gate reports the `db_pool_*` gauges: the primary's does; a replica's would
    /// mix its pool into the primary's figures.
    metered: bool,
}

/// A pooled connection that counts itself in use until it is dropped (back to the pool).
#[derive(Debug)]
pub struct PooledConn {
    conn: Conn,
    _lease: Lease,
}

impl Gate {
    pub(super) fn new(pool_max: usize, wait: Duration, max_waiting: usize, metered: bool) -> Gate {
        if metered {
            crate::meter::db_pool_max(pool_max);
        }
        Gate {
            pool_max,
            wait,
            max_waiting,
            in_use: Arc::new(AtomicUsize::new(0)),
            waiting: AtomicUsize::new(0),
            metered,
        }
    }

    /// A connection from `pool`, admitted as `admission` says.
    pub(super) async fn acquire(
        &self,
        pool: &Pool,
        admission: Admission,
    ) -> Result<PooledConn, StoreError> {
        let waiting = Waiting::enter(&self.waiting, self.metered);
        if admission == Admission::Request && self.is_saturated(waiting.ahead) {
            drop(waiting);
            if self.metered {
                crate::meter::db_pool_shed();
            }
            return Err(StoreError::Saturated);
        }
        let started = Instant::now();
        let outcome = match admission {
            Admission::Request => tokio::time::timeout(self.wait, pool.get_conn()).await,
            Admission::Patient => Ok(pool.get_conn().await),
        };
        if self.metered {
            crate::meter::db_pool_wait(started.elapsed());
        }
        drop(waiting);
        match outcome {
            Ok(Ok(conn)) => Ok(PooledConn {
                conn,
                _lease: Lease::take(&self.in_use, self.metered),
            }),
            Ok(Err(error)) => Err(StoreError::Database(error)),
            Err(_elapsed) => {
                if self.metered {
                    crate::meter::db_pool_wait_timeout();
                }
                Err(StoreError::PoolTimeout(self.wait))
            }
        }
    }

    pub(super) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Every connection is out and `ahead` callers already wait: this one would only queue.
    fn is_saturated(&self, ahead: usize) -> bool {
        self.in_use.load(Ordering::Relaxed) >= self.pool_max && ahead >= self.max_waiting
    }
}

impl Deref for PooledConn {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

/// One caller counted as waiting; uncounted when dropped, so a caller cancelled by its deadline
/// does not stay counted.
struct Waiting<'a> {
    counter: &'a AtomicUsize,
    /// Callers that were already waiting when this one arrived.
    ahead: usize,
    metered: bool,
}

impl<'a> Waiting<'a> {
    fn enter(counter: &'a AtomicUsize, metered: bool) -> Waiting<'a> {
        let ahead = counter.fetch_add(1, Ordering::Relaxed);
        if metered {
            crate::meter::db_pool_waiting(1.0);
        }
        Waiting {
            counter,
            ahead,
            metered,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
        if self.metered {
            crate::meter::db_pool_waiting(-1.0);
        }
    }
}

/// One connection counted in use.
#[derive(Debug)]
struct Lease {
    in_use: Arc<AtomicUsize>,
    metered: bool,
}

impl Lease {
    fn take(in_use: &Arc<AtomicUsize>, metered: bool) -> Lease {
        in_use.fetch_add(1, Ordering::Relaxed);
        if metered {
            crate::meter::db_pool_in_use(1.0);
        }
        Lease {
            in_use: Arc::clone(in_use),
            metered,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.in_use.fetch_sub(1, Ordering::Relaxed);
        if self.metered {
            crate::meter::db_pool_in_use(-1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheds_only_when_every_connection_is_out_and_enough_wait() {
        let gate = Gate::new(2, Duration::from_millis(100), 3, true);
        assert!(!gate.is_saturated(10), "free connections: never shed");
        let leases = [
            Lease::take(&gate.in_use, true),
            Lease::take(&gate.in_use, true),
        ];
        assert!(!gate.is_saturated(2));
        assert!(gate.is_saturated(3));
        drop(leases);
        assert!(!gate.is_saturated(3), "returned connections free the pool");
        let strict = Gate::new(1, Duration::from_millis(100), 0, true);
        let _lease = Lease::take(&strict.in_use, true);
        assert!(
            strict.is_saturated(0),
            "max 0 waiting: shed as soon as the pool is out"
        );
    }

    #[test]
    fn a_dropped_waiter_is_no_longer_counted() {
        let counter = AtomicUsize::new(0);
        let first = Waiting::enter(&counter, true);
        let second = Waiting::enter(&counter, true);
        assert_eq!((first.ahead, second.ahead), (0, 1));
        drop(first);
        drop(second);
        assert_eq!(counter.load(Ordering::Relaxed), 0);
    }
}
