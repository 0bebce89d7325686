//! L2: finished responses in Redis, shared by every instance, plus the cross-instance fill lock.
//!
//! Redis is an accelerator, never a dependency: every call has a deadline of milliseconds and
//! any failure reads as a miss. After repeated failures a breaker skips Redis for a cool-down,
//! so a dead Redis costs requests nothing; the first call after the cool-down probes it again,
//! so Redis is used again without a restart.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::AsyncCommands;

use super::generation::{Scope, SharedState};
use super::{key::CacheKey, CachedPage};
use crate::redis_connection::{Notice, OpenError, Redis, RedisConnection, RedisTarget, Timeouts};
use crate::redis_lock::{self, Lock};

/// Settings of the Redis side.
#[derive(Debug, Clone)]
pub struct L2Settings {
    /// Prefix of every key, so deployments (and tests) sharing a Redis do not collide.
    pub namespace: String,
    pub ttl: Duration,
    /// The most one Redis call may take before it counts as a miss.
    pub timeout: Duration,
    /// How long a fill lock lives if its holder dies.
    pub lock_ttl: Duration,
}

/// Failures in a row that open the breaker.
const BREAKER_THRESHOLD: u32 = 3;
/// How long an open breaker skips Redis.
const BREAKER_COOL_DOWN: Duration = Duration::from_millis(500);

/// The shared cache.
pub struct L2 {
    /// The command connection, and the pub/sub one it opens for the invalidation listener.
    redis: Redis,
    settings: L2Settings,
    breaker: Breaker,
    /// The id of the cursor secret that signed the cursors in this instance's pages (see
    /// [`crate::request::cursor::CursorKey::signer_id`]); part of page keys.
    page_signer: String,
}

impl L2 {
    /// Creates the client without connecting: a Redis that is down at start-up is not an error.
    pub fn new(redis: &RedisTarget, settings: L2Settings) -> Result<Self, OpenError> {
        let timeouts = Timeouts {
            connect: settings.timeout,
            response: settings.timeout,
        };
        Ok(L2 {
            redis: Redis::open(redis, timeouts)?,
            settings,
            breaker: Breaker::default(),
            page_signer: "unsigned".into(),
        })
    }

    /// Pages stored and read by this instance carry cursors signed by the secret `signer_id`.
    #[must_use]
    pub fn with_page_signer(mut self, signer_id: String) -> Self {
        self.page_signer = signer_id;
        self
    }

    pub async fn get(&self, key: &CacheKey) -> Option<CachedPage> {
        let redis_key = self.page_key(key);
        let bytes: Option<Vec<u8>> = self
            .call(|mut c| async move { c.get(redis_key).await })
            .await
            .flatten();
        bytes.and_then(|bytes| CachedPage::decode(Bytes::from(bytes)))
    }

    /// Stores a page; a failure only means the next instance misses too.
    pub async fn set(&self, key: &CacheKey, page: &CachedPage) {
        let redis_key = self.page_key(key);
        let value = page.encode();
        let ttl = self.settings.ttl.as_secs().max(1);
        self.call(
            |mut c| async move { c.set_ex::<_, _, ()>(redis_key, value.as_ref(), ttl).await },
        )
        .await;
    }

    /// A miss's first step in one round trip: the page if another instance stored it, else the
    /// fill lock taken (or found busy). One script instead of a `GET` then a `SET NX`: the miss
    /// path is round-trip bound (`flamegraphs/database.svg`). Both keys carry the same hash tag,
    /// so the script runs on one Redis Cluster node.
    pub async fn get_or_lock(&self, key: &CacheKey) -> Lookup {
        let page_key = self.page_key(key);
        let lock_key = self.lock_key(key);
        let owner = redis_lock::new_owner();
        let ttl_ms = u64::try_from(self.settings.lock_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let token = owner.clone();
        let reply: Option<(u8, Vec<u8>)> = self
            .call(|mut c| async move {
                get_or_lock_script()
                    .key(page_key)
                    .key(lock_key)
                    .arg(token)
                    .arg(ttl_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        match reply {
            Some((GOT_PAGE, bytes)) => match CachedPage::decode(Bytes::from(bytes)) {
                Some(page) => Lookup::Page(page),
                None => Lookup::Lock(Lock::Unavailable),
            },
            Some((TOOK_LOCK, _)) => Lookup::Lock(Lock::Held(owner)),
            Some(_) => Lookup::Lock(Lock::Busy),
            None => Lookup::Lock(Lock::Unavailable),
        }
    }

    /// A fill's last step in one round trip: stores the page and releases the fill lock if this
    /// filler still holds it (compare-and-delete, as `redis_lock`).
    pub async fn set_and_unlock(&self, key: &CacheKey, page: &CachedPage, token: String) {
        let page_key = self.page_key(key);
        let lock_key = self.lock_key(key);
        let value = page.encode();
        let ttl = self.settings.ttl.as_secs().max(1);
        self.call(|mut c| async move {
            set_and_unlock_script()
                .key(page_key)
                .key(lock_key)
                .arg(value.as_ref())
                .arg(ttl)
                .arg(token)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await;
    }

    pub async fn unlock(&self, key: &CacheKey, token: String) {
        let lock_key = self.lock_key(key);
        self.call(|mut c| async move {
            redis_lock::delete_if_equal()
                .key(lock_key)
                .arg(token)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await;
    }

    /// Whether Redis answers a PING within the deadline (for `/ready`).
    pub async fn ping(&self) -> bool {
        let mut connection = self.redis.connection();
        let ping = async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        };
        matches!(
            tokio::time::timeout(self.settings.timeout, ping).await,
            Ok(Ok(_))
        )
    }

    /// Runs one Redis call under the deadline and the breaker; `None` on any failure.
    async fn call<T, F, Fut>(&self, command: F) -> Option<T>
    where
        F: FnOnce(RedisConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if self.breaker.is_open() {
            crate::meter::redis_fallback();
            return None;
        }
        self.breaker
            .run(
                self.settings.timeout,
                "treating as a miss",
                command(self.redis.connection()),
            )
            .await
    }

    /// Moves the deployment to a new generation for a change of `scope` and tells every
    /// instance; the state after it, or `None` when Redis did not answer. `seen` is the highest
    /// generation this instance has seen: if Redis lost the generation, the new one is above it
    /// (see [`Self::catch_up_generation`]).
    pub async fn bump_generation(&self, scope: Scope, seen: u64) -> Option<SharedState> {
        let (generation_key, scopes_key) = (self.generation_key(), self.scopes_key());
        let channel = self.invalidation_channel();
        self.call(|mut c| async move {
            let mut script = bump_generation().key(&generation_key);
            script.key(&scopes_key).arg(seen);
            if scope.is_everything() {
                script.arg("*");
            } else {
                script.arg("");
                for bucket in scope.buckets() {
                    script.arg(bucket.index());
                }
                for bucket in scope.words() {
                    script.arg(format!("w{}", bucket.index()));
                }
            }
            let (generation, fields): (u64, Vec<String>) = script.invoke_async(&mut c).await?;
            c.publish::<_, _, ()>(&channel, generation).await?;
            Ok(shared_state(generation, &fields))
        })
        .await
    }

    /// The deployment's generations; if Redis holds a generation below `seen` (the highest this
    /// instance has seen), first moves it past `seen`. `None` when Redis did not answer.
    ///
    /// Redis holding less means it lost the key (restarted without persistence, flushed, a
    /// cluster master replaced). Left there, instances that read it anew would use generations
    /// others already passed, and the others, whose generation never goes down, would go on
    /// reading L2 pages filled before later changes. A change may also have been counted only
    /// in the lost key, so the new value is above every one seen before (`seen + 1`: all
    /// instances move to fresh keys), and it is published. The same holds for the scopes'
    /// hash: when it does not describe the current generation (lost, or the generation moved by
    /// an instance of a version without it), every bucket moves to the current generation.
    /// Both keys share a hash tag: cluster-safe.
    pub async fn catch_up_generation(&self, seen: u64) -> Option<SharedState> {
        let (generation_key, scopes_key) = (self.generation_key(), self.scopes_key());
        let channel = self.invalidation_channel();
        self.call(|mut c| async move {
            let (generation, raised, fields): (u64, bool, Vec<String>) = catch_up_generation()
                .key(&generation_key)
                .key(&scopes_key)
                .arg(seen)
                .invoke_async(&mut c)
                .await?;
            if raised {
                c.publish::<_, _, ()>(&channel, generation).await?;
            }
            Ok(shared_state(generation, &fields))
        })
        .await
    }

    /// A dedicated pub/sub connection subscribed to invalidations (on a cluster: a cluster
    /// connection of its own, see `redis_connection`).
    pub async fn subscribe_invalidations(&self) -> Option<Invalidations> {
        let channel = self.invalidation_channel();
        let subscribe = self.redis.subscribe(&channel);
        match tokio::time::timeout(self.settings.timeout * 10, subscribe).await {
            Ok(Ok(subscription)) => Some(Invalidations(subscription)),
            Ok(Err(error)) => {
                tracing::debug!(%error, "cannot subscribe to invalidations yet");
                None
            }
            Err(_) => None,
        }
    }

    /// Whether a webhook event id is known to be processed (the fast path before MySQL, which
    /// holds the durable record).
    pub async fn webhook_seen(&self, event_id: &str) -> bool {
        let key = self.webhook_key(event_id);
        self.call(|mut c| async move { c.exists::<_, bool>(key).await })
            .await
            .unwrap_or(false)
    }

    /// Remembers a processed event id for `ttl`.
    pub async fn remember_webhook(&self, event_id: &str, ttl: Duration) {
        let key = self.webhook_key(event_id);
        self.call(|mut c| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(1)
                .arg("NX")
                .arg("EX")
                .arg(ttl.as_secs().max(1))
                .query_async::<Option<String>>(&mut c)
                .await
        })
        .await;
    }

    fn webhook_key(&self, event_id: &str) -> String {
        format!("{}:webhook:{event_id}", self.settings.namespace)
    }

    pub(crate) fn generation_key(&self) -> String {
        format!("{}:generation", self.settings.namespace)
    }

    /// `{<ns>:generation}:scopes`: the generation key's name as hash tag, so both live in one
    /// cluster slot (the namespace has no braces: `Config` refuses them) and are lost together
    /// with their node. Named anew when word buckets joined the categories' (it was
    /// `…:categories`): an instance of the version before moves the generation without touching
    /// this hash, so its `at` falls behind the generation and whoever reads it next moves every
    /// page, where sharing the old hash would have left search pages unmoved by its changes.
    pub(crate) fn scopes_key(&self) -> String {
        format!("{{{}:generation}}:scopes", self.settings.namespace)
    }

    fn invalidation_channel(&self) -> String {
        format!("{}:invalidate", self.settings.namespace)
    }

    /// `<ns>:page:<generation>:<signer>:{<tag>}:<key>`: the tag (see [`slot_tag`]) puts a page
    /// and its fill lock in one Redis Cluster slot, for the two-key scripts of the miss path; the
    /// signer keeps instances with different cursor secrets from serving each other's pages.
    pub(crate) fn page_key(&self, key: &CacheKey) -> String {
        format!(
            "{}:page:{}:{}:{{{}}}:{}",
            self.settings.namespace,
            key.generation().shared,
            self.page_signer,
            slot_tag(key.as_str()),
            key.as_str()
        )
    }

    /// `<ns>:lock:{<tag>}:<key>`, in the slot of the key's pages.
    pub(crate) fn lock_key(&self, key: &CacheKey) -> String {
        format!(
            "{}:lock:{{{}}}:{}",
            self.settings.namespace,
            slot_tag(key.as_str()),
            key.as_str()
        )
    }
}

/// What [`L2::get_or_lock`] found.
pub enum Lookup {
    /// Another instance had stored the page.
    Page(CachedPage),
    /// No page: the fill lock's outcome.
    Lock(Lock),
}

/// A hash tag for a cache key: 16 hex digits of its SHA-256, so the tag never contains a brace
/// whatever the key holds (a cache key embeds client values).
fn slot_tag(key: &str) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(key.as_bytes())[..8])
}

const GOT_PAGE: u8 = 1;
const TOOK_LOCK: u8 = 2;

/// `KEYS[1]` the page, `KEYS[2]` its fill lock (one hash tag); `ARGV[1]` the owner token,
/// `ARGV[2]` the lock's TTL in ms. Returns `{1, page}`, `{2, ''}` (lock taken) or `{3, ''}` (busy):
/// always two elements, so the reply has one type.
pub(crate) const GET_OR_LOCK: &str = r"
local page = redis.call('GET', KEYS[1])
if page then
    return {1, page}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return {2, ''}
end
return {3, ''}";

/// `KEYS[1]` the page, `KEYS[2]` its fill lock (one hash tag); `ARGV[1]` the page, `ARGV[2]` its
/// TTL in seconds, `ARGV[3]` the owner token: stores the page, then deletes the lock if it still
/// holds the token.
pub(crate) const SET_AND_UNLOCK: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then
    redis.call('DEL', KEYS[2])
end
return 1";

fn get_or_lock_script() -> &'static redis::Script {
    static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(GET_OR_LOCK))
}

fn set_and_unlock_script() -> &'static redis::Script {
    static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(SET_AND_UNLOCK))
}

/// `KEYS[1]` the generation, `KEYS[2]` the scopes' hash (one hash tag); `ARGV[1]` the
/// highest generation the caller has seen, `ARGV[2]` `*` for a change of everything, else the
/// changed buckets' fields follow (a category bucket's index, `w` and a word bucket's index).
/// Moves the generation past both the stored one and `ARGV[1]`; records it for each bucket, or
/// as the hash's `floor` for everything, and always as `at`. A hash whose `at` is not the stored
/// generation missed changes (it was lost, or an instance of an older version moved the
/// generation): it starts over with the new generation as floor. Returns `{generation, HGETALL
/// of the hash}`.
pub(crate) const BUMP_GENERATION: &str = r"
local generation = tonumber(redis.call('GET', KEYS[1])) or 0
local at = tonumber(redis.call('HGET', KEYS[2], 'at')) or 0
local seen = tonumber(ARGV[1])
local known = at == generation and generation >= seen
local new = string.format('%d', math.max(generation, at, seen) + 1)
redis.call('SET', KEYS[1], new)
if ARGV[2] == '*' or not known then
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[2], 'floor', new)
else
    for i = 3, #ARGV do
        redis.call('HSET', KEYS[2], ARGV[i], new)
    end
end
redis.call('HSET', KEYS[2], 'at', new)
return {tonumber(new), redis.call('HGETALL', KEYS[2])}";

/// `KEYS[1]` the generation, `KEYS[2]` the scopes' hash (one hash tag); `ARGV[1]` the
/// highest generation the caller has seen. A stored generation below it or below the hash's
/// `at` was lost: it becomes one above both. A hash whose `at` is not the generation missed
/// changes: it starts over with the generation as floor. Returns `{generation, 1 if raised,
/// HGETALL of the hash}`.
pub(crate) const CATCH_UP_GENERATION: &str = r"
local generation = tonumber(redis.call('GET', KEYS[1])) or 0
local at = tonumber(redis.call('HGET', KEYS[2], 'at')) or 0
local seen = tonumber(ARGV[1])
local raised = 0
if generation < seen or generation < at then
    generation = math.max(seen, at) + 1
    redis.call('SET', KEYS[1], string.format('%d', generation))
    raised = 1
end
if at ~= generation then
    local value = string.format('%d', generation)
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[2], 'floor', value, 'at', value)
end
return {generation, raised, redis.call('HGETALL', KEYS[2])}";

fn bump_generation() -> &'static redis::Script {
    static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(BUMP_GENERATION))
}

fn catch_up_generation() -> &'static redis::Script {
    static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(CATCH_UP_GENERATION))
}

/// The state in a script's reply: the generation and the hash's flat field/value list (values
/// that are not numbers are skipped).
fn shared_state(generation: u64, fields: &[String]) -> SharedState {
    SharedState::from_fields(
        generation,
        fields.chunks_exact(2).filter_map(|pair| {
            pair[1]
                .parse::<u64>()
                .ok()
                .map(|value| (pair[0].as_str(), value))
        }),
    )
}

/// A live subscription to other instances' invalidations.
pub struct Invalidations(crate::redis_connection::Subscription);

/// What the invalidation listener hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    /// Another instance moved the deployment to this generation.
    Generation(u64),
    /// Messages may have been missed (the subscription was made again): read the generation.
    CatchUp,
}

impl Invalidations {
    /// The next invalidation; `None` when the subscription ended (subscribe again). A payload
    /// that is not a generation is skipped.
    pub async fn next(&mut self) -> Option<Invalidation> {
        loop {
            match self.0.next().await? {
                Notice::Resubscribed => return Some(Invalidation::CatchUp),
                Notice::Message(payload) => {
                    let generation = std::str::from_utf8(&payload)
                        .ok()
                        .and_then(|text| text.parse::<u64>().ok());
                    if let Some(generation) = generation {
                        return Some(Invalidation::Generation(generation));
                    }
                }
            }
        }
    }
}

/// Consecutive-failure breaker: cheap atomics, no lock on the hot path.
#[derive(Default)]
pub(crate) struct Breaker {
    consecutive_failures: AtomicU32,
    /// Milliseconds since `epoch()` until which Redis is skipped; 0 when closed.
    open_until_ms: AtomicU64,
}

impl Breaker {
    /// Runs one Redis call under `timeout`, recording its outcome; `None` on an error or a
    /// timeout, logged at debug with what the caller does instead (`consequence`).
    pub(crate) async fn run<T>(
        &self,
        timeout: Duration,
        consequence: &'static str,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(value)) => {
                self.record_success();
                Some(value)
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, consequence, "redis call failed");
                self.record_failure();
                None
            }
            Err(_) => {
                tracing::debug!(consequence, "redis call timed out");
                self.record_failure();
                None
            }
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        let until = self.open_until_ms.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    pub(crate) fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.open_until_ms.store(0, Ordering::Relaxed);
    }

    pub(crate) fn record_failure(&self) {
        crate::meter::redis_error();
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= BREAKER_THRESHOLD {
            let until = now_ms() + BREAKER_COOL_DOWN.as_millis() as u64;
            self.open_until_ms.store(until, Ordering::Relaxed);
        }
    }
}

/// Milliseconds on a monotonic clock since the first call.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}
