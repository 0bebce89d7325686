//! A Redis connection, to one server or to a Redis Cluster: the only place that opens one.
//!
//! Every Redis user (the L2 cache with its generations, fill lock and webhook fast path, the
//! shared rate-limit quota, the OAuth2 token cache and its refresh lock) opens its connection
//! here from the one [`RedisTarget`] of the configuration, so `REDIS_CLUSTER_URLS` switches
//! all of them at once. [`RedisConnection`] implements `redis::aio::ConnectionLike`, so the
//! users send commands, scripts and pipelines exactly as before; the single-server variant is
//! the same `ConnectionManager` as before, behind one `match`.
//!
//! Pub/sub differs: a single server gets a plain pub/sub connection; a cluster gets a cluster
//! connection of its own speaking RESP3, whose subscriptions arrive as push messages
//! ([`Subscription`]). Redis Cluster forwards every `PUBLISH` to every node, so subscribing at
//! any node hears every instance. A disconnection ends a subscription on either (see
//! [`Subscription::next`]); the subscriber then subscribes anew and catches up with what it may
//! have missed, as it also does when the cluster client reports a re-subscription of its own.
//!
//! Connecting is lazy: a Redis (or cluster) that is down at start-up is not an error, and the
//! connection comes up when Redis does. Never logs a URL (they carry passwords); never runs a
//! command itself: the users do, under their own deadlines.

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, PushKind, RedisFuture, Value};
use tokio::sync::mpsc;

use crate::config::Secret;

/// Where Redis is: one server (`REDIS_URL`), or the seed nodes of a cluster
/// (`REDIS_CLUSTER_URLS`). Prints without the URLs.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Single(Secret),
    /// At least one seed node; the client learns the others from the cluster.
    Cluster(Vec<Secret>),
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisTarget::Single(_) => f.write_str("RedisTarget::Single([redacted])"),
            RedisTarget::Cluster(nodes) => {
                write!(
                    f,
                    "RedisTarget::Cluster({} seed nodes, [redacted])",
                    nodes.len()
                )
            }
        }
    }
}

impl RedisTarget {
    /// One server at `url`.
    #[must_use]
    pub fn single(url: &str) -> Self {
        RedisTarget::Single(Secret::new(url))
    }

    /// A cluster reached through these seed nodes.
    #[must_use]
    pub fn cluster<S: AsRef<str>>(seed_urls: impl IntoIterator<Item = S>) -> Self {
        RedisTarget::Cluster(
            seed_urls
                .into_iter()
                .map(|url| Secret::new(url.as_ref()))
                .collect(),
        )
    }

    /// The seed list of `REDIS_CLUSTER_URLS`: comma-separated `redis://` or `rediss://` URLs,
    /// blanks ignored, at least one.
    pub fn parse_cluster(list: &str) -> Result<Self, SeedListError> {
        let nodes: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect();
        if nodes.is_empty() {
            return Err(SeedListError::Empty);
        }
        if let Some(position) = nodes
            .iter()
            .position(|url| !(url.starts_with("redis://") || url.starts_with("rediss://")))
        {
            return Err(SeedListError::NotRedisUrl {
                position: position + 1,
            });
        }
        Ok(RedisTarget::cluster(nodes))
    }

    #[must_use]
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisTarget::Cluster(_))
    }
}

/// A seed list that names no usable node. Names a node by its position, never by its URL
/// (which may carry a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedListError {
    #[error("names no node")]
    Empty,
    #[error("node {position} is not a redis:// or rediss:// URL")]
    NotRedisUrl { position: usize },
}

/// The deadlines one user gives its connection. The users still bound each call themselves;
/// these stop the client from waiting longer inside (connecting, or for a reply).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
}

/// A URL or a seed list the client cannot use. The message never contains the URL.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the Redis URL is not valid")]
    Url(#[source] redis::RedisError),
    #[error("the Redis Cluster seed URLs are not valid (each redis://…, one password for all)")]
    ClusterUrls(#[source] redis::RedisError),
}

/// An open connection for commands; cheap to clone (clones share the connection).
#[derive(Clone)]
pub enum RedisConnection {
    /// Reconnects by itself; does not retry the command that failed.
    Single(ConnectionManager),
    /// Routes each command to its slot's node, follows `MOVED`/`ASK`, refreshes the topology.
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(connection) => connection.req_packed_command(cmd),
            RedisConnection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            RedisConnection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(connection) => connection.get_db(),
            RedisConnection::Cluster(connection) => connection.get_db(),
        }
    }
}

/// One user's Redis: its command connection and what it needs to subscribe.
#[derive(Clone)]
pub struct Redis {
    connection: RedisConnection,
    subscriber: Subscriber,
    timeouts: Timeouts,
}

/// How to open a pub/sub connection, which a command connection cannot carry.
#[derive(Clone)]
enum Subscriber {
    Single(redis::Client),
    /// A RESP3 client: cluster subscriptions arrive as push messages, which RESP2 lacks. Boxed:
    /// it is twice the size of the single-server client, and used once per subscription.
    Cluster(Box<ClusterClient>),
}

/// Retries inside the cluster client (after a `MOVED`, a reconnection, a refreshed slot map).
/// Few, because the caller's deadline of milliseconds bounds the whole call anyway.
const CLUSTER_RETRIES: u32 = 2;

impl Redis {
    /// Prepares the connection without connecting: Redis down at start-up is not an error.
    /// Must be called inside the tokio runtime (the connections' tasks are spawned on it).
    pub fn open(target: &RedisTarget, timeouts: Timeouts) -> Result<Redis, OpenError> {
        match target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.expose()).map_err(OpenError::Url)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeouts.connect))
                    .set_response_timeout(Some(timeouts.response))
                    .set_number_of_retries(1);
                let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)
                    .map_err(OpenError::Url)?;
                Ok(Redis {
                    connection: RedisConnection::Single(connection),
                    subscriber: Subscriber::Single(client),
                    timeouts,
                })
            }
            RedisTarget::Cluster(seeds) => {
                let urls = || seeds.iter().map(|url| url.expose().to_owned());
                let commands = ClusterClient::builder(urls())
                    .retries(CLUSTER_RETRIES)
                    .build()
                    .map_err(OpenError::ClusterUrls)?;
                let subscriptions = ClusterClient::builder(urls())
                    .retries(CLUSTER_RETRIES)
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .build()
                    .map_err(OpenError::ClusterUrls)?;
                let connection =
                    commands.get_pending_async_connection_with_config(cluster_config(timeouts));
                Ok(Redis {
                    connection: RedisConnection::Cluster(connection),
                    subscriber: Subscriber::Cluster(Box::new(subscriptions)),
                    timeouts,
                })
            }
        }
    }

    /// The command connection (a cheap clone).
    #[must_use]
    pub fn connection(&self) -> RedisConnection {
        self.connection.clone()
    }

    /// Opens a pub/sub connection subscribed to `channel`. The caller bounds it with its own
    /// deadline.
    pub async fn subscribe(&self, channel: &str) -> redis::RedisResult<Subscription> {
        match &self.subscriber {
            Subscriber::Single(client) => {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(channel).await?;
                Ok(Subscription::Single(Box::pin(pubsub.into_on_message())))
            }
            Subscriber::Cluster(client) => {
                let (sender, pushes) = mpsc::unbounded_channel();
                let config = cluster_config(self.timeouts).set_push_sender(sender);
                let mut connection = client.get_async_connection_with_config(config).await?;
                connection.subscribe(channel).await?;
                Ok(Subscription::Cluster {
                    _connection: connection,
                    pushes,
                })
            }
        }
    }
}

fn cluster_config(timeouts: Timeouts) -> ClusterConfig {
    ClusterConfig::new()
        .set_connection_timeout(timeouts.connect)
        .set_response_timeout(timeouts.response)
}

/// What a subscription hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A message published on the channel: its payload.
    Message(Vec<u8>),
    /// The subscription was made again (after a reconnection or a topology change): messages
    /// published meanwhile are lost, so the listener should catch up.
    Resubscribed,
}

/// A live subscription; dropping it unsubscribes.
pub enum Subscription {
    Single(Pin<Box<dyn Stream<Item = redis::Msg> + Send>>),
    Cluster {
        /// Keeps the subscription's connection (and so the pushes) alive.
        _connection: ClusterConnection,
        pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
    },
}

impl Subscription {
    /// The next notice; `None` when the subscription has ended (the connection to a node
    /// dropped), after which the caller subscribes again on a new connection and catches up.
    ///
    /// On a cluster, a disconnection ends it too, rather than trusting the client to
    /// re-subscribe: it tries once at once, which fails while the node is still down, and then
    /// never again (seen with every master restarted, `tests/api/cluster.rs`).
    pub async fn next(&mut self) -> Option<Notice> {
        match self {
            Subscription::Single(messages) => messages
                .next()
                .await
                .map(|message| Notice::Message(message.get_payload_bytes().to_vec())),
            Subscription::Cluster { pushes, .. } => loop {
                match heard(pushes.recv().await?) {
                    Heard::Notice(notice) => return Some(notice),
                    Heard::Disconnected => return None,
                    Heard::Other => {}
                }
            },
        }
    }
}

/// What a cluster push means to a subscriber.
#[derive(Debug, PartialEq, Eq)]
enum Heard {
    Notice(Notice),
    /// A node's connection closed: the subscription may be gone.
    Disconnected,
    /// Nothing the subscriber acts on (other kinds, malformed messages).
    Other,
}

fn heard(push: redis::PushInfo) -> Heard {
    match push.kind {
        PushKind::Message => match push.data.into_iter().nth(1) {
            Some(Value::BulkString(payload)) => Heard::Notice(Notice::Message(payload)),
            Some(Value::SimpleString(payload)) => {
                Heard::Notice(Notice::Message(payload.into_bytes()))
            }
            _ => Heard::Other,
        },
        PushKind::Subscribe => Heard::Notice(Notice::Resubscribed),
        PushKind::Disconnection => Heard::Disconnected,
        _ => Heard::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_lists_parse_and_never_print() {
        let target = RedisTarget::parse_cluster(" redis://:pw@a:1/ ,, redis://:pw@b:2/ ,").unwrap();
        assert_eq!(
            target,
            RedisTarget::cluster(["redis://:pw@a:1/", "redis://:pw@b:2/"])
        );
        assert!(target.is_cluster());
        let printed = format!("{target:?}");
        assert!(!printed.contains("pw"), "{printed}");
        assert!(printed.contains("2 seed nodes"), "{printed}");
        assert_eq!(RedisTarget::parse_cluster(" , "), Err(SeedListError::Empty));
        assert_eq!(
            RedisTarget::parse_cluster("redis://a:1/,http://:pw@b:2/"),
            Err(SeedListError::NotRedisUrl { position: 2 })
        );
        assert!(!format!("{:?}", RedisTarget::single("redis://:pw@a/")).contains("pw"));
    }

    #[test]
    fn cluster_pushes_become_notices() {
        let push = |kind, data| redis::PushInfo { kind, data };
        let channel = Value::BulkString(b"ns:invalidate".to_vec());
        assert_eq!(
            heard(push(
                PushKind::Message,
                vec![channel.clone(), Value::BulkString(b"42".to_vec())]
            )),
            Heard::Notice(Notice::Message(b"42".to_vec()))
        );
        assert_eq!(
            heard(push(PushKind::Subscribe, vec![channel, Value::Int(1)])),
            Heard::Notice(Notice::Resubscribed)
        );
        assert_eq!(
            heard(push(PushKind::Disconnection, vec![])),
            Heard::Disconnected
        );
        assert_eq!(heard(push(PushKind::Message, vec![])), Heard::Other);
        assert_eq!(heard(push(PushKind::Invalidate, vec![])), Heard::Other);
    }
}

/// Redis Cluster refuses a command or a script whose keys live in different slots
/// (`CROSSSLOT`). These tests hold the key layout to that: today every script and every command
/// touches one key (`INCR` then `PUBLISH` of an invalidation are two commands, not a
/// transaction), and a key that must share a slot with another says so with a hash tag.
#[cfg(test)]
mod cluster_slots {
    use std::collections::BTreeSet;

    use redis::cluster_routing::Slot;

    use crate::cache::l2::{BUMP_GENERATION, CATCH_UP_GENERATION, GET_OR_LOCK, SET_AND_UNLOCK};
    use crate::limit::shared::{quota_key, GCRA};
    use crate::redis_lock::DELETE_IF_EQUAL;
    use crate::upstream::token::READ_TOKEN;

    #[test]
    fn the_slot_function_is_the_one_of_the_cluster_specification() {
        // CRC16/XMODEM("123456789") = 0x31C3, the specification's check value.
        assert_eq!(Some(Slot::for_key("123456789")), Slot::new(0x31C3));
        assert_eq!(Some(Slot::for_key("foo")), Slot::new(12182));
        // Only the first non-empty `{…}` is hashed.
        assert_eq!(
            Slot::for_key("{user1000}.following"),
            Slot::for_key("{user1000}.followers")
        );
        // An empty `{}` is no tag: the whole key is hashed.
        assert_ne!(Slot::for_key("foo{}{bar}"), Slot::for_key("bar"));
    }

    fn keys_of(source: &str) -> BTreeSet<&str> {
        source
            .match_indices("KEYS[")
            .filter_map(|(at, _)| source[at + 5..].split(']').next())
            .collect()
    }

    #[test]
    fn every_script_touches_one_key_or_keys_under_one_tag() {
        for (name, source) in [
            ("GCRA", GCRA),
            ("READ_TOKEN", READ_TOKEN),
            ("DELETE_IF_EQUAL", DELETE_IF_EQUAL),
        ] {
            assert_eq!(
                keys_of(source),
                BTreeSet::from(["1"]),
                "{name}: a script with more keys needs them under one hash tag, and a test here"
            );
        }
        // The miss path's two scripts take a page and its fill lock, the generation's two take
        // the generation and its scopes' hash: one slot each, tested below.
        for source in [
            GET_OR_LOCK,
            SET_AND_UNLOCK,
            BUMP_GENERATION,
            CATCH_UP_GENERATION,
        ] {
            assert_eq!(keys_of(source), BTreeSet::from(["1", "2"]));
        }
    }

    #[tokio::test]
    async fn a_page_and_its_fill_lock_share_a_slot_in_every_generation() {
        use crate::cache::key::{CacheKey, Generation};
        use crate::request::{cursor::CursorKey, parse_listing};
        let l2 = crate::cache::l2::L2::new(
            &super::RedisTarget::single("redis://127.0.0.1:1/"),
            crate::cache::l2::L2Settings {
                namespace: "product-api".into(),
                ttl: std::time::Duration::from_secs(1),
                timeout: std::time::Duration::from_millis(50),
                lock_ttl: std::time::Duration::from_secs(1),
            },
        )
        .unwrap();
        let cursors = CursorKey::new(b"a cursor secret for this test only");
        for (query, shared) in [("sort=price&take=20", 0), ("category=a%7Bb%7Dc&take=5", 7)] {
            let listing = parse_listing(Some(query), &cursors).unwrap();
            let key = CacheKey::for_listing(&listing, Generation { shared, local: 0 });
            let (page, lock) = (l2.page_key(&key), l2.lock_key(&key));
            assert_eq!(
                Slot::for_key(&page),
                Slot::for_key(&lock),
                "{page} / {lock}"
            );
        }
    }

    #[tokio::test]
    async fn the_generation_and_its_scopes_share_a_slot() {
        for namespace in ["product-api", "staging:eu", "x"] {
            let l2 = crate::cache::l2::L2::new(
                &super::RedisTarget::single("redis://127.0.0.1:1/"),
                crate::cache::l2::L2Settings {
                    namespace: namespace.into(),
                    ttl: std::time::Duration::from_secs(1),
                    timeout: std::time::Duration::from_millis(50),
                    lock_ttl: std::time::Duration::from_secs(1),
                },
            )
            .unwrap();
            assert_eq!(
                Slot::for_key(l2.generation_key()),
                Slot::for_key(l2.scopes_key()),
                "{namespace}"
            );
        }
    }

    #[test]
    fn a_clients_quota_key_hashes_on_its_tag_whatever_the_namespace() {
        let key = quota_key("product-api", "listing", "ip:203.0.113.7");
        assert_eq!(key, "product-api:ratelimit:{listing:ip:203.0.113.7}");
        assert_eq!(Slot::for_key(&key), Slot::for_key("listing:ip:203.0.113.7"));
        assert_eq!(
            Slot::for_key(&key),
            Slot::for_key(quota_key("staging", "listing", "ip:203.0.113.7"))
        );
    }
}
