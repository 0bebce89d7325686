//! Redis Cluster (`REDIS_CLUSTER_URLS`): the single-Redis behaviours, checked on the test
//! cluster that `scripts/test` starts (`TEST_REDIS_CLUSTER_URLS`, three masters), and one master
//! killed mid-test on a cluster of the test's own.
//!
//! Each test also reads the cluster directly, so a pass cannot come from the single Redis or
//! from a local fallback.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use product_api::redis_connection::RedisTarget;
use redis::cluster_async::ClusterConnection;
use serde_json::json;

use crate::caching::two_instances_share_l2_and_one_fill;
use crate::helpers::{
    eventually, now_seconds, random_suffix, redis_cluster_urls, single_redis_keys, spawn_app,
    Options, TestApp, TestDatabase,
};
use crate::rate_limit::two_instances_hold_one_quota;
use crate::upstream::one_token_for_100_callers_of_two_providers;
use crate::webhooks::{a_change_reaches_another_instance, SEEN_EVENT};

/// A direct connection to the test cluster, to look at what the service stored.
async fn cluster_connection(urls: &str) -> ClusterConnection {
    redis::cluster::ClusterClient::new(urls.split(',').map(str::trim))
        .unwrap()
        .get_async_connection()
        .await
        .unwrap()
}

/// The keys of `namespace` on every master of the cluster (`KEYS` goes to all of them).
async fn cluster_keys(connection: &mut ClusterConnection, namespace: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(format!("{namespace}:*"))
        .query_async(connection)
        .await
        .unwrap()
}

fn event(external_id: &str, name: &str) -> Vec<u8> {
    crate::webhooks::event(
        "product.created",
        "2026-01-01T00:00:00Z",
        external_id,
        name,
        "tops",
    )
}

#[tokio::test]
async fn l2_is_shared_and_a_fill_is_coalesced_across_two_instances_on_the_cluster() {
    let database = TestDatabase::seeded(2_000).await;
    let options = Options::new(&database).on_redis_cluster();
    let (first, second) = two_instances_share_l2_and_one_fill(&options).await;

    let mut cluster = cluster_connection(&redis_cluster_urls()).await;
    let keys = cluster_keys(&mut cluster, &options.namespace).await;
    assert!(
        keys.iter().filter(|key| key.contains(":page:")).count() >= 2,
        "both pages are in the cluster: {keys:?}"
    );
    assert!(
        !keys.iter().any(|key| key.contains(":lock:")),
        "fill locks are released: {keys:?}"
    );
    assert_eq!(
        single_redis_keys(&options.namespace).await,
        Vec::<String>::new()
    );
    assert_eq!(first.get("/ready").await.json()["redis"], "up");
    first.stop().await;
    second.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_webhook_invalidates_the_other_instance_and_a_duplicate_is_known_on_the_cluster() {
    let database = TestDatabase::seeded(200).await;
    let options = Options::new(&database).on_redis_cluster();
    let (writer, reader) = a_change_reaches_another_instance(&options).await;

    let again = reader
        .deliver(SEEN_EVENT, now_seconds(), &event("ext-4", "Seen Again"))
        .await;
    assert_eq!(again.json()["status"], "duplicate");
    let mut cluster = cluster_connection(&redis_cluster_urls()).await;
    let seen: bool = redis::cmd("EXISTS")
        .arg(format!("{}:webhook:{SEEN_EVENT}", options.namespace))
        .query_async(&mut cluster)
        .await
        .unwrap();
    assert!(seen, "the fast duplicate check's key is in the cluster");
    let generation: u64 = redis::cmd("GET")
        .arg(format!("{}:generation", options.namespace))
        .query_async(&mut cluster)
        .await
        .unwrap();
    assert_eq!(generation, 1, "the invalidation went through the cluster");
    assert_eq!(
        single_redis_keys(&options.namespace).await,
        Vec::<String>::new()
    );
    writer.stop().await;
    reader.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn two_instances_on_the_cluster_hold_one_rate_limit_quota() {
    let database = TestDatabase::seeded(100).await;
    let options = Options::new(&database).on_redis_cluster();
    let (a, b) = two_instances_hold_one_quota(options.clone()).await;
    assert_eq!(
        a.app.limiter().fallback_decisions() + b.app.limiter().fallback_decisions(),
        0,
        "every decision came from the shared quota, none from the local fallback"
    );
    let mut cluster = cluster_connection(&redis_cluster_urls()).await;
    let keys = cluster_keys(&mut cluster, &options.namespace).await;
    let quota_key = format!("{}:ratelimit:{{listing:ip:127.0.0.1}}", options.namespace);
    assert!(
        keys.contains(&quota_key),
        "the quota is in the cluster: {keys:?}"
    );
    a.stop().await;
    b.stop().await;
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_request_for_100_callers_across_two_providers_on_the_cluster() {
    let namespace = format!("test-cluster-{}", random_suffix());
    let target = RedisTarget::parse_cluster(&redis_cluster_urls()).unwrap();
    let (_tokens, token) = one_token_for_100_callers_of_two_providers(&target, &namespace).await;

    let mut cluster = cluster_connection(&redis_cluster_urls()).await;
    let stored: String = redis::cmd("GET")
        .arg(format!("{namespace}:oauth:token"))
        .query_async(&mut cluster)
        .await
        .unwrap();
    assert_eq!(stored, token.expose());
    let locked: bool = redis::cmd("EXISTS")
        .arg(format!("{namespace}:oauth:lock"))
        .query_async(&mut cluster)
        .await
        .unwrap();
    assert!(!locked, "the refresh lock is released");
}

// ---------------------------------------------------------------------------------------------
// A master killed mid-test
// ---------------------------------------------------------------------------------------------

/// A three-master Redis Cluster of one test's own, on free ports, so killing a node disturbs no
/// other test. Its processes are children of the test: killed by their handles, never by name.
struct OwnCluster {
    dir: PathBuf,
    nodes: Vec<ClusterNode>,
}

struct ClusterNode {
    port: u16,
    bus_port: u16,
    /// Its configuration (`nodes.conf`, kept across a restart: the node rejoins) and log.
    dir: PathBuf,
    process: Option<tokio::process::Child>,
}

impl ClusterNode {
    fn spawn(&mut self) {
        let process = tokio::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--cluster-port", &self.bus_port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(self.dir.join("nodes.conf"))
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (scripts/lib/services.sh installs it)");
        self.process = Some(process);
    }
}

/// How long a node may be unreachable before the others declare it failed (and, with no
/// replica to promote, the cluster as a whole failed: `cluster_state:fail`).
const NODE_TIMEOUT_MS: u64 = 1_000;

impl OwnCluster {
    async fn start() -> OwnCluster {
        let dir = std::env::temp_dir().join(format!("product-api-cluster-{}", random_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        // Six distinct free ports: three for clients, three for the cluster bus.
        let listeners: Vec<TcpListener> = (0..6)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|listener| listener.local_addr().unwrap().port())
            .collect();
        drop(listeners);
        let mut nodes = Vec::new();
        for index in 0..3 {
            let mut node = ClusterNode {
                port: ports[index],
                bus_port: ports[index + 3],
                dir: dir.join(format!("node-{index}")),
                process: None,
            };
            std::fs::create_dir_all(&node.dir).unwrap();
            node.spawn();
            nodes.push(node);
        }
        let cluster = OwnCluster { dir, nodes };
        cluster.wait_for_pings().await;
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let created = tokio::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .expect("redis-cli");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        cluster.wait_for_state("ok").await;
        cluster
    }

    fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("redis://127.0.0.1:{}/", node.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    async fn wait_for_pings(&self) {
        for node in self.nodes.iter().filter(|node| node.process.is_some()) {
            let port = node.port;
            eventually(
                Duration::from_secs(10),
                "a node answers PING",
                || async move {
                    node_command(port, redis::cmd("PING"))
                        .await
                        .is_some_and(|reply| reply == "PONG")
                },
            )
            .await;
        }
    }

    /// Starts a killed node again on its port and configuration: it rejoins the cluster.
    async fn restart(&mut self, index: usize) {
        self.nodes[index].spawn();
        self.wait_for_pings().await;
    }

    async fn wait_for_state(&self, state: &str) {
        let expected = format!("cluster_state:{state}");
        for node in self.nodes.iter().filter(|node| node.process.is_some()) {
            let port = node.port;
            let expected = expected.as_str();
            eventually(Duration::from_secs(30), expected, || async move {
                node_command(port, redis::cmd("CLUSTER").arg("INFO").clone())
                    .await
                    .is_some_and(|info| info.contains(expected))
            })
            .await;
        }
    }

    /// The index of the node serving `key`'s slot, as the cluster itself says.
    async fn owner_of(&self, key: &str) -> usize {
        let port = self.nodes[0].port;
        let slot: u16 = node_command(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).clone())
            .await
            .unwrap()
            .parse()
            .unwrap();
        let nodes = node_command(port, redis::cmd("CLUSTER").arg("NODES").clone())
            .await
            .unwrap();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let serves = fields.iter().skip(8).any(|range| {
                let (start, end) = range.split_once('-').unwrap_or((range, range));
                let (start, end): (u16, u16) = (start.parse().unwrap(), end.parse().unwrap());
                (start..=end).contains(&slot)
            });
            if serves {
                let address = fields[1].split('@').next().unwrap();
                return self
                    .nodes
                    .iter()
                    .position(|node| format!("127.0.0.1:{}", node.port) == address)
                    .unwrap();
            }
        }
        panic!("no node serves slot {slot}");
    }

    /// Kills one node's process (SIGKILL: no goodbye to the clients) and reaps it.
    async fn kill(&mut self, index: usize) {
        let mut process = self.nodes[index].process.take().unwrap();
        process.kill().await.unwrap();
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(process) = node.process.as_mut() {
                let _ = process.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One command to one node, as text; `None` when the node does not answer.
async fn node_command(port: u16, command: redis::Cmd) -> Option<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let mut connection = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()?;
    let reply: redis::Value = command.query_async(&mut connection).await.ok()?;
    match reply {
        redis::Value::Int(number) => Some(number.to_string()),
        other => redis::from_redis_value(other).ok(),
    }
}

/// What one request of the mixed load got, and how long it took.
struct Answer {
    what: &'static str,
    status: u16,
    body: serde_json::Value,
    took: Duration,
}

async fn timed(app: &TestApp, what: &'static str, url: String) -> Answer {
    let started = Instant::now();
    let reply = app.get(&url).await;
    Answer {
        what,
        status: reply.status,
        body: serde_json::from_slice(&reply.body).unwrap_or_default(),
        took: started.elapsed(),
    }
}

async fn timed_delivery(app: &TestApp, id: String, now: i64, body: &[u8]) -> Answer {
    let started = Instant::now();
    let reply = app.deliver(&id, now, body).await;
    Answer {
        what: "webhook",
        status: reply.status,
        body: serde_json::from_slice(&reply.body).unwrap_or_default(),
        took: started.elapsed(),
    }
}

/// The documented failure behaviour: with a master dead (then the whole cluster failed, as it
/// has no replica), no request fails. Listings are 200 (L2 misses go to MySQL), deliveries are
/// processed or known duplicates (MySQL's record), `/ready` is 200 and reports Redis down, and
/// the limiter decides locally. Every answer comes within the Redis deadlines plus a database
/// read: a listing makes at most four Redis calls (L2 read, fill lock, L2 write, unlock) of
/// `REDIS_TIMEOUT_MS` each, and the limiter one of `RATE_LIMIT_REDIS_TIMEOUT_MS`. When the node
/// is back, the instances use the cluster again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_fails_no_request_and_nothing_waits_past_the_deadlines() {
    let mut cluster = OwnCluster::start().await;
    let database = TestDatabase::seeded(300).await;
    let options = own_cluster_options(&database, &cluster);
    let a = spawn_app(&options).await;
    let b = spawn_app(&options).await;
    l2_is_shared_again(&a, &b).await;
    assert_eq!(a.get("/ready").await.json()["redis"], "up");

    // The node holding this client's quota dies: the limiter cannot reach it from the first
    // request on.
    let quota_key = format!("{}:ratelimit:{{listing:ip:127.0.0.1}}", options.namespace);
    let victim = cluster.owner_of(&quota_key).await;
    let fallbacks_before =
        a.app.limiter().fallback_decisions() + b.app.limiter().fallback_decisions();
    cluster.kill(victim).await;

    // Past the node timeout, so both phases are covered: one master refused, then the cluster
    // declared failed (every node answers CLUSTERDOWN).
    let answers = mixed_load(&a, &b, Duration::from_millis(3 * NODE_TIMEOUT_MS + 500)).await;
    // 4 × 100 ms of Redis, 25 ms of limiter, a loopback MySQL read, and a loaded CI machine.
    let bound = Duration::from_secs(2);
    for answer in &answers {
        assert!(
            answer.took <= bound,
            "{} took {:?} (bound {bound:?})",
            answer.what,
            answer.took
        );
        assert_eq!(
            answer.status, 200,
            "{} answered {}",
            answer.what, answer.body
        );
        if answer.what == "webhook" {
            let status = answer.body["status"].as_str().unwrap();
            assert!(["processed", "duplicate"].contains(&status), "{status}");
        }
    }
    assert!(
        answers
            .iter()
            .any(|answer| answer.what == "ready" && answer.body["redis"] == "down"),
        "/ready reported Redis down"
    );
    assert!(
        a.app.limiter().fallback_decisions() + b.app.limiter().fallback_decisions()
            > fallbacks_before,
        "the limiter fell back to its local quota"
    );

    // The node comes back on its port and configuration: the cluster is whole again.
    cluster.restart(victim).await;
    cluster.wait_for_state("ok").await;
    l2_is_shared_again(&a, &b).await;
    a.stop().await;
    b.stop().await;
    database.drop_database().await;
    drop(cluster);
}

/// An instance that starts while the whole cluster is down starts and serves; once the cluster
/// is back (empty: no persistence) the instances agree on the generation again (one above the
/// highest, written back by the instance that had it) and share L2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_started_with_the_cluster_down_joins_once_it_is_back_empty() {
    let mut cluster = OwnCluster::start().await;
    let database = TestDatabase::seeded(300).await;
    let options = own_cluster_options(&database, &cluster);
    let early = spawn_app(&options).await;
    let change = event("ext-before", "Before The Restart");
    assert_eq!(
        early
            .deliver("evt-before", now_seconds(), &change)
            .await
            .json()["status"],
        "processed"
    );
    // The delivery's invalidation is batched (INVALIDATION_BATCH_MS): wait for it.
    eventually(
        Duration::from_secs(2),
        "the change moved the shared generation",
        || async { early.app.cache().generation().shared >= 1 },
    )
    .await;
    let generation = early.app.cache().generation().shared;

    for index in 0..3 {
        cluster.kill(index).await;
    }
    let late = spawn_app(&options).await;
    assert_eq!(late.get("/products/v1?take=7").await.status, 200);
    let ready = late.get("/ready").await;
    assert_eq!(
        (ready.status, ready.json()["redis"].clone()),
        (200, json!("down"))
    );
    for index in 0..3 {
        cluster.restart(index).await;
    }
    cluster.wait_for_state("ok").await;
    l2_is_shared_again(&late, &early).await;
    // Above every generation seen before: a change counted only in the lost key is covered.
    assert_eq!(late.app.cache().generation().shared, generation + 1);
    assert_eq!(early.app.cache().generation().shared, generation + 1);
    eventually(
        Duration::from_secs(5),
        "/ready reports Redis up",
        || async { late.get("/ready").await.json()["redis"] == "up" },
    )
    .await;
    early.stop().await;
    late.stop().await;
    database.drop_database().await;
    drop(cluster);
}

/// Instances on `cluster` with short Redis deadlines, a limiter on whose quota the tests
/// never exhaust (a refusal would hide a failure), and every miss written to L2 (so each
/// listing makes all its Redis calls, and one request shows whether L2 is shared).
fn own_cluster_options(database: &TestDatabase, cluster: &OwnCluster) -> Options {
    Options::new(database)
        .with("L2_ADMISSION", "every-miss")
        .with("REDIS_CLUSTER_URLS", cluster.urls())
        .with("REDIS_TIMEOUT_MS", "100")
        .with("RATE_LIMIT_PRESET", "standard")
        .with("RATE_LIMIT_LISTING", "600000/min,burst=10000")
        .with("RATE_LIMIT_WEBHOOK", "600000/min,burst=10000")
}

/// Rounds of every kind of request on both instances for `how_long`: cached and uncached
/// listings, `/ready`, a new delivery and a repeated one.
async fn mixed_load(a: &TestApp, b: &TestApp, how_long: Duration) -> Vec<Answer> {
    let duplicate = event("ext-dup", "Delivered Before");
    let now = now_seconds();
    assert_eq!(a.deliver("evt-dup", now, &duplicate).await.status, 200);
    let mut answers = Vec::new();
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < how_long {
        round += 1;
        let fresh = event(&format!("ext-{round}"), "Killed Master Lamp");
        let mut load = Vec::new();
        for app in [a, b] {
            for take in 1..=4 {
                let cached = format!("/products/v1?take={take}&sort=price");
                load.push(timed(app, "listing", cached));
            }
            let uncached = format!("/products/v1?take={}&category=tops", 10 + round % 90);
            load.push(timed(app, "listing", uncached));
            load.push(timed(app, "ready", "/ready".into()));
        }
        answers.extend(join_all(load).await);
        answers.push(timed_delivery(a, format!("evt-{round}"), now, &fresh).await);
        answers.push(timed_delivery(b, "evt-dup".into(), now, &duplicate).await);
    }
    answers
}

/// Waits (bounded) until a page `filler` fills is an L2 hit on `reader`: each try a page
/// neither has cached yet.
async fn l2_is_shared_again(filler: &TestApp, reader: &TestApp) {
    const SORTS: [&str; 4] = ["price", "-price", "created_at", "-created_at"];
    let tries = AtomicUsize::new(0);
    eventually(
        Duration::from_secs(15),
        "a page filled by one instance is an L2 hit on the other",
        || {
            let attempt = tries.fetch_add(1, Ordering::Relaxed);
            let url = format!(
                "/products/v1?take={}&sort={}",
                20 + attempt % 80,
                SORTS[attempt / 80 % 4]
            );
            async move {
                filler.get(&url).await.status == 200
                    && reader.get(&url).await.header("x-cache") == Some("HIT-L2")
            }
        },
    )
    .await;
}
