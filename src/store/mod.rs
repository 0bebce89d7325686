//! Store stage: the only module that talks to MySQL.
//!
//! Owns the connection pool, the listing statements, migrations and the seed. Every call is
//! bounded by the query deadline, so a sick database costs a request at most that long; a
//! request's wait for a connection is bounded tighter still, and refused at once when the pool
//! is saturated (`pool.rs`).

pub mod events;
pub mod migrate;
pub mod pool;
pub mod seed;
pub mod sql;
pub mod sync;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, Row, Value};

use crate::domain::{ListingQuery, Page, Price, Product, Timestamp};
use pool::{Admission, Gate, PooledConn};
use sql::Statements;

/// Settings of the pool and its deadline.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub pool_min: usize,
    pub pool_max: usize,
    /// The most a listing query may take, connection wait included.
    pub query_timeout: Duration,
    /// The most a request waits for a free connection (within `query_timeout`): past it, 503.
    pub pool_wait: Duration,
    /// With every connection out, a request arriving when this many already wait is refused at
    /// once (503) instead of joining the queue.
    pub pool_max_waiting: usize,
}

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database did not answer within {0:?}")]
    Timeout(Duration),
    #[error("no database connection was free within {0:?}")]
    PoolTimeout(Duration),
    #[error("the connection pool is saturated; the request was shed")]
    Saturated,
    #[error("database error: {0}")]
    Database(#[from] mysql_async::Error),
    #[error("unexpected column value in `{column}`: {value:?}")]
    Decode { column: &'static str, value: Value },
    #[error("invalid DATABASE_URL: {0}")]
    Url(#[from] mysql_async::UrlError),
}

/// The MySQL side of the service.
pub struct Store {
    pool: Pool,
    /// Counts, bounds and sheds the waits for `pool`'s connections.
    gate: Gate,
    statements: Statements,
    query_timeout: Duration,
    /// Listing queries sent to MySQL; tests read it to prove coalescing.
    listing_queries: AtomicU64,
    /// Pages answered by each [`PlanTaken`]; tests read it to prove which plan ran.
    plans_taken: [AtomicU64; PlanTaken::ALL.len()],
}

/// Which statement answered a page whose shape has two plans (see [`sql::Plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanTaken {
    /// A search page from the bounded walk of the sort index.
    SearchWindow,
    /// A search page from FULLTEXT, after a walk that fell short.
    SearchFulltext,
    /// A small price band read whole from the price index and sorted by date.
    BandRange,
    /// A large price band walked in date order on the index alone.
    BandWalk,
}

impl PlanTaken {
    pub const ALL: [PlanTaken; 4] = [
        PlanTaken::SearchWindow,
        PlanTaken::SearchFulltext,
        PlanTaken::BandRange,
        PlanTaken::BandWalk,
    ];

    /// The `plan` label of `listing_plans_total`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            PlanTaken::SearchWindow => "search_window",
            PlanTaken::SearchFulltext => "search_fulltext",
            PlanTaken::BandRange => "band_range",
            PlanTaken::BandWalk => "band_walk",
        }
    }
}

impl Store {
    /// Builds the pool (connections open lazily; [`Store::warm`] opens the minimum).
    pub fn new(database_url: &str, settings: &StoreSettings) -> Result<Store, StoreError> {
        let constraints = PoolConstraints::new(settings.pool_min, settings.pool_max.max(1))
            .unwrap_or_else(|| {
                PoolConstraints::new(1, settings.pool_max.max(1)).expect("1 <= max")
            });
        // No reset on return: the service keeps no session state, and the reset costs a round
        // trip per request and clears the prepared-statement cache.
        // An inactive-connection TTL above zero keeps up to `pool_max` idle connections: with
        // mysql_async's default of zero, every connection above `pool_min` is closed as soon as
        // it is returned, so a busy pool reconnects on most requests (seen as ~18 % of the
        // database path in flamegraphs/database.svg before this setting).
        let pool_opts = PoolOpts::default()
            .with_constraints(constraints)
            .with_inactive_connection_ttl(Duration::from_secs(60))
            .with_reset_connection(false);
        let opts = OptsBuilder::from_opts(Opts::from_url(database_url)?)
            .pool_opts(pool_opts)
            .stmt_cache_size(256)
            .prefer_socket(false)
            .tcp_nodelay(true);
        Ok(Store {
            pool: Pool::new(opts),
            gate: Gate::new(
                settings.pool_max.max(1),
                settings.pool_wait,
                settings.pool_max_waiting,
            ),
            statements: Statements::build(),
            query_timeout: settings.query_timeout,
            listing_queries: AtomicU64::new(0),
            plans_taken: Default::default(),
        })
    }

    /// Opens `count` connections so the first requests do not pay for the handshakes.
    pub async fn warm(&self, count: usize) -> Result<(), StoreError> {
        let mut connections = Vec::with_capacity(count);
        for _ in 0..count.max(1) {
            connections.push(self.connection().await?);
        }
        Ok(())
    }

    /// One page of a listing: at most `take` rows and whether more follow.
    ///
    /// A search first walks the sort index over a bounded window (see [`sql::Plan`]); only when
    /// that window holds fewer than `take + 1` matches does FULLTEXT gather them all. A price
    /// band in date order counts the band first and reads it whole only when it is small
    /// (see [`sql::Band`]).
    pub async fn list(&self, query: &ListingQuery) -> Result<Page, StoreError> {
        self.listing_queries.fetch_add(1, Ordering::Relaxed);
        let plan = self.statements.plan(query);
        let rows: Vec<Row> = self
            .bounded(async {
                let mut conn = self.request_connection().await?;
                self.run_plan(&mut conn, &plan, query.take).await
            })
            .await?;
        let take = usize::from(query.take);
        let has_more = rows.len() > take;
        let products = rows
            .into_iter()
            .take(take)
            .map(decode_product)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page { products, has_more })
    }

    /// The statements of `plan`, in its order, on one connection.
    async fn run_plan(
        &self,
        conn: &mut PooledConn,
        plan: &sql::Plan<'_>,
        take: u8,
    ) -> Result<Vec<Row>, StoreError> {
        let wanted = usize::from(take) + 1;
        if let Some((sql, params)) = &plan.window {
            let rows = self.exec_retrying(conn, sql, params).await?;
            if rows.len() >= wanted {
                self.took(PlanTaken::SearchWindow);
                return Ok(rows);
            }
            self.took(PlanTaken::SearchFulltext);
        }
        if let Some(band) = &plan.band {
            let (sql, params) = &band.probe;
            let counted = self.exec_retrying(conn, sql, params).await?;
            let band_rows = counted
                .into_iter()
                .next()
                .and_then(|mut row| row.take::<u64, _>(0))
                .unwrap_or(u64::MAX);
            if band_rows <= sql::band_range_max(take) {
                self.took(PlanTaken::BandRange);
                let (sql, params) = &band.range;
                return self.exec_retrying(conn, sql, params).await;
            }
            self.took(PlanTaken::BandWalk);
        }
        let (sql, params) = &plan.exact;
        self.exec_retrying(conn, sql, params).await
    }

    /// Runs a read; a pooled connection can be dead after a database restart, and reads are
    /// idempotent, so one retry on a fresh connection (replacing `conn`) hides the restart.
    async fn exec_retrying(
        &self,
        conn: &mut PooledConn,
        sql: &str,
        params: &[mysql_async::Value],
    ) -> Result<Vec<Row>, StoreError> {
        match conn.exec(sql, params.to_vec()).await {
            Ok(rows) => Ok(rows),
            Err(error) if is_connection_error(&error) => {
                *conn = self.request_connection().await?;
                Ok(conn.exec(sql, params.to_vec()).await?)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// `SELECT 1` within the deadline, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.gate.acquire(&self.pool, Admission::Patient).await?;
            Ok::<_, StoreError>(conn.ping().await?)
        })
        .await
    }

    /// Callers waiting for a pooled connection right now (also exported as `db_pool_waiting`).
    #[must_use]
    pub fn pool_waiting(&self) -> usize {
        self.gate.waiting()
    }

    /// How many listing queries this store has sent.
    #[must_use]
    pub fn listing_queries(&self) -> u64 {
        self.listing_queries.load(Ordering::Relaxed)
    }

    /// How many pages this store answered with `plan`.
    #[must_use]
    pub fn pages_by_plan(&self, plan: PlanTaken) -> u64 {
        self.plans_taken[plan as usize].load(Ordering::Relaxed)
    }

    fn took(&self, plan: PlanTaken) {
        self.plans_taken[plan as usize].fetch_add(1, Ordering::Relaxed);
        crate::meter::listing_plan(plan.as_str());
    }

    /// A connection within the deadline, for the off-path jobs (migrate, seed, sync).
    pub async fn connection(&self) -> Result<PooledConn, StoreError> {
        self.bounded(self.gate.acquire(&self.pool, Admission::Patient))
            .await
    }

    /// A connection for a request: refused at once when the pool is saturated, and waited for
    /// at most `DB_POOL_WAIT_MS`, so overload answers a fast 503 instead of a growing queue.
    pub async fn request_connection(&self) -> Result<PooledConn, StoreError> {
        self.gate.acquire(&self.pool, Admission::Request).await
    }

    /// Closes every connection; call once on shutdown.
    pub async fn disconnect(self) {
        if let Err(error) = self.pool.disconnect().await {
            tracing::warn!(%error, "closing the MySQL pool");
        }
    }

    async fn bounded<T, E: Into<StoreError>>(
        &self,
        work: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.query_timeout, work).await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(StoreError::Timeout(self.query_timeout)),
        }
    }
}

fn is_connection_error(error: &mysql_async::Error) -> bool {
    matches!(
        error,
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_)
    )
}

fn decode_product(mut row: Row) -> Result<Product, StoreError> {
    let mut column = |index: usize| row.take::<Value, _>(index).unwrap_or(Value::NULL);
    Ok(Product {
        id: decode_id(column(0))?,
        name: decode_text("name", column(1))?,
        description: decode_text("description", column(2))?,
        price: decode_price(column(3))?,
        category: decode_text("category", column(4))?,
        created_at: decode_timestamp("created_at", column(5))?,
        updated_at: decode_timestamp("updated_at", column(6))?,
    })
}

fn decode_id(value: Value) -> Result<u64, StoreError> {
    match value {
        Value::UInt(id) => Ok(id),
        Value::Int(id) if id >= 0 => Ok(id.unsigned_abs()),
        value => Err(StoreError::Decode {
            column: "id",
            value,
        }),
    }
}

fn decode_text(column: &'static str, value: Value) -> Result<String, StoreError> {
    match value {
        Value::Bytes(bytes) => String::from_utf8(bytes).map_err(|error| StoreError::Decode {
            column,
            value: Value::Bytes(error.into_bytes()),
        }),
        Value::NULL => Ok(String::new()),
        value => Err(StoreError::Decode { column, value }),
    }
}

fn decode_price(value: Value) -> Result<Price, StoreError> {
    match value {
        Value::Bytes(ref text) => Price::parse(text).map_err(|_| StoreError::Decode {
            column: "price",
            value,
        }),
        value => Err(StoreError::Decode {
            column: "price",
            value,
        }),
    }
}

fn decode_timestamp(column: &'static str, value: Value) -> Result<Timestamp, StoreError> {
    sql::timestamp_of(&value).ok_or(StoreError::Decode { column, value })
}
