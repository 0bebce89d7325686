//! Configuration: one typed [`Config`], read from the environment (and `.env`) once at
//! start-up. A missing or malformed setting stops start-up with a message naming it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;

use crate::cache::l2::L2Settings;
use crate::store::{ReplicaSettings, StoreSettings};

/// A value that must never be printed (passwords, URLs with credentials, signing keys).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Every setting of the service.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address to listen on; `0.0.0.0` serves every interface, as behind a load balancer.
    pub host: std::net::IpAddr,
    pub port: u16,
    pub database_url: Secret,
    pub redis_url: Secret,
    /// `REDIS_CLUSTER_URLS`: the seed nodes of a Redis Cluster. When set, every Redis use goes
    /// to the cluster and `REDIS_URL` (and the `REDIS_*` parts) are ignored; see
    /// [`Config::redis_target`].
    pub redis_cluster: Option<crate::redis_connection::RedisTarget>,
    /// Signs pagination cursors; the same on every instance. Required to serve.
    pub cursor_secret: Option<Secret>,
    /// Verifies webhook signatures (`whsec_` + base64); without it `/webhook` answers 503.
    pub webhook_secret: Option<crate::request::webhook::WebhookSecret>,
    pub store: StoreSettings,
    /// `DATABASE_READ_URLS` and the freshness rules of listing reads sent to them.
    pub replicas: ReplicaSettings,
    /// `RECONCILE_SIGNATURES`: whether `serve` re-signs rows with a stale search signature at
    /// start-up (`store::signatures`); the perf scripts turn it off after `seed` has done it.
    pub reconcile_signatures: bool,
    pub l1_capacity_bytes: u64,
    pub l1_ttl: Duration,
    pub l2: L2Settings,
    /// How long a request waits for another instance to fill a key before loading itself.
    pub lock_wait: Duration,
    /// `INVALIDATION_BATCH_MS`: webhook changes within this long share one cache invalidation.
    pub invalidation_batch: Duration,
    /// `L2_ADMISSION`: which misses write their page to L2.
    pub l2_admission: crate::cache::AdmissionPolicy,
    /// `L2_FIRST_MISS_READS`: whether a miss L2 does not admit reads L2 first.
    pub l2_first_miss_reads: crate::cache::ProbePolicy,
    pub server: ServerSettings,
    /// The external catalogue and its sync; `None` when `API_URL` is not set.
    pub upstream: Option<UpstreamConfig>,
    pub rate_limit: crate::limit::RateLimitSettings,
    /// `LOG_FORMAT`; `None`: text when stderr is a terminal, JSON otherwise.
    pub log_format: Option<crate::telemetry::LogFormat>,
}

/// The outside world: the OAuth2 token, the catalogue, and how often to sync from it.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub token: crate::upstream::TokenSettings,
    pub catalogue: crate::upstream::CatalogueSettings,
    /// How often `serve` syncs the catalogue in the background; `None` (the default) never.
    pub sync_interval: Option<Duration>,
    /// Products per catalogue page and per write transaction of the sync.
    pub sync_page_size: u64,
}

/// The HTTP server's limits.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub max_connections: usize,
    /// A client that has not sent its headers by then is disconnected.
    pub header_read_timeout: Duration,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// After a shutdown signal, `/ready` answers 503 while the server keeps serving this long,
    /// so load balancers stop sending before connections are refused.
    pub drain_delay: Duration,
    /// The largest request head (request line and headers); larger ones get 431.
    pub max_header_bytes: usize,
    /// How long a kept-alive connection may wait between requests (idle, then the next head)
    /// before it is closed. At least `header_read_timeout`, which bounds the first request's head.
    pub keep_alive_timeout: Duration,
    /// `REUSE_PORT=1` (Linux only): listen with `SO_REUSEPORT`, so several instances on one
    /// host share `PORT` and the kernel spreads new connections over them.
    pub reuse_port: bool,
}

/// A setting that is missing or malformed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// The shortest accepted cursor secret, in bytes.
pub const MIN_CURSOR_SECRET_LEN: usize = 32;

impl Config {
    /// Reads `.env` if present (without overriding the environment), then the environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        let _ = dotenvy::dotenv();
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any source of variables (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let env = Env(&lookup);
        let cursor_secret = env.text("CURSOR_SECRET").map(Secret::new);
        if let Some(secret) = &cursor_secret {
            if secret.expose().len() < MIN_CURSOR_SECRET_LEN {
                return Err(invalid(
                    "CURSOR_SECRET",
                    format!("must be at least {MIN_CURSOR_SECRET_LEN} bytes"),
                ));
            }
        }
        let webhook_secret = match env.text("WEBHOOK_SECRET") {
            None => None,
            Some(text) => Some(
                crate::request::webhook::WebhookSecret::parse(&text).ok_or_else(|| {
                    invalid("WEBHOOK_SECRET", "must be whsec_ followed by base64".into())
                })?,
            ),
        };
        let pool_min = env.parse("DB_POOL_MIN", 4)?;
        let pool_max = env.parse("DB_POOL_MAX", 32)?;
        if pool_max == 0 || pool_min > pool_max {
            return Err(invalid(
                "DB_POOL_MAX",
                "must be at least 1 and at least DB_POOL_MIN".into(),
            ));
        }
        let pool_wait = env.millis("DB_POOL_WAIT_MS", 200)?;
        let query_timeout = env.millis("DB_QUERY_TIMEOUT_MS", 2_000)?;
        if pool_wait.is_zero() || pool_wait > query_timeout {
            return Err(invalid(
                "DB_POOL_WAIT_MS",
                "must be at least 1 and at most DB_QUERY_TIMEOUT_MS".into(),
            ));
        }
        let header_read_timeout = env.millis("HEADER_READ_TIMEOUT_MS", 5_000)?;
        let keep_alive_timeout = env.millis("KEEP_ALIVE_TIMEOUT_MS", 60_000)?;
        if keep_alive_timeout < header_read_timeout {
            return Err(invalid(
                "KEEP_ALIVE_TIMEOUT_MS",
                "must be at least HEADER_READ_TIMEOUT_MS".into(),
            ));
        }
        Ok(Config {
            host: env.parse("HOST", std::net::IpAddr::from([0, 0, 0, 0]))?,
            port: env.parse("PORT", 8000)?,
            database_url: database_url(&env)?,
            redis_url: redis_url(&env)?,
            redis_cluster: redis_cluster(&env)?,
            cursor_secret,
            webhook_secret,
            store: StoreSettings {
                pool_min,
                pool_max,
                query_timeout,
                pool_wait,
                pool_max_waiting: env.parse("DB_POOL_MAX_WAITING", 2 * pool_max)?,
                handler_reads: env.parse("DB_HANDLER_READS", true)?,
            },
            replicas: replicas(&env)?,
            reconcile_signatures: env.parse("RECONCILE_SIGNATURES", true)?,
            l1_capacity_bytes: env.parse("L1_CAPACITY_BYTES", 64 * 1024 * 1024)?,
            l1_ttl: env.millis("L1_TTL_MS", 5_000)?,
            l2: L2Settings {
                namespace: namespace(&env)?,
                ttl: Duration::from_secs(env.parse("L2_TTL_SECONDS", 60)?),
                timeout: env.millis("REDIS_TIMEOUT_MS", 100)?,
                lock_ttl: env.millis("FILL_LOCK_TTL_MS", 3_000)?,
            },
            lock_wait: env.millis("FILL_LOCK_WAIT_MS", 250)?,
            invalidation_batch: env.millis("INVALIDATION_BATCH_MS", 250)?,
            l2_admission: env.choice("L2_ADMISSION", crate::cache::AdmissionPolicy::SecondMiss)?,
            l2_first_miss_reads: env
                .choice("L2_FIRST_MISS_READS", crate::cache::ProbePolicy::ByYield)?,
            server: ServerSettings {
                max_connections: env.parse("MAX_CONNECTIONS", 10_000)?,
                header_read_timeout,
                shutdown_grace: env.millis("SHUTDOWN_GRACE_MS", 10_000)?,
                drain_delay: env.millis("DRAIN_DELAY_MS", 1_000)?,
                max_header_bytes: env.parse("MAX_HEADER_BYTES", 16 * 1024)?,
                keep_alive_timeout,
                reuse_port: reuse_port(&env)?,
            },
            upstream: upstream(&env)?,
            rate_limit: rate_limit(&env)?,
            log_format: env
                .text("LOG_FORMAT")
                .map(|text| choice(&text))
                .transpose()
                .map_err(|reason| invalid("LOG_FORMAT", reason))?,
        })
    }
}

/// `CACHE_NAMESPACE`, the prefix of every Redis key. Braces are refused: Redis Cluster hashes
/// the first `{…}` of a key, and keys that must share a slot (the generation and its categories'
/// hash) are built with the namespace inside a hash tag.
fn namespace(env: &Env<'_>) -> Result<String, ConfigError> {
    let namespace = env
        .text("CACHE_NAMESPACE")
        .unwrap_or_else(|| "product-api".into());
    if namespace.contains(['{', '}']) {
        return Err(invalid(
            "CACHE_NAMESPACE",
            "must not contain `{` or `}`".into(),
        ));
    }
    Ok(namespace)
}

/// `REUSE_PORT`: `1`/`true` or `0`/`false` (the default); refused off Linux, where
/// `SO_REUSEPORT` does not spread connections over the sockets sharing a port.
fn reuse_port(env: &Env<'_>) -> Result<bool, ConfigError> {
    let on = match env.text("REUSE_PORT").as_deref().map(str::trim) {
        None | Some("0" | "false") => false,
        Some("1" | "true") => true,
        Some(other) => {
            return Err(invalid(
                "REUSE_PORT",
                format!("{other:?} is not valid: use 1 or 0"),
            ))
        }
    };
    if on && !cfg!(target_os = "linux") {
        return Err(invalid("REUSE_PORT", "is only supported on Linux".into()));
    }
    Ok(on)
}

/// The upstream settings, required together once `API_URL` is set.
fn upstream(env: &Env<'_>) -> Result<Option<UpstreamConfig>, ConfigError> {
    use crate::upstream::{CatalogueSettings, ClientAuth, RetrySettings, TokenSettings};
    let Some(api_url) = env.text("API_URL") else {
        return Ok(None);
    };
    let url = |name: &'static str, text: &str| {
        reqwest::Url::parse(text).map_err(|error| invalid(name, format!("is not a URL: {error}")))
    };
    let required = |name: &'static str| {
        env.text(name)
            .ok_or_else(|| invalid(name, "is required when API_URL is set".into()))
    };
    let retry = RetrySettings {
        attempt_timeout: env.millis("UPSTREAM_TIMEOUT_MS", 2_000)?,
        deadline: env.millis("UPSTREAM_DEADLINE_MS", 10_000)?,
        ..RetrySettings::default()
    };
    let namespace = namespace(env)?;
    let mut token = TokenSettings::new(
        url("OAUTH_TOKEN_URL", &required("OAUTH_TOKEN_URL")?)?,
        required("OAUTH_CLIENT_ID")?,
        Secret::new(required("OAUTH_CLIENT_SECRET")?),
        namespace,
    );
    token.scope = env.text("OAUTH_SCOPE");
    token.client_auth = match env.text("OAUTH_CLIENT_AUTH") {
        None => ClientAuth::Basic,
        Some(text) => text
            .parse()
            .map_err(|reason: String| invalid("OAUTH_CLIENT_AUTH", reason))?,
    };
    token.retry = retry.clone();
    let mut catalogue = CatalogueSettings::new(url("API_URL", &api_url)?);
    catalogue.retry = retry;
    let interval: u64 = env.parse("SYNC_INTERVAL_SECONDS", 0)?;
    let sync_page_size: u64 = env.parse("SYNC_PAGE_SIZE", 100)?;
    if sync_page_size == 0 {
        return Err(invalid("SYNC_PAGE_SIZE", "must be at least 1".into()));
    }
    Ok(Some(UpstreamConfig {
        token,
        catalogue,
        sync_interval: (interval > 0).then(|| Duration::from_secs(interval)),
        sync_page_size,
    }))
}

/// The rate-limit policies (a preset, then per-policy overrides) and how clients are told apart.
fn rate_limit(env: &Env<'_>) -> Result<crate::limit::RateLimitSettings, ConfigError> {
    use crate::limit::client::ClientResolver;
    use crate::limit::policy::{Policies, Policy, PolicyKind};
    let preset = env.text("RATE_LIMIT_PRESET");
    let mut policies = Policies::preset(preset.as_deref().unwrap_or("standard"))
        .map_err(|reason| invalid("RATE_LIMIT_PRESET", reason))?;
    for (name, kind) in [
        ("RATE_LIMIT_LISTING", PolicyKind::Listing),
        ("RATE_LIMIT_WEBHOOK", PolicyKind::Webhook),
    ] {
        if let Some(text) = env.text(name) {
            let policy = Policy::parse(kind, &text).map_err(|reason| invalid(name, reason))?;
            match kind {
                PolicyKind::Listing => policies.listing = Some(policy),
                PolicyKind::Webhook => policies.webhook = Some(policy),
            }
        }
    }
    let trusted_proxies = env
        .text("TRUST_PROXY")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    invalid(
                        "TRUST_PROXY",
                        format!("{item:?} is not an IP address or CIDR block"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let key_header = match env.text("RATE_LIMIT_KEY_HEADER") {
        None => None,
        Some(name) => Some(http::HeaderName::try_from(name.trim()).map_err(|_| {
            invalid(
                "RATE_LIMIT_KEY_HEADER",
                format!("{name:?} is not a header name"),
            )
        })?),
    };
    let instances: u32 = env.parse("RATE_LIMIT_INSTANCES", 2)?;
    if instances == 0 {
        return Err(invalid("RATE_LIMIT_INSTANCES", "must be at least 1".into()));
    }
    Ok(crate::limit::RateLimitSettings {
        policies,
        clients: ClientResolver {
            trusted_proxies,
            key_header,
        },
        redis_timeout: env.millis("RATE_LIMIT_REDIS_TIMEOUT_MS", 25)?,
        instances,
    })
}

/// `DATABASE_READ_URLS` (comma-separated, may be absent) and the replicas' lag rules. A URL is
/// checked here so that a typo stops start-up; the message names its position, never its text,
/// which holds a password.
fn replicas(env: &Env<'_>) -> Result<ReplicaSettings, ConfigError> {
    const NAME: &str = "DATABASE_READ_URLS";
    let urls = match env.text(NAME) {
        None => Vec::new(),
        Some(text) => text
            .split(',')
            .map(str::trim)
            .enumerate()
            .map(|(index, url)| {
                if url.is_empty() {
                    return Err(invalid(NAME, format!("entry {index} is empty")));
                }
                match mysql_async::Opts::from_url(url) {
                    Ok(_) => Ok(Secret::new(url)),
                    Err(_) => Err(invalid(
                        NAME,
                        format!(
                            "entry {index} is not a mysql://user:password@host:port/database URL"
                        ),
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let defaults = ReplicaSettings::default();
    let max_lag = env.millis("REPLICA_MAX_LAG_MS", millis_of(defaults.max_lag))?;
    if max_lag.is_zero() {
        return Err(invalid("REPLICA_MAX_LAG_MS", "must be at least 1".into()));
    }
    let check_interval = env.millis(
        "REPLICA_CHECK_INTERVAL_MS",
        millis_of(defaults.check_interval),
    )?;
    if check_interval.is_zero() || check_interval >= max_lag {
        return Err(invalid(
            "REPLICA_CHECK_INTERVAL_MS",
            "must be at least 1 and below REPLICA_MAX_LAG_MS (a check must come before the last one's proof of freshness runs out)".into(),
        ));
    }
    Ok(ReplicaSettings {
        urls,
        max_lag,
        check_interval,
    })
}

fn millis_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `DATABASE_URL`, or one built from the seed's `DB_*` variables.
fn database_url(env: &Env<'_>) -> Result<Secret, ConfigError> {
    if let Some(url) = env.text("DATABASE_URL") {
        return Ok(Secret::new(url));
    }
    let Some(host) = env.text("DB_HOST") else {
        return Err(invalid(
            "DATABASE_URL",
            "is not set (nor DB_HOST): give mysql://user:password@host:port/database".into(),
        ));
    };
    let port: u16 = env.parse("DB_PORT", 3306)?;
    let user = env.text("DB_USER").unwrap_or_else(|| "root".into());
    let password = env.text("DB_PASSWORD").unwrap_or_default();
    let name = env.text("DB_NAME").unwrap_or_else(|| "product_api".into());
    Ok(Secret::new(format!(
        "mysql://{}:{}@{host}:{port}/{}",
        encode(&user),
        encode(&password),
        encode(&name)
    )))
}

impl Config {
    /// Where every Redis user connects: the cluster when `REDIS_CLUSTER_URLS` is set (it takes
    /// precedence, so a deployment may keep a `REDIS_URL` around while it moves), else the one
    /// server of `REDIS_URL`.
    #[must_use]
    pub fn redis_target(&self) -> crate::redis_connection::RedisTarget {
        self.redis_cluster
            .clone()
            .unwrap_or_else(|| crate::redis_connection::RedisTarget::Single(self.redis_url.clone()))
    }
}

/// `REDIS_CLUSTER_URLS`: comma-separated `redis://` (or `rediss://`) seed nodes, at least one.
fn redis_cluster(
    env: &Env<'_>,
) -> Result<Option<crate::redis_connection::RedisTarget>, ConfigError> {
    env.text("REDIS_CLUSTER_URLS")
        .map(|list| crate::redis_connection::RedisTarget::parse_cluster(&list))
        .transpose()
        .map_err(|error| invalid("REDIS_CLUSTER_URLS", error.to_string()))
}

/// `REDIS_URL`, or one built from the seed's `REDIS_*` variables (default `127.0.0.1:6379`).
fn redis_url(env: &Env<'_>) -> Result<Secret, ConfigError> {
    if let Some(url) = env.text("REDIS_URL") {
        return Ok(Secret::new(url));
    }
    let host = env.text("REDIS_HOST").unwrap_or_else(|| "127.0.0.1".into());
    let port: u16 = env.parse("REDIS_PORT", 6379)?;
    let credentials = match (env.text("REDIS_USERNAME"), env.text("REDIS_PASSWORD")) {
        (None, None) => String::new(),
        (user, password) => format!(
            "{}:{}@",
            encode(&user.unwrap_or_default()),
            encode(&password.unwrap_or_default())
        ),
    };
    Ok(Secret::new(format!("redis://{credentials}{host}:{port}/")))
}

fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    crate::request::query_string::encode_into(value, &mut out);
    out
}

/// One of `T`'s named values, case and surrounding spaces ignored; else the reason, naming
/// every value.
pub(crate) fn choice<T: ValueEnum>(text: &str) -> Result<T, String> {
    T::from_str(text.trim(), true).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(ValueEnum::to_possible_value)
            .map(|value| format!("`{}`", value.get_name()))
            .collect();
        format!("must be one of {}", names.join(", "))
    })
}

fn invalid(name: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { name, reason }
}

struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    /// A non-empty value; an empty variable counts as unset.
    fn text(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|value| !value.trim().is_empty())
    }

    fn parse<T: FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.text(name) {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse()
                .map_err(|error| invalid(name, format!("{text:?} is not valid: {error}"))),
        }
    }

    /// [`choice`] of the variable, or `default` when it is unset.
    fn choice<T: ValueEnum>(&self, name: &'static str, default: T) -> Result<T, ConfigError> {
        self.text(name).map_or(Ok(default), |text| {
            choice(&text)
                .map_err(|reason| invalid(name, format!("{text:?} is not valid: {reason}")))
        })
    }

    fn millis(&self, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.parse(name, default).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn builds_urls_from_the_seed_variables() {
        let config = config(&[
            ("DB_HOST", "db"),
            ("DB_USER", "app"),
            ("DB_PASSWORD", "p@ss word"),
            ("DB_NAME", "shop"),
            ("REDIS_HOST", "cache"),
            ("REDIS_PASSWORD", "x"),
        ])
        .unwrap();
        assert_eq!(
            config.database_url.expose(),
            "mysql://app:p%40ss%20word@db:3306/shop"
        );
        assert_eq!(config.redis_url.expose(), "redis://:x@cache:6379/");
        assert_eq!(config.port, 8000);
        assert!(!config.server.reuse_port, "REUSE_PORT is off by default");
    }

    #[test]
    fn redis_cluster_urls_take_precedence_over_redis_url() {
        use crate::redis_connection::RedisTarget;
        const DB: (&str, &str) = ("DATABASE_URL", "mysql://x/y");
        let single = config(&[DB, ("REDIS_URL", "redis://one:6379/")]).unwrap();
        assert_eq!(
            single.redis_target(),
            RedisTarget::single("redis://one:6379/")
        );
        let cluster = config(&[
            DB,
            ("REDIS_URL", "redis://one:6379/"),
            ("REDIS_CLUSTER_URLS", "redis://a:7000/, redis://b:7001/"),
        ])
        .unwrap();
        assert_eq!(
            cluster.redis_target(),
            RedisTarget::cluster(["redis://a:7000/", "redis://b:7001/"])
        );
        for bad in [" , ", "redis://a:7000/,a:7001"] {
            let error = config(&[DB, ("REDIS_CLUSTER_URLS", bad)])
                .unwrap_err()
                .to_string();
            assert!(error.starts_with("REDIS_CLUSTER_URLS: "), "{error}");
        }
        let error = config(&[DB, ("REDIS_CLUSTER_URLS", "http://:secret@a/")])
            .unwrap_err()
            .to_string();
        assert!(!error.contains("secret"), "{error}");
    }

    #[test]
    fn errors_name_the_setting() {
        let cases: [(&[(&str, &str)], &str); 17] = [
            (
                &[("DATABASE_URL", "mysql://x/y"), ("REUSE_PORT", "yes")],
                "REUSE_PORT",
            ),
            (
                &[
                    ("DATABASE_URL", "mysql://x/y"),
                    ("RATE_LIMIT_LISTING", "lots"),
                ],
                "RATE_LIMIT_LISTING",
            ),
            (
                &[
                    ("DATABASE_URL", "mysql://x/y"),
                    ("TRUST_PROXY", "10.0.0.0/8, proxy"),
                ],
                "TRUST_PROXY",
            ),
            (
                &[
                    ("DATABASE_URL", "mysql://x/y"),
                    ("RATE_LIMIT_PRESET", "fast"),
                ],
                "RATE_LIMIT_PRESET",
            ),
            (&[], "DATABASE_URL"),
            (
                &[("DATABASE_URL", "mysql://x/y"), ("PORT", "eighty")],
                "PORT",
            ),
            (
                &[("DATABASE_URL", "mysql://x/y"), ("CURSOR_SECRET", "short")],
                "CURSOR_SECRET",
            ),
            (
                &[("DATABASE_URL", "mysql://x/y"), ("DB_POOL_MAX", "0")],
                "DB_POOL_MAX",
            ),
            (
                &[("DATABASE_URL", "mysql://x/y"), ("L1_TTL_MS", "-5")],
                "L1_TTL_MS",
            ),
            (
                &[("DATABASE_URL", "mysql://x/y"), ("CACHE_NAMESPACE", "a{b}")],
                "CACHE_NAMESPACE",
            ),
            (
                &[("DATABASE_URL", "mysql://x/y"), ("L2_ADMISSION", "always")],
                "L2_ADMISSION",
            ),
            (
                &[
                    ("DATABASE_URL", "mysql://x/y"),
                    ("L2_FIRST_MISS_READS", "never"),
                ],
                "L2_FIRST_MISS_READS",
            ),
            (
                &[
                    ("DATABASE_URL", "mysql://x/y"),
                    ("WEBHOOK_SECRET", "whsec_!!"),
                ],
                "WEBHOOK_SECRET",
            ),
            (
                &[
                    ("DATABASE_URL", "mysql://x/y"),
                    ("API_URL", "http://127.0.0.1/p"),
                ],
                "OAUTH_TOKEN_URL",
            ),
            (
                &[("DATABASE_URL", "mysql://x/y"), ("LOG_FORMAT", "xml")],
                "LOG_FORMAT",
            ),
            (
                &[
                    ("DATABASE_URL", "mysql://x/y"),
                    ("DB_QUERY_TIMEOUT_MS", "100"),
                    ("DB_POOL_WAIT_MS", "200"),
                ],
                "DB_POOL_WAIT_MS",
            ),
            (
                &[
                    ("DATABASE_URL", "mysql://x/y"),
                    ("KEEP_ALIVE_TIMEOUT_MS", "1000"),
                ],
                "KEEP_ALIVE_TIMEOUT_MS",
            ),
        ];
        for (pairs, name) in cases {
            let error = config(pairs).unwrap_err().to_string();
            assert!(error.starts_with(name), "{error}");
        }
    }

    /// Variables, the setting the error must name, and a piece of its reason.
    type ReplicaCase<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);

    #[test]
    fn read_replicas_are_listed_in_order_and_validated() {
        let none = config(&[("DATABASE_URL", "mysql://x/y")]).unwrap();
        assert!(none.replicas.urls.is_empty());
        assert_eq!(none.replicas.max_lag, Duration::from_secs(1));
        assert_eq!(none.replicas.check_interval, Duration::from_millis(250));
        let two = config(&[
            ("DATABASE_URL", "mysql://x/y"),
            (
                "DATABASE_READ_URLS",
                " mysql://u:pw1@r1:3306/y , mysql://u:pw2@r2/y",
            ),
            ("REPLICA_MAX_LAG_MS", "500"),
            ("REPLICA_CHECK_INTERVAL_MS", "100"),
        ])
        .unwrap();
        let urls: Vec<_> = two.replicas.urls.iter().map(Secret::expose).collect();
        assert_eq!(urls, ["mysql://u:pw1@r1:3306/y", "mysql://u:pw2@r2/y"]);
        assert_eq!(two.replicas.max_lag, Duration::from_millis(500));
        assert_eq!(two.replicas.check_interval, Duration::from_millis(100));
        assert!(!format!("{two:?}").contains("pw1"));
        let cases: [ReplicaCase<'_>; 6] = [
            (
                &[("DATABASE_READ_URLS", "mysql://u:secret@r1/y,")],
                "DATABASE_READ_URLS",
                "entry 1 is empty",
            ),
            (
                &[("DATABASE_READ_URLS", "postgres://u:secret@r1/y")],
                "DATABASE_READ_URLS",
                "entry 0 is not",
            ),
            (&[("REPLICA_MAX_LAG_MS", "0")], "REPLICA_MAX_LAG_MS", ""),
            (&[("REPLICA_MAX_LAG_MS", "soon")], "REPLICA_MAX_LAG_MS", ""),
            (
                &[("REPLICA_CHECK_INTERVAL_MS", "1000")],
                "REPLICA_CHECK_INTERVAL_MS",
                "below REPLICA_MAX_LAG_MS",
            ),
            (
                &[("REPLICA_CHECK_INTERVAL_MS", "0")],
                "REPLICA_CHECK_INTERVAL_MS",
                "",
            ),
        ];
        for (pairs, name, detail) in cases {
            let mut pairs = pairs.to_vec();
            pairs.push(("DATABASE_URL", "mysql://x/y"));
            let error = config(&pairs).unwrap_err().to_string();
            assert!(error.starts_with(name), "{error}");
            assert!(error.contains(detail), "{error}");
            assert!(
                !error.contains("secret"),
                "the URL is never echoed: {error}"
            );
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn reuse_port_takes_one_or_zero() {
        for (text, on) in [("1", true), ("true", true), ("0", false), ("false", false)] {
            let config = config(&[("DATABASE_URL", "mysql://x/y"), ("REUSE_PORT", text)]).unwrap();
            assert_eq!(config.server.reuse_port, on, "{text}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let config = config(&[("DATABASE_URL", "mysql://u:hunter2@h/d")]).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
