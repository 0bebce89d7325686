//! Test set-up: a fresh database per test, apps on port 0, an HTTP client and SQL oracles.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use product_api::app::App;
use product_api::config::Config;
use product_api::store::{migrate, Store};
use serde_json::Value;
use tokio::sync::oneshot;

/// The cursor secret every test instance shares, as instances of one deployment do.
pub const CURSOR_SECRET: &str = "integration-test cursor secret, 32+ bytes";
/// The webhook signing secret of the test instances.
pub const WEBHOOK_SECRET: &str = "whsec_dGVzdCB3ZWJob29rIHNlY3JldCBvZiAzMiBieXRlcyE=";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests through scripts/test, which starts MariaDB and Redis"
        )
    })
}

/// The seed URLs of the test Redis Cluster, comma-separated. Missing, the cluster tests fail
/// (they never skip): `scripts/test` starts the cluster and exports it.
pub fn redis_cluster_urls() -> String {
    std::env::var("TEST_REDIS_CLUSTER_URLS").unwrap_or_else(|_| {
        panic!(
            "TEST_REDIS_CLUSTER_URLS is not set: run the tests through scripts/test, which starts \
             the Redis Cluster (or `source scripts/lib/services.sh && start_redis_cluster` and \
             export TEST_REDIS_CLUSTER_URLS=\"$(redis_cluster_urls)\")"
        )
    })
}

/// A database of its own for one test, migrated.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    pub pool: mysql_async::Pool,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        let server = env("TEST_DATABASE_URL");
        let server = server.trim_end_matches('/');
        let name = format!("test_{}", random_suffix());
        let admin = mysql_async::Pool::new(server);
        let mut conn = admin.get_conn().await.unwrap();
        conn.query_drop(format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        ))
        .await
        .unwrap();
        drop(conn);
        admin.disconnect().await.unwrap();
        let url = format!("{server}/{name}");
        let store = Store::new(&url, &store_settings()).unwrap();
        migrate::run(&store).await.unwrap();
        store.disconnect().await;
        let pool = mysql_async::Pool::new(url.as_str());
        TestDatabase { name, url, pool }
    }

    /// A database with `rows` seed products plus a block of rows that tie on both sort keys.
    pub async fn seeded(rows: u64) -> TestDatabase {
        let database = TestDatabase::create().await;
        let store = Arc::new(Store::new(&database.url, &store_settings()).unwrap());
        product_api::seed::top_up(store.clone(), rows)
            .await
            .unwrap();
        database.insert_ties(40).await;
        database
    }

    /// Rows with equal `created_at` and equal `price`, so that only the id orders them.
    pub async fn insert_ties(&self, count: usize) {
        let mut conn = self.pool.get_conn().await.unwrap();
        for index in 0..count {
            conn.exec_drop(
                "INSERT INTO products (name, description, price, category, created_at, updated_at)
                 VALUES (?, 'a tied row', 123.45, 'tops', '2024-06-01 12:00:00', '2024-06-01 12:00:00')",
                (format!("Tied Oak Lamp {index}"),),
            )
            .await
            .unwrap();
        }
    }

    /// `count` products newer and cheaper than every seeded one (created in 2099, a second
    /// apart, at 0.01), whose name and description hold none of the seed's words.
    pub async fn insert_newest_without_words(&self, count: usize) {
        let mut conn = self.pool.get_conn().await.unwrap();
        let values: Vec<String> = (0..count)
            .map(|index| {
                format!(
                    "('Filler {index}', 'nothing to find', 0.01, 'tops', \
                     TIMESTAMPADD(SECOND, {index}, '2099-01-01'), '2099-01-01')"
                )
            })
            .collect();
        conn.query_drop(format!(
            "INSERT INTO products (name, description, price, category, created_at, updated_at) \
             VALUES {}",
            values.join(", ")
        ))
        .await
        .unwrap();
    }

    /// Ids in the order a direct SQL query returns them: the oracle the walks are checked against.
    pub async fn ids(&self, sql: &str, params: mysql_async::Params) -> Vec<u64> {
        let mut conn = self.pool.get_conn().await.unwrap();
        conn.exec(sql, params).await.unwrap()
    }

    pub async fn drop_database(self) {
        let mut conn = self.pool.get_conn().await.unwrap();
        conn.query_drop(format!("DROP DATABASE `{}`", self.name))
            .await
            .unwrap();
        drop(conn);
        self.pool.disconnect().await.unwrap();
    }
}

pub fn store_settings() -> product_api::store::StoreSettings {
    product_api::store::StoreSettings {
        pool_min: 1,
        pool_max: 8,
        query_timeout: Duration::from_secs(5),
        pool_wait: Duration::from_secs(5),
        pool_max_waiting: usize::MAX,
        handler_reads: true,
    }
}

/// Settings a test may change from the defaults.
#[derive(Clone)]
pub struct Options {
    pub database_url: String,
    pub redis_url: String,
    /// Shared by instances that should share L2.
    pub namespace: String,
    pub extra: Vec<(&'static str, String)>,
}

impl Options {
    pub fn new(database: &TestDatabase) -> Options {
        Options {
            database_url: database.url.clone(),
            redis_url: env("TEST_REDIS_URL"),
            namespace: format!("test-{}", random_suffix()),
            extra: Vec::new(),
        }
    }

    /// Every Redis use on the test Redis Cluster (`REDIS_CLUSTER_URLS` takes precedence over
    /// `REDIS_URL`).
    pub fn on_redis_cluster(self) -> Options {
        self.with("REDIS_CLUSTER_URLS", redis_cluster_urls())
    }

    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Options {
        self.extra.push((name, value.into()));
        self
    }

    /// The `Config` each instance spawned with these options is built from.
    pub fn config(&self) -> Config {
        let mut vars: HashMap<String, String> = HashMap::from([
            ("DATABASE_URL".into(), self.database_url.clone()),
            ("REDIS_URL".into(), self.redis_url.clone()),
            ("CURSOR_SECRET".into(), CURSOR_SECRET.into()),
            ("WEBHOOK_SECRET".into(), WEBHOOK_SECRET.into()),
            ("CACHE_NAMESPACE".into(), self.namespace.clone()),
            ("DB_POOL_MIN".into(), "1".into()),
            ("DB_POOL_MAX".into(), "16".into()),
            ("REDIS_TIMEOUT_MS".into(), "500".into()),
            // Tests send hundreds of requests from one address; rate-limit tests turn it on.
            ("RATE_LIMIT_PRESET".into(), "off".into()),
        ]);
        for (name, value) in &self.extra {
            if value.is_empty() {
                vars.remove(*name);
            } else {
                vars.insert((*name).to_owned(), value.clone());
            }
        }
        Config::from_lookup(|name| vars.get(name).cloned()).unwrap()
    }
}

/// A running instance of the service on 127.0.0.1:0.
pub struct TestApp {
    pub address: SocketAddr,
    pub app: Arc<App>,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

pub async fn spawn_app(options: &Options) -> TestApp {
    spawn_app_on(options, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// An instance listening on `address`, bound as `serve` binds (`REUSE_PORT` from `options`).
pub async fn spawn_app_on(options: &Options, address: SocketAddr) -> TestApp {
    let config = options.config();
    let app = Arc::new(App::build(&config).await.unwrap());
    let listener = product_api::server::bind(address, config.server.reuse_port).unwrap();
    let address = listener.local_addr().unwrap();
    let (shutdown, stop) = oneshot::channel::<()>();
    let server_app = app.clone();
    let server = tokio::spawn(async move {
        product_api::server::run(listener, server_app, &config.server, async {
            let _ = stop.await;
        })
        .await;
    });
    TestApp {
        address,
        app,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

/// `count` instances of one deployment: the same options, so the same MySQL, Redis namespace
/// and secrets; each a full `App` with its own pool, caches and limiter.
pub async fn spawn_apps(options: &Options, count: usize) -> Vec<TestApp> {
    futures::future::join_all((0..count).map(|_| spawn_app(options))).await
}

/// Stops every instance of a fleet, each after its in-flight requests.
pub async fn stop_apps(apps: impl IntoIterator<Item = TestApp>) {
    for app in apps {
        app.stop().await;
    }
}

/// A response reduced to what the tests look at.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

impl TestApp {
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.address, path_and_query)
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        String::from_utf8(self.get("/metrics").await.body).unwrap()
    }

    pub async fn get(&self, path_and_query: &str) -> Reply {
        self.get_with(path_and_query, &[]).await
    }

    pub async fn get_with(&self, path_and_query: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = self.client.get(self.url(path_and_query));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.unwrap().to_vec(),
        }
    }

    /// Follows `next_cursor` from the first page of `query` to the end; returns every id in order.
    pub async fn walk(&self, query: &str) -> Vec<u64> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        for _page in 0..100_000 {
            let url = match &cursor {
                None => format!("/products/v1?{query}"),
                Some(cursor) => format!("/products/v1?{query}&cursor={cursor}"),
            };
            let reply = self.get(&url).await;
            assert_eq!(
                reply.status,
                200,
                "{url}: {}",
                String::from_utf8_lossy(&reply.body)
            );
            let page = reply.json();
            let data = page["data"].as_array().unwrap();
            ids.extend(data.iter().map(|product| product["id"].as_u64().unwrap()));
            let has_more = page["has_more"].as_bool().unwrap();
            assert_eq!(has_more, page["next_cursor"].is_string(), "{url}");
            assert_eq!(has_more, reply.header("link").is_some(), "{url}");
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return ids,
            }
        }
        panic!("walk of {query} did not end");
    }

    /// Sends a signed webhook delivery (`timestamp` in Unix seconds).
    pub async fn deliver(&self, id: &str, timestamp: i64, body: &[u8]) -> Reply {
        let secret = product_api::request::webhook::WebhookSecret::parse(WEBHOOK_SECRET).unwrap();
        let signature = secret.sign(id, timestamp, body);
        self.post_webhook(id, timestamp, &signature, body.to_vec())
            .await
    }

    pub async fn post_webhook(
        &self,
        id: &str,
        timestamp: i64,
        signature: &str,
        body: Vec<u8>,
    ) -> Reply {
        let response = self
            .client
            .post(self.url("/webhook"))
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.unwrap().to_vec(),
        }
    }

    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Polls `check` until it holds or `limit` passes; the signal here is the service's own state.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within {limit:?}");
}

pub fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

pub fn random_suffix() -> String {
    let bytes: [u8; 6] = rand::random();
    hex::encode(bytes)
}

/// `host:port` of a URL like `mysql://u:p@127.0.0.1:13306/db` or `redis://127.0.0.1:16379/`.
pub fn socket_of(url: &str) -> SocketAddr {
    let after_scheme = url.split_once("://").unwrap().1;
    let host_port = after_scheme
        .rsplit_once('@')
        .map_or(after_scheme, |(_, rest)| rest);
    let host_port = host_port.split('/').next().unwrap();
    host_port.parse().unwrap()
}

/// `url` with its `host:port` replaced by `address`.
pub fn through(url: &str, address: SocketAddr) -> String {
    let original = socket_of(url).to_string();
    url.replacen(&original, &address.to_string(), 1)
}

/// The keys of `namespace` on the single test Redis: none when the cluster is in use.
pub async fn single_redis_keys(namespace: &str) -> Vec<String> {
    let url = std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL is not set");
    let mut connection = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("KEYS")
        .arg(format!("{namespace}:*"))
        .query_async(&mut connection)
        .await
        .unwrap()
}

/// The value of one series in a Prometheus text exposition, e.g. `db_replica_healthy{replica="0"}`
/// or `cache_l2_reads_skipped_total`.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().unwrap())
}
