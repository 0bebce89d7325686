//! Store stage: read replicas. Which database a listing read goes to, and whether each replica
//! is fresh enough to serve one.
//!
//! Owns the replicas' pools (each behind its own gate, as the primary's), their health, the
//! round-robin rotation, the primary's heartbeat and the per-replica checks. The rule every
//! replica read keeps: **it sees every write committed on the primary more than
//! `REPLICA_MAX_LAG_MS` before the read began.** A check measures a replica's lag against the
//! primary's own clock (`replication_heartbeat`, written by [`Store::spawn_replica_monitor`]),
//! and a replica stays in the rotation only for as long as that measurement still proves the
//! rule, so a replica that stops answering leaves by itself before anyone notices it failed.
//!
//! Never writes to a replica (its account may not: `read_only`); never knows about caches: the
//! cache opens the [`PrimaryWindow`] after an invalidation, and listings then read from the
//! primary for the lag bound.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use metrics::{Counter, Gauge};
use mysql_async::prelude::Queryable;
use mysql_async::Value;
use tokio::time::{Instant, MissedTickBehavior};

use super::pool::Admission;
use super::sql::timestamp_of;
use super::{Database, Store, StoreError};
use crate::config::Secret;
use crate::domain::Timestamp;

/// `REPLICA_MAX_LAG_MS`'s default: a second of staleness at most, four heartbeats' worth.
pub const DEFAULT_MAX_LAG: Duration = Duration::from_secs(1);
/// `REPLICA_CHECK_INTERVAL_MS`'s default: also the heartbeat's period.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// Good checks in a row a replica that failed needs before it serves again, so a server that is
/// restarting (answering, failing, answering) does not flap in and out of the rotation.
pub const RECOVERY_CHECKS: u32 = 2;

/// The read replicas and how fresh they must be.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    /// `DATABASE_READ_URLS` in order: replica *n* is the *n*th. Logs, `/ready` and metrics name
    /// a replica by that index and its `host:port`, never by its URL (which holds a password).
    pub urls: Vec<Secret>,
    /// `REPLICA_MAX_LAG_MS`: the staleness bound of a replica read.
    pub max_lag: Duration,
    /// `REPLICA_CHECK_INTERVAL_MS`: how often each replica is checked and the heartbeat written.
    /// Below `max_lag`, so a healthy replica is re-proven fresh before its proof runs out.
    pub check_interval: Duration,
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        ReplicaSettings {
            urls: Vec::new(),
            max_lag: DEFAULT_MAX_LAG,
            check_interval: DEFAULT_CHECK_INTERVAL,
        }
    }
}

/// A replica's state as last seen; only `Healthy` replicas serve reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    /// Not measured yet, or the primary could not be asked for its time (then no lag can be
    /// proven, so the replica does not serve).
    Unknown,
    /// Answering, and behind the primary by at most the bound.
    Healthy,
    /// Answering, but further behind than the bound.
    Lagging,
    /// A connection or query failed or missed its deadline.
    Down,
}

/// What one check of a replica found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The replica answered; it is this far behind the primary's clock.
    Lag(Duration),
    /// The replica failed (connection, query, deadline).
    Failed,
    /// The replica answered but the primary did not, so its lag is unknown.
    Unmeasured,
}

/// The health state machine of one replica (pure: the monitor and the request path feed it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub state: ReplicaState,
    /// Good checks in a row while `Down`.
    recovering: u32,
}

/// One replica as `/ready` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaReport {
    pub index: usize,
    /// `host:port` only.
    pub address: String,
    pub state: ReplicaState,
    /// The last lag measured, if any.
    pub lag: Option<Duration>,
}

/// Listing reads served, by database (this store only; `/metrics` has the process's).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadCounts {
    pub primary: u64,
    /// By replica index.
    pub replicas: Vec<u64>,
}

/// After a catalogue change, this instance reads listings from the primary for the lag bound.
///
/// Why: a webhook's invalidation moves the cache to a new generation, and the first listing
/// under it is cached for seconds. Read from a replica that has not yet applied the change, it
/// would cache the old rows under the new generation. Opened *before* the generation moves, the
/// window covers every read that can see the new generation until `max_lag` has passed; from
/// then on any replica in the rotation has the change (the rotation's rule), because the change
/// was committed before the invalidation.
#[derive(Debug)]
pub struct PrimaryWindow {
    /// The origin of every instant the rotation stores as nanoseconds.
    epoch: Instant,
    /// Until when (nanoseconds since `epoch`) reads go to the primary.
    until: AtomicU64,
    length: Duration,
}

/// The replicas, their order and the window: what [`Rotation::choose`] reads per request.
pub(super) struct Rotation {
    replicas: Vec<Replica>,
    /// Round robin: each choice starts one replica further.
    next: AtomicUsize,
    window: Arc<PrimaryWindow>,
    max_lag: Duration,
    check_interval: Duration,
    primary_reads: AtomicU64,
    primary_reads_metric: Counter,
}

/// One replica: its database, its health, and what the hot path reads of it.
pub(super) struct Replica {
    index: usize,
    address: String,
    pub(super) database: Database,
    /// Written by the monitor and by failed reads; never on a successful request.
    health: Mutex<Health>,
    /// `health.state` for `/ready`, readable without the lock.
    state: AtomicU8,
    /// Until when (nanoseconds since the epoch) the last check proves the staleness rule; 0 when
    /// the replica is not `Healthy`. The only thing [`Rotation::choose`] reads of a replica.
    fresh_until: AtomicU64,
    /// The last lag measured, in microseconds; `u64::MAX` before the first.
    lag_micros: AtomicU64,
    reads: AtomicU64,
    reads_metric: Counter,
    fallbacks_metric: Counter,
    healthy_metric: Gauge,
    lag_metric: Gauge,
}

impl ReplicaState {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Unknown => "unknown",
            ReplicaState::Healthy => "healthy",
            ReplicaState::Lagging => "lagging",
            ReplicaState::Down => "down",
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            ReplicaState::Unknown => 0,
            ReplicaState::Healthy => 1,
            ReplicaState::Lagging => 2,
            ReplicaState::Down => 3,
        }
    }

    fn from_u8(value: u8) -> ReplicaState {
        match value {
            1 => ReplicaState::Healthy,
            2 => ReplicaState::Lagging,
            3 => ReplicaState::Down,
            _ => ReplicaState::Unknown,
        }
    }
}

impl Health {
    /// A replica before its first check: not serving.
    pub const NEW: Health = Health {
        state: ReplicaState::Unknown,
        recovering: 0,
    };

    /// The state after `check`: a failure takes the replica out at once, a lag over `max_lag`
    /// too; a good check brings it back at once, except after a failure, which needs
    /// [`RECOVERY_CHECKS`] good checks in a row.
    #[must_use]
    pub fn observe(self, check: Check, max_lag: Duration) -> Health {
        let state = |state| Health {
            state,
            recovering: 0,
        };
        match check {
            Check::Failed => state(ReplicaState::Down),
            Check::Unmeasured if self.state == ReplicaState::Down => self,
            Check::Unmeasured => state(ReplicaState::Unknown),
            Check::Lag(lag) if lag > max_lag => state(ReplicaState::Lagging),
            Check::Lag(_) if self.state == ReplicaState::Down => {
                if self.recovering + 1 >= RECOVERY_CHECKS {
                    state(ReplicaState::Healthy)
                } else {
                    Health {
                        state: ReplicaState::Down,
                        recovering: self.recovering + 1,
                    }
                }
            }
            Check::Lag(_) => state(ReplicaState::Healthy),
        }
    }
}

impl PrimaryWindow {
    fn new(length: Duration) -> PrimaryWindow {
        PrimaryWindow {
            epoch: Instant::now(),
            until: AtomicU64::new(0),
            length,
        }
    }

    /// Reads go to the primary from now until the lag bound has passed.
    pub fn open(&self) {
        let until = self.now() + nanos(self.length);
        self.until.fetch_max(until, Ordering::AcqRel);
    }

    /// Whether reads must go to the primary right now.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.now() < self.until.load(Ordering::Acquire)
    }

    fn now(&self) -> u64 {
        nanos(self.epoch.elapsed())
    }
}

impl Rotation {
    pub(super) fn new(replicas: Vec<Replica>, settings: &ReplicaSettings) -> Rotation {
        Rotation {
            replicas,
            next: AtomicUsize::new(0),
            window: Arc::new(PrimaryWindow::new(settings.max_lag)),
            max_lag: settings.max_lag,
            check_interval: settings.check_interval,
            primary_reads: AtomicU64::new(0),
            primary_reads_metric: crate::meter::db_reads("primary".into()),
        }
    }

    /// The replica for the next listing read, or `None` for the primary: no replica is proven
    /// fresh right now, or the window after an invalidation is open. A few atomic loads; no
    /// lock, no allocation.
    pub(super) fn choose(&self) -> Option<&Replica> {
        if self.replicas.is_empty() {
            return None;
        }
        let now = self.window.now();
        if now < self.window.until.load(Ordering::Acquire) {
            return None;
        }
        let count = self.replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(|offset| &self.replicas[start.wrapping_add(offset) % count])
            .find(|replica| now < replica.fresh_until.load(Ordering::Acquire))
    }

    pub(super) fn window(&self) -> Option<Arc<PrimaryWindow>> {
        (!self.replicas.is_empty()).then(|| Arc::clone(&self.window))
    }

    pub(super) fn served_by_primary(&self) {
        self.primary_reads.fetch_add(1, Ordering::Relaxed);
        self.primary_reads_metric.increment(1);
    }

    /// A read on `replica` failed: out of the rotation at once (the monitor brings it back).
    pub(super) fn read_failed(&self, replica: &Replica, eject: bool) {
        replica.fallbacks_metric.increment(1);
        if eject {
            self.record(replica, Check::Failed, 0);
        }
    }

    /// Applies a check that began at `started` (nanoseconds since the epoch). A lag `L` measured
    /// then proves the replica held every write committed before `started - L`, so a read
    /// beginning before `started + max_lag - L` keeps the rule.
    fn record(&self, replica: &Replica, check: Check, started: u64) {
        let mut health = replica
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = health.state;
        *health = health.observe(check, self.max_lag);
        let after = health.state;
        let fresh_until = match check {
            Check::Lag(lag) if after == ReplicaState::Healthy => {
                started + nanos(self.max_lag.saturating_sub(lag))
            }
            _ => 0,
        };
        replica.fresh_until.store(fresh_until, Ordering::Release);
        replica.state.store(after.to_u8(), Ordering::Relaxed);
        drop(health);
        if let Check::Lag(lag) = check {
            replica.lag_micros.store(
                u64::try_from(lag.as_micros()).unwrap_or(u64::MAX - 1),
                Ordering::Relaxed,
            );
            replica.lag_metric.set(lag.as_secs_f64());
        }
        replica
            .healthy_metric
            .set(if after == ReplicaState::Healthy {
                1.0
            } else {
                0.0
            });
        if before != after {
            let (index, address) = (replica.index, replica.address.as_str());
            match after {
                ReplicaState::Healthy => {
                    tracing::info!(replica = index, address, "replica joined the rotation");
                }
                ReplicaState::Unknown if before == ReplicaState::Healthy => tracing::warn!(
                    replica = index,
                    address,
                    "replica left the rotation: the primary did not answer, so its lag is unknown"
                ),
                ReplicaState::Unknown => {}
                state if before == ReplicaState::Healthy => tracing::warn!(
                    replica = index,
                    address,
                    state = state.as_str(),
                    ?check,
                    "replica left the rotation"
                ),
                state => tracing::info!(
                    replica = index,
                    address,
                    state = state.as_str(),
                    ?check,
                    "replica not in the rotation"
                ),
            }
        }
    }

    pub(super) fn reports(&self) -> Vec<ReplicaReport> {
        self.replicas
            .iter()
            .map(|replica| {
                let lag = replica.lag_micros.load(Ordering::Relaxed);
                ReplicaReport {
                    index: replica.index,
                    address: replica.address.clone(),
                    state: ReplicaState::from_u8(replica.state.load(Ordering::Relaxed)),
                    lag: (lag != u64::MAX).then(|| Duration::from_micros(lag)),
                }
            })
            .collect()
    }

    pub(super) fn read_counts(&self) -> ReadCounts {
        ReadCounts {
            primary: self.primary_reads.load(Ordering::Relaxed),
            replicas: self
                .replicas
                .iter()
                .map(|replica| replica.reads.load(Ordering::Relaxed))
                .collect(),
        }
    }

    pub(super) fn replicas(&self) -> &[Replica] {
        &self.replicas
    }
}

impl Replica {
    pub(super) fn new(index: usize, address: String, database: Database) -> Replica {
        let (healthy_metric, lag_metric) = crate::meter::db_replica_gauges(index);
        healthy_metric.set(0.0);
        Replica {
            index,
            address,
            database,
            health: Mutex::new(Health::NEW),
            state: AtomicU8::new(ReplicaState::Unknown.to_u8()),
            fresh_until: AtomicU64::new(0),
            lag_micros: AtomicU64::new(u64::MAX),
            reads: AtomicU64::new(0),
            reads_metric: crate::meter::db_reads(format!("replica-{index}")),
            fallbacks_metric: crate::meter::db_replica_fallbacks(index),
            healthy_metric,
            lag_metric,
        }
    }

    pub(super) fn served(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.reads_metric.increment(1);
    }

    pub(super) fn index(&self) -> usize {
        self.index
    }
}

impl Store {
    /// Starts the primary's heartbeat and one check loop per replica (nothing without replicas).
    /// They stop when the store is dropped.
    pub fn spawn_replica_monitor(self: &Arc<Self>) {
        if self.rotation.replicas.is_empty() {
            return;
        }
        let interval = self.rotation.check_interval;
        let store = Arc::downgrade(self);
        tokio::spawn(every(interval, store.clone(), |store| async move {
            store.write_heartbeat().await;
        }));
        for index in 0..self.rotation.replicas.len() {
            tokio::spawn(every(interval, store.clone(), move |store| async move {
                store.check_replica(index).await;
            }));
        }
    }

    /// Moves the primary's heartbeat to its current time. Any instance with replicas writes it;
    /// a failure only delays the replicas' next proof of freshness.
    async fn write_heartbeat(&self) {
        let outcome = self
            .bounded(async {
                let mut conn = self.connection().await?;
                conn.query_drop(
                    "UPDATE replication_heartbeat SET beat_at = UTC_TIMESTAMP(6) WHERE id = 1",
                )
                .await
                .map_err(StoreError::from)
            })
            .await;
        if let Err(error) = outcome {
            tracing::debug!(%error, "replication heartbeat not written");
        }
    }

    /// Reads the replica's heartbeat, then the primary's clock, within the lag bound: a check
    /// slower than that proves nothing.
    async fn check_replica(&self, index: usize) {
        let Some(replica) = self.rotation.replicas.get(index) else {
            return;
        };
        let started = self.rotation.window.now();
        let deadline = self.rotation.max_lag;
        let check = tokio::time::timeout(deadline, async {
            let Ok(Some(beat)) = read_time(
                &replica.database,
                "SELECT beat_at FROM replication_heartbeat WHERE id = 1",
            )
            .await
            .inspect_err(|error| {
                tracing::debug!(replica = index, %error, "replica check failed");
            }) else {
                return Check::Failed;
            };
            match read_time(&self.primary, "SELECT UTC_TIMESTAMP(6)").await {
                Ok(Some(now)) => Check::Lag(lag_between(beat, now)),
                _ => Check::Unmeasured,
            }
        })
        .await
        .unwrap_or(Check::Failed);
        self.rotation.record(replica, check, started);
    }
}

/// Runs `work` on the store every `interval` until the store is gone.
async fn every<F, Fut>(interval: Duration, store: Weak<Store>, work: F)
where
    F: Fn(Arc<Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(store) = store.upgrade() else { return };
        work(store).await;
    }
}

/// One `DATETIME(6)` from `database`; `None` when the row is missing (not migrated or not yet
/// replicated).
async fn read_time(database: &Database, sql: &str) -> Result<Option<Timestamp>, StoreError> {
    let mut conn = database.acquire(Admission::Patient).await?;
    // The binary protocol, so the value arrives as a DATETIME, not as text.
    let value: Option<Value> = conn.exec_first(sql, ()).await?;
    Ok(value.as_ref().and_then(timestamp_of))
}

/// How far `beat` (a replica's copy of the heartbeat) is behind `now` (the primary's clock);
/// never negative.
fn lag_between(beat: Timestamp, now: Timestamp) -> Duration {
    Duration::from_micros(u64::try_from(now.0.saturating_sub(beat.0)).unwrap_or(0))
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_LAG: Duration = Duration::from_secs(1);

    fn run(checks: &[Check]) -> Vec<ReplicaState> {
        let mut health = Health::NEW;
        checks
            .iter()
            .map(|check| {
                health = health.observe(*check, MAX_LAG);
                health.state
            })
            .collect()
    }

    #[test]
    fn health_follows_the_checks() {
        use Check::{Failed, Lag, Unmeasured};
        use ReplicaState::{Down, Healthy, Lagging, Unknown};
        let ms = Duration::from_millis;
        let cases: [(&[Check], &[ReplicaState]); 7] = [
            (&[Lag(ms(10))], &[Healthy]),
            (&[Lag(ms(1_000)), Lag(ms(1_001))], &[Healthy, Lagging]),
            (&[Lag(ms(5_000)), Lag(ms(3))], &[Lagging, Healthy]),
            (&[Lag(ms(1)), Failed], &[Healthy, Down]),
            (
                &[Failed, Lag(ms(1)), Lag(ms(1)), Lag(ms(1))],
                &[Down, Down, Healthy, Healthy],
            ),
            (
                &[Failed, Lag(ms(1)), Failed, Lag(ms(1)), Lag(ms(9_999))],
                &[Down, Down, Down, Down, Lagging],
            ),
            (
                &[Lag(ms(1)), Unmeasured, Failed, Unmeasured, Lag(ms(1))],
                &[Healthy, Unknown, Down, Down, Down],
            ),
        ];
        for (checks, expected) in cases {
            assert_eq!(run(checks), expected, "{checks:?}");
        }
    }

    #[test]
    fn lag_is_measured_on_the_primarys_clock_and_never_negative() {
        assert_eq!(
            lag_between(Timestamp(1_000_000), Timestamp(1_250_000)),
            Duration::from_millis(250)
        );
        assert_eq!(lag_between(Timestamp(2), Timestamp(1)), Duration::ZERO);
    }

    fn settings() -> ReplicaSettings {
        ReplicaSettings {
            urls: Vec::new(),
            max_lag: MAX_LAG,
            check_interval: Duration::from_millis(250),
        }
    }

    /// Replicas whose pools point nowhere: only the rotation is exercised, no connection opens.
    fn rotation(count: usize) -> Rotation {
        let replicas = (0..count)
            .map(|index| {
                let database = Database::new(
                    "mysql://nobody@127.0.0.1:9/none",
                    &crate::store::StoreSettings {
                        pool_min: 0,
                        pool_max: 1,
                        query_timeout: Duration::from_secs(1),
                        pool_wait: Duration::from_secs(1),
                        pool_max_waiting: 1,
                        handler_reads: true,
                    },
                    false,
                )
                .unwrap();
                Replica::new(index, format!("127.0.0.1:{index}"), database)
            })
            .collect();
        Rotation::new(replicas, &settings())
    }

    fn chosen(rotation: &Rotation, times: usize) -> Vec<Option<usize>> {
        (0..times)
            .map(|_| rotation.choose().map(Replica::index))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn reads_rotate_over_fresh_replicas_only() {
        let rotation = rotation(3);
        assert_eq!(chosen(&rotation, 2), [None, None], "unchecked: primary");
        let now = rotation.window.now();
        for replica in rotation.replicas() {
            rotation.record(replica, Check::Lag(Duration::from_millis(10)), now);
        }
        assert_eq!(chosen(&rotation, 4), [Some(2), Some(0), Some(1), Some(2)]);
        rotation.read_failed(&rotation.replicas()[1], true);
        assert_eq!(chosen(&rotation, 4), [Some(0), Some(2), Some(2), Some(0)]);
        rotation.read_failed(&rotation.replicas()[0], false);
        assert_eq!(
            chosen(&rotation, 1),
            [Some(2)],
            "a read shed by a busy pool does not take the replica out"
        );
        for replica in rotation.replicas() {
            rotation.record(replica, Check::Lag(Duration::from_secs(2)), now);
        }
        assert_eq!(chosen(&rotation, 3), [None, None, None], "all lagging");
        assert_eq!(rotation.read_counts().replicas, [0, 0, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_proves_freshness_for_the_bound_minus_the_lag() {
        let rotation = rotation(1);
        let replica = &rotation.replicas()[0];
        let started = rotation.window.now();
        rotation.record(replica, Check::Lag(Duration::from_millis(300)), started);
        assert_eq!(chosen(&rotation, 1), [Some(0)]);
        tokio::time::advance(Duration::from_millis(699)).await;
        assert_eq!(
            chosen(&rotation, 1),
            [Some(0)],
            "still within 1000 - 300 ms"
        );
        tokio::time::advance(Duration::from_millis(2)).await;
        assert_eq!(
            chosen(&rotation, 1),
            [None],
            "no newer check: out of the rotation by itself"
        );
        assert_eq!(
            rotation.reports()[0].state,
            ReplicaState::Healthy,
            "healthy as last seen"
        );
        rotation.record(replica, Check::Lag(Duration::ZERO), rotation.window.now());
        assert_eq!(chosen(&rotation, 1), [Some(0)]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_after_an_invalidation_sends_reads_to_the_primary() {
        let rotation = rotation(1);
        rotation.record(
            &rotation.replicas()[0],
            Check::Lag(Duration::ZERO),
            rotation.window.now(),
        );
        assert_eq!(chosen(&rotation, 1), [Some(0)]);
        rotation.window().unwrap().open();
        assert!(rotation.window.is_open());
        assert_eq!(chosen(&rotation, 1), [None]);
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(chosen(&rotation, 1), [None], "open for the whole bound");
        rotation.record(
            &rotation.replicas()[0],
            Check::Lag(Duration::ZERO),
            rotation.window.now(),
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(chosen(&rotation, 1), [Some(0)], "closed after the bound");
    }

    #[test]
    fn without_replicas_there_is_no_window() {
        assert!(rotation(0).window().is_none());
        assert_eq!(chosen(&rotation(0), 1), [None]);
    }
}
