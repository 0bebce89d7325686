//! Store stage: the only module that talks to MySQL.
//!
//! Owns the connection pool, the listing statements, migrations and the seed. Every call is
//! bounded by the query deadline, so a sick database costs a request at most that long; a
//! request's wait for a connection is bounded tighter still, and refused at once when the pool
//! is saturated (`pool.rs`).
//!
//! With read replicas (`replica.rs`) listing reads go to a replica proven fresh enough; every
//! write, the webhook and sync transactions, migrations, the seed and readiness use the primary.

pub mod events;
pub mod handler_read;
pub mod migrate;
pub mod pool;
pub mod replica;
pub mod seed;
pub mod signatures;
pub mod sql;
pub mod sync;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, Row, Value};

use crate::domain::{ListingQuery, Page, Position, Price, Product, Sort, Timestamp};
use handler_read::{HandlerRead, HandlerStatements};
use pool::{Admission, Gate, PooledConn};
pub use replica::{PrimaryWindow, ReadCounts, ReplicaReport, ReplicaSettings, ReplicaState};
use replica::{Replica, Rotation};
use sql::{Plan, Statements};

/// How long a search whose window came up short goes straight to FULLTEXT. Words do not turn
/// common in a minute; a wrong guess (a common word whose window was short at one position)
/// costs one FULLTEXT gather per page for at most this long.
pub const SPARSE_SEARCH_TTL: Duration = Duration::from_secs(60);
/// At most this many such searches are remembered (~100 bytes each).
const SPARSE_SEARCHES_KEPT: u64 = 10_000;

/// The filters of a search: what decides how dense its matches are along an order (the words,
/// the category and the price bounds; not the sort or the position).
fn sparse_search_key(query: &ListingQuery) -> String {
    let filters = &query.filters;
    search_key_of(
        filters,
        filters.category.as_deref(),
        filters.min_price,
        filters.max_price,
    )
}

/// For a search with a category or price bound: the key of the same words without them.
///
/// Words that came up short with no filter also go to FULLTEXT under any filter: FULLTEXT
/// gathers every match of the words before filtering, so it costs the same with or without a
/// category, and that cost was judged worth paying when the unfiltered search came up short.
/// Without this, each (words, category) pair of a rare word paid a whole window walk before it
/// was remembered: 7 rare words × 24 categories made "rare word + category" often the slowest shape of
/// `loadtest uncached-search` (perf/RESULTS.md).
fn unfiltered_search_key(query: &ListingQuery) -> Option<String> {
    let filters = &query.filters;
    let filtered =
        filters.category.is_some() || filters.min_price.is_some() || filters.max_price.is_some();
    filtered.then(|| search_key_of(filters, None, None, None))
}

fn search_key_of(
    filters: &crate::domain::Filters,
    category: Option<&str>,
    min_price: Option<Price>,
    max_price: Option<Price>,
) -> String {
    let words = filters
        .search
        .as_ref()
        .map(crate::domain::SearchTerms::boolean_mode_expression)
        .unwrap_or_default();
    let price = |bound: Option<Price>| bound.map(|price| price.0.to_string()).unwrap_or_default();
    format!(
        "{}\n{words}\n{}\n{}",
        category.unwrap_or(""),
        price(min_price),
        price(max_price)
    )
}

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
    /// Whether plain pages are read with `HANDLER` first (`handler_read.rs`).
    pub handler_reads: bool,
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
    /// Where every write goes, and every read that must see one.
    primary: Database,
    /// The read replicas (none by default) and which of them may serve a listing now.
    rotation: Rotation,
    statements: Statements,
    handler_statements: HandlerStatements,
    query_timeout: Duration,
    /// The most a listing may spend on a replica before it is retried on the primary: half the
    /// query deadline, so the retry still has the other half.
    replica_timeout: Duration,
    /// Listing queries sent to MySQL; tests read it to prove coalescing.
    listing_queries: AtomicU64,
    /// Pages answered by each [`PlanTaken`]; tests read it to prove which plan ran.
    plans_taken: [AtomicU64; PlanTaken::ALL.len()],
    /// Searches (words, category, price bounds) whose window walk came up short: rare words,
    /// answered by FULLTEXT directly for [`SPARSE_SEARCH_TTL`].
    sparse_searches: moka::future::Cache<String, ()>,
}

/// What a search window's walk found.
enum Walked {
    /// The page: `take + 1` matches, or the matches up to the end of the order.
    Page(Vec<Row>),
    /// The page, from the window and one continuation of it.
    Continued(Vec<Row>),
    /// Fewer than `take + 1` matches in the whole window: FULLTEXT answers.
    ShortOfAPage,
    /// Not walked: this search came up short recently.
    KnownSparse,
}

/// Which statement answered a page whose shape has two plans (see [`sql::Plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanTaken {
    /// A plain page read with `HANDLER` (see `handler_read.rs`).
    HandlerRead,
    /// A plain page the `HANDLER` read could not vouch for (a category's end, a category
    /// differing in bytes only) or failed to read, answered by the `SELECT`.
    HandlerUnsure,
    /// A search page from the bounded walk of the sort index.
    SearchWindow,
    /// A search page from the walk and one continuation sized by the matches it found.
    SearchContinued,
    /// A search page from FULLTEXT, after a walk that fell short.
    SearchFulltext,
    /// A search page from FULLTEXT without a walk: the same filters came up short
    /// within the last [`SPARSE_SEARCH_TTL`].
    SearchSparse,
    /// A small price band read whole from the price index and sorted by date.
    BandRange,
    /// A large price band walked in date order on the index alone.
    BandWalk,
}

impl PlanTaken {
    pub const ALL: [PlanTaken; 8] = [
        PlanTaken::HandlerRead,
        PlanTaken::HandlerUnsure,
        PlanTaken::SearchWindow,
        PlanTaken::SearchContinued,
        PlanTaken::SearchFulltext,
        PlanTaken::SearchSparse,
        PlanTaken::BandRange,
        PlanTaken::BandWalk,
    ];

    /// The `plan` label of `listing_plans_total`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            PlanTaken::HandlerRead => "handler_read",
            PlanTaken::HandlerUnsure => "handler_unsure",
            PlanTaken::SearchWindow => "search_window",
            PlanTaken::SearchContinued => "search_continued",
            PlanTaken::SearchFulltext => "search_fulltext",
            PlanTaken::SearchSparse => "search_sparse",
            PlanTaken::BandRange => "band_range",
            PlanTaken::BandWalk => "band_walk",
        }
    }
}

/// One MySQL server: its pool and the gate every wait for a connection goes through.
pub(crate) struct Database {
    pool: Pool,
    /// Counts, bounds and sheds the waits for `pool`'s connections.
    gate: Gate,
    /// Whether pages are read with `HANDLER` here: off by setting, or once the server refused.
    handler_reads: AtomicBool,
}

impl Database {
    /// Builds the pool (connections open lazily). `metered`: whether the pool gauges
    /// (`db_pool_*`) describe this pool; they describe the primary's.
    fn new(url: &str, settings: &StoreSettings, metered: bool) -> Result<Database, StoreError> {
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
        let opts = OptsBuilder::from_opts(Opts::from_url(url)?)
            .pool_opts(pool_opts)
            .stmt_cache_size(256)
            .prefer_socket(false)
            .tcp_nodelay(true);
        Ok(Database {
            pool: Pool::new(opts),
            gate: Gate::new(
                settings.pool_max.max(1),
                settings.pool_wait,
                settings.pool_max_waiting,
                metered,
            ),
            handler_reads: AtomicBool::new(settings.handler_reads),
        })
    }

    async fn acquire(&self, admission: Admission) -> Result<PooledConn, StoreError> {
        self.gate.acquire(&self.pool, admission).await
    }
}

impl Store {
    /// Builds the pool (connections open lazily; [`Store::warm`] opens the minimum).
    pub fn new(database_url: &str, settings: &StoreSettings) -> Result<Store, StoreError> {
        Store::with_replicas(database_url, settings, &ReplicaSettings::default())
    }

    /// The primary's pool and one pool per replica, each sized and bounded by `settings`.
    /// Replicas start out of the rotation; [`Store::spawn_replica_monitor`] brings them in.
    pub fn with_replicas(
        database_url: &str,
        settings: &StoreSettings,
        replica_settings: &ReplicaSettings,
    ) -> Result<Store, StoreError> {
        let replicas = replica_settings
            .urls
            .iter()
            .enumerate()
            .map(|(index, url)| {
                let opts = Opts::from_url(url.expose())?;
                let address = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
                let database = Database::new(url.expose(), settings, false)?;
                Ok(Replica::new(index, address, database))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Store {
            primary: Database::new(database_url, settings, true)?,
            rotation: Rotation::new(replicas, replica_settings),
            statements: Statements::build(),
            handler_statements: HandlerStatements::build(),
            query_timeout: settings.query_timeout,
            replica_timeout: settings.query_timeout / 2,
            listing_queries: AtomicU64::new(0),
            plans_taken: Default::default(),
            sparse_searches: moka::future::Cache::builder()
                .max_capacity(SPARSE_SEARCHES_KEPT)
                .time_to_live(SPARSE_SEARCH_TTL)
                .build(),
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
    ///
    /// The read goes to a replica when one is proven fresh (see `replica.rs`), else to the
    /// primary; a replica read that fails is retried on the primary within the same deadline.
    pub async fn list(&self, query: &ListingQuery) -> Result<Page, StoreError> {
        self.listing_queries.fetch_add(1, Ordering::Relaxed);
        let plan = self.statements.plan(query);
        let rows: Vec<Row> = self
            .bounded(async {
                if let Some(replica) = self.rotation.choose() {
                    if let Some(rows) = self.read_from_replica(replica, &plan, query).await {
                        return Ok(rows);
                    }
                }
                self.rotation.served_by_primary();
                self.read_listing(&self.primary, &plan, query).await
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

    /// The rows of `plan` from `replica` within `replica_timeout`, or `None` for the caller to
    /// read the primary: a replica that fails or is too slow leaves the rotation at once (the
    /// monitor brings it back), so a dying replica costs some reads latency, never an error. A
    /// shed or a pool-wait timeout does not take it out: a busy pool says nothing of its health.
    async fn read_from_replica(
        &self,
        replica: &Replica,
        plan: &Plan<'_>,
        query: &ListingQuery,
    ) -> Option<Vec<Row>> {
        let attempt = tokio::time::timeout(
            self.replica_timeout,
            self.read_listing(&replica.database, plan, query),
        )
        .await;
        let eject = match attempt {
            Ok(Ok(rows)) => {
                replica.served();
                return Some(rows);
            }
            Ok(Err(error)) => {
                tracing::debug!(replica = replica.index(), %error, "replica read failed");
                !matches!(error, StoreError::Saturated | StoreError::PoolTimeout(_))
            }
            Err(_elapsed) => {
                tracing::debug!(replica = replica.index(), "replica read timed out");
                true
            }
        };
        self.rotation.read_failed(replica, eject);
        None
    }

    /// The rows of `plan` from `database`, its statements in their order on one connection.
    async fn read_listing(
        &self,
        database: &Database,
        plan: &Plan<'_>,
        query: &ListingQuery,
    ) -> Result<Vec<Row>, StoreError> {
        let take = query.take;
        let mut conn = database.acquire(Admission::Request).await?;
        let handler_read = database
            .handler_reads
            .load(Ordering::Relaxed)
            .then(|| self.handler_statements.read(query))
            .flatten();
        if let Some(read) = handler_read {
            if let Some(rows) = read_by_handler(database, &mut conn, &read).await {
                self.took(PlanTaken::HandlerRead);
                return Ok(rows);
            }
            self.took(PlanTaken::HandlerUnsure);
        }
        if let Some(window) = &plan.window {
            let taken = match self.walk_window(database, &mut conn, window, query).await? {
                Walked::Page(rows) => {
                    self.took(PlanTaken::SearchWindow);
                    return Ok(rows);
                }
                Walked::Continued(rows) => {
                    self.took(PlanTaken::SearchContinued);
                    return Ok(rows);
                }
                Walked::ShortOfAPage => PlanTaken::SearchFulltext,
                Walked::KnownSparse => PlanTaken::SearchSparse,
            };
            self.took(taken);
        }
        if let Some(band) = &plan.band {
            let (sql, params) = &band.probe;
            let counted = exec_retrying(database, &mut conn, sql, params).await?;
            let band_rows = counted
                .into_iter()
                .next()
                .and_then(|mut row| row.take::<u64, _>(0))
                .unwrap_or(u64::MAX);
            if band_rows <= sql::band_range_max(take) {
                self.took(PlanTaken::BandRange);
                let (sql, params) = &band.range;
                return exec_retrying(database, &mut conn, sql, params).await;
            }
            self.took(PlanTaken::BandWalk);
        }
        let (sql, params) = &plan.exact;
        exec_retrying(database, &mut conn, sql, params).await
    }

    /// A search page from the window walk (see [`sql::Window`]), or why FULLTEXT must answer.
    /// Searches whose window came up short before are
    /// remembered for a while ([`SPARSE_SEARCH_TTL`]) and go to FULLTEXT at once: their words
    /// are rare, so the walk would read its whole window for nothing.
    async fn walk_window(
        &self,
        database: &Database,
        conn: &mut PooledConn,
        window: &sql::Window<'_>,
        query: &ListingQuery,
    ) -> Result<Walked, StoreError> {
        let sparse_key = sparse_search_key(query);
        if self.is_known_sparse(&sparse_key, query) {
            return Ok(Walked::KnownSparse);
        }
        let (mut rows, bound) = self.walk_once(database, conn, window, query.sort).await?;
        let Some(bound) = bound else {
            // The order ends inside the window: whatever it found is the rest of the listing.
            return Ok(Walked::Page(rows));
        };
        if rows.len() > usize::from(query.take) {
            return Ok(Walked::Page(rows));
        }
        if self
            .continue_walk(database, conn, query, &mut rows, bound)
            .await?
        {
            return Ok(Walked::Continued(rows));
        }
        self.sparse_searches.insert(sparse_key, ()).await;
        Ok(Walked::ShortOfAPage)
    }

    /// One walk of `window`: its matching rows (up to its limit), and the window's last entry,
    /// `None` when the order ends inside the window.
    async fn walk_once(
        &self,
        database: &Database,
        conn: &mut PooledConn,
        window: &sql::Window<'_>,
        sort: Sort,
    ) -> Result<(Vec<Row>, Option<Position>), StoreError> {
        let (sql, params) = &window.bound;
        let bound = exec_retrying(database, conn, sql, params)
            .await?
            .into_iter()
            .next()
            .and_then(|mut row| Some((row.take::<Value, _>(0)?, row.take::<Value, _>(1)?)));
        let position = match &bound {
            Some((key, id)) => {
                Some(
                    sql::position_of(sort, key, id).ok_or_else(|| StoreError::Decode {
                        column: "window bound",
                        value: key.clone(),
                    })?,
                )
            }
            None => None,
        };
        let (sql, params) = window.walk(bound);
        let rows = exec_retrying(database, conn, sql, &params).await?;
        Ok((rows, position))
    }

    /// After a window that found some matches but not a page: one more walk from the window's
    /// last entry (`from`) finishes the page in `rows` when the matches seen say it is near
    /// ([`sql::continuation`]); otherwise, or when that walk comes up short too, FULLTEXT
    /// answers. Without it, a common word missing from the first rows of a listing paid
    /// FULLTEXT's gather of every match (99.8 ms for a 2.5 % word at 1M rows, perf/RESULTS.md).
    /// Whether it answered.
    async fn continue_walk(
        &self,
        database: &Database,
        conn: &mut PooledConn,
        query: &ListingQuery,
        rows: &mut Vec<Row>,
        from: Position,
    ) -> Result<bool, StoreError> {
        let Some((rest, reach)) = sql::continuation(query, rows.len(), from) else {
            return Ok(false);
        };
        let Some(window) = self.statements.window(&rest, reach) else {
            return Ok(false);
        };
        let (more, bound) = self.walk_once(database, conn, &window, query.sort).await?;
        if more.len() <= usize::from(rest.take) && bound.is_some() {
            return Ok(false);
        }
        rows.extend(more);
        Ok(true)
    }

    /// Whether this search, or its words without filters, came up short recently.
    fn is_known_sparse(&self, sparse_key: &str, query: &ListingQuery) -> bool {
        self.sparse_searches.contains_key(sparse_key)
            || unfiltered_search_key(query)
                .is_some_and(|key| self.sparse_searches.contains_key(&key))
    }

    /// `SELECT 1` within the deadline, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.primary.acquire(Admission::Patient).await?;
            Ok::<_, StoreError>(conn.ping().await?)
        })
        .await
    }

    /// Callers waiting for a pooled connection right now (also exported as `db_pool_waiting`).
    #[must_use]
    pub fn pool_waiting(&self) -> usize {
        self.primary.gate.waiting()
    }

    /// Each replica's state and last lag, for `/ready` (empty without replicas).
    #[must_use]
    pub fn replica_reports(&self) -> Vec<ReplicaReport> {
        self.rotation.reports()
    }

    /// Listing reads this store served from the primary and from each replica.
    #[must_use]
    pub fn read_counts(&self) -> ReadCounts {
        self.rotation.read_counts()
    }

    /// The window the cache opens after an invalidation (see [`PrimaryWindow`]); `None` without
    /// replicas, where every read is the primary's anyway.
    #[must_use]
    pub fn primary_window(&self) -> Option<std::sync::Arc<PrimaryWindow>> {
        self.rotation.window()
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
        self.bounded(self.primary.acquire(Admission::Patient)).await
    }

    /// A connection for a request: refused at once when the pool is saturated, and waited for
    /// at most `DB_POOL_WAIT_MS`, so overload answers a fast 503 instead of a growing queue.
    pub async fn request_connection(&self) -> Result<PooledConn, StoreError> {
        self.primary.acquire(Admission::Request).await
    }

    /// Closes every connection, the replicas' too; call once on shutdown.
    pub async fn disconnect(self) {
        if let Err(error) = self.primary.pool.disconnect().await {
            tracing::warn!(%error, "closing the MySQL pool");
        }
        for replica in self.rotation.replicas() {
            if let Err(error) = replica.database.pool.clone().disconnect().await {
                tracing::warn!(replica = replica.index(), %error, "closing a replica's pool");
            }
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

/// Runs a read; a pooled connection can be dead after a database restart, and reads are
/// idempotent, so one retry on a fresh connection (replacing `conn`) hides the restart.
async fn exec_retrying(
    database: &Database,
    conn: &mut PooledConn,
    sql: &str,
    params: &[mysql_async::Value],
) -> Result<Vec<Row>, StoreError> {
    match conn.exec(sql, params.to_vec()).await {
        Ok(rows) => Ok(rows),
        Err(error) if is_connection_error(&error) => {
            *conn = database.acquire(Admission::Request).await?;
            Ok(conn.exec(sql, params.to_vec()).await?)
        }
        Err(error) => Err(error.into()),
    }
}

/// The page from a `HANDLER` read (see `handler_read.rs`), or `None` for the `SELECT` to
/// answer: the rows could not vouch for the page, or the read failed. A connection that has not
/// opened the handler opens it and reads again; a server that refuses the statement has these
/// reads turned off. A broken connection is left to the `SELECT`'s retry.
async fn read_by_handler(
    database: &Database,
    conn: &mut PooledConn,
    read: &HandlerRead<'_>,
) -> Option<Vec<Row>> {
    let mut attempt = conn.exec(read.sql, read.params.clone()).await;
    if server_code(&attempt) == Some(handler_read::NOT_OPEN) {
        conn.query_drop(handler_read::OPEN).await.ok()?;
        attempt = conn.exec(read.sql, read.params.clone()).await;
    }
    let refused =
        server_code(&attempt).is_some_and(|code| handler_read::UNSUPPORTED.contains(&code));
    match attempt {
        Ok(rows) => handler_read::judge(rows, read),
        Err(error) if refused => {
            if database.handler_reads.swap(false, Ordering::Relaxed) {
                tracing::warn!(%error, "the database refuses HANDLER reads; listings use SELECT only");
            }
            None
        }
        Err(error) => {
            tracing::debug!(%error, "HANDLER read failed; the SELECT answers");
            None
        }
    }
}

/// The server's error code, when `result` is a server's error.
fn server_code<T>(result: &Result<T, mysql_async::Error>) -> Option<u16> {
    match result {
        Err(mysql_async::Error::Server(error)) => Some(error.code),
        _ => None,
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
    sql::id_of(&value).ok_or(StoreError::Decode {
        column: "id",
        value,
    })
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
    sql::price_of(&value).ok_or(StoreError::Decode {
        column: "price",
        value,
    })
}

fn decode_timestamp(column: &'static str, value: Value) -> Result<Timestamp, StoreError> {
    sql::timestamp_of(&value).ok_or(StoreError::Decode { column, value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Filters, Position, SearchTerms, Sort};

    fn search(min_price: Option<Price>, sort: Sort, after: Option<Position>) -> ListingQuery {
        ListingQuery {
            take: 20,
            sort,
            filters: Filters {
                category: Some("tops".into()),
                search: SearchTerms::parse("oak").unwrap(),
                min_price,
                max_price: None,
            },
            after,
        }
    }

    /// A search's density is judged by its filters: a price bound makes it another search; the
    /// sort and the position do not.
    #[test]
    fn sparse_searches_are_keyed_by_their_filters_only() {
        let plain = sparse_search_key(&search(None, Sort::CreatedAtDesc, None));
        let deep = Some(Position { key: 5, id: 6 });
        assert_eq!(
            plain,
            sparse_search_key(&search(None, Sort::PriceAsc, deep))
        );
        assert_ne!(
            plain,
            sparse_search_key(&search(Some(Price(100)), Sort::CreatedAtDesc, None))
        );
    }

    /// A filtered search is also looked up under its words alone, the key an unfiltered search
    /// of the same words is remembered under; an unfiltered search has only its own key.
    #[test]
    fn a_filtered_search_is_also_looked_up_by_its_words_alone() {
        let mut unfiltered = search(None, Sort::CreatedAtDesc, None);
        unfiltered.filters.category = None;
        for filtered in [
            search(None, Sort::PriceAsc, None),
            search(Some(Price(100)), Sort::CreatedAtDesc, None),
        ] {
            assert_eq!(
                unfiltered_search_key(&filtered),
                Some(sparse_search_key(&unfiltered))
            );
        }
        assert_eq!(unfiltered_search_key(&unfiltered), None);
    }
}
