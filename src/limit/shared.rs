//! The quota shared by every instance: GCRA in Redis, one atomic Lua script per call.
//!
//! An instance does not ask Redis for every request: it takes a *lease* of several requests'
//! worth of quota at once (the script grants up to the number asked for, as many as fit) and
//! spends it locally. Leased quota is already counted in Redis, so instances together never
//! accept more than Redis granted; what an instance may hold unspent when a window starts —
//! at most one lease — is the documented slack.
//!
//! The script reads Redis' own clock (`TIME`), so instances with skewed clocks agree. Keys carry
//! a hash tag (`{…}`) so the script's key always lives in one slot on Redis Cluster.

use std::time::Duration;

use super::client::ClientId;
use super::policy::Policy;
use crate::cache::l2::Breaker;
use crate::redis_connection::{OpenError, Redis, RedisConnection, RedisTarget, Timeouts};

/// GCRA over microseconds: ARGV = emission interval, burst capacity, requests wanted.
/// Returns `{granted, remaining, reset_us, retry_after_us}`.
pub(crate) const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local ceiling = now + interval * capacity
local room = math.floor((ceiling - tat) / interval)
local granted = math.min(want, room)
if granted < 1 then
  return {0, 0, tat - now, tat + interval - ceiling}
end
tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
return {granted, math.floor((ceiling - tat) / interval), tat - now, 0}
";

/// What Redis answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Requests granted, 0 when the client is over its quota.
    pub granted: u32,
    /// Requests the client could still make at once after this grant.
    pub remaining: u32,
    /// Until the quota is whole again.
    pub reset: Duration,
    /// When `granted` is 0: until one request fits.
    pub retry_after: Duration,
}

/// The Redis side of the limiter.
pub struct SharedQuota {
    connection: RedisConnection,
    script: redis::Script,
    namespace: String,
    timeout: Duration,
    breaker: Breaker,
}

impl SharedQuota {
    /// Creates the client without connecting: Redis down at start-up is not an error.
    pub fn new(redis: &RedisTarget, namespace: &str, timeout: Duration) -> Result<Self, OpenError> {
        let timeouts = Timeouts {
            connect: timeout.max(Duration::from_millis(100)),
            response: timeout,
        };
        Ok(SharedQuota {
            connection: Redis::open(redis, timeouts)?.connection(),
            script: redis::Script::new(GCRA),
            namespace: namespace.to_owned(),
            timeout,
            breaker: Breaker::default(),
        })
    }

    /// Takes up to `want` requests of `client`'s quota; `None` when Redis did not answer in
    /// time (or its breaker is open), which the caller treats as "fall back".
    pub async fn take(&self, policy: &Policy, client: &ClientId, want: u32) -> Option<Grant> {
        if self.breaker.is_open() {
            return None;
        }
        let key = quota_key(&self.namespace, policy.kind.name(), &client.key_part());
        let interval_us = u64::try_from(policy.interval().as_micros()).unwrap_or(u64::MAX);
        let mut invocation = self.script.key(key);
        invocation
            .arg(interval_us.max(1))
            .arg(policy.burst.get())
            .arg(want.max(1));
        let mut connection = self.connection.clone();
        let call = invocation.invoke_async::<(i64, i64, i64, i64)>(&mut connection);
        self.breaker
            .run(self.timeout, "using the local rate-limit fallback", call)
            .await
            .map(grant_of)
    }
}

/// The key of one client's quota under one policy. The hash tag (`{policy:client}`) puts it in
/// the slot of that pair on Redis Cluster, whatever the namespace.
pub(crate) fn quota_key(namespace: &str, policy: &str, client: &str) -> String {
    format!("{namespace}:ratelimit:{{{policy}:{client}}}")
}

fn grant_of((granted, remaining, reset_us, retry_us): (i64, i64, i64, i64)) -> Grant {
    let micros = |value: i64| Duration::from_micros(u64::try_from(value).unwrap_or(0));
    Grant {
        granted: u32::try_from(granted).unwrap_or(0),
        remaining: u32::try_from(remaining).unwrap_or(0),
        reset: micros(reset_us),
        retry_after: micros(retry_us),
    }
}
