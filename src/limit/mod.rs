//! Rate limiting: GCRA per client and policy, in two layers.
//!
//! 1. An in-process governor limiter with the whole policy: a client over its quota on this
//!    instance alone is refused without touching Redis.
//! 2. The quota shared by every instance, in Redis ([`shared`]), taken in leases so the hot path
//!    pays a Redis round trip only once per lease, not per request.
//!
//! Redis down or slow (its own millisecond deadline, then a breaker) switches to a third
//! limiter: governor again, with the policy divided by `RATE_LIMIT_INSTANCES`, so the fleet
//! stays near its quota without Redis — never unlimited, never an error to the client.
//!
//! Slack: instances together accept at most what Redis granted, plus what each held unspent in
//! a lease when a window began: at most `lease_max` per instance and client (see `lease_max`).

pub mod client;
pub mod policy;
pub mod shared;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::DefaultKeyedRateLimiter;
use http::{HeaderName, HeaderValue};

use self::client::{ClientId, ClientResolver};
use self::policy::{Policies, Policy, PolicyKind};
use self::shared::{Grant, SharedQuota};
use crate::response::HttpResponse;

/// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// How long per-client state is kept after a client's last request.
const IDLE_FORGET: Duration = Duration::from_secs(60);
/// A lease spent within this long makes the next one twice as large.
const LEASE_RAMP: Duration = Duration::from_secs(1);

/// Settings of the limiter.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub policies: Policies,
    pub clients: ClientResolver,
    /// The most one Redis call of the limiter may take before the local fallback decides.
    pub redis_timeout: Duration,
    /// How many instances share a policy while Redis is unreachable (each takes 1/N).
    pub instances: u32,
}

/// The limiter of one process.
pub struct RateLimiter {
    listing: Option<PolicyLimiter>,
    webhook: Option<PolicyLimiter>,
    clients: ClientResolver,
    shared: SharedQuota,
    /// Decisions taken by the divided local fallback (also `rate_limit_fallbacks_total`).
    fallbacks: AtomicU64,
}

/// The outcome of one check, and the headers it puts on the response.
pub struct Verdict {
    policy_header: HeaderValue,
    name: &'static str,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed { remaining: u32, reset: Duration },
    Limited { retry_after: Duration },
}

/// Which layer decided (a metric label).
#[derive(Debug, Clone, Copy)]
pub enum Layer {
    Local,
    Lease,
    Shared,
    Fallback,
}

impl Layer {
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Layer::Local => "local",
            Layer::Lease => "lease",
            Layer::Shared => "shared",
            Layer::Fallback => "fallback",
        }
    }
}

impl RateLimiter {
    /// Builds the limiter and a janitor that forgets idle clients (governor's keyed state never
    /// forgets on its own). Redis is not contacted until the first lease.
    pub fn new(
        settings: &RateLimitSettings,
        redis: &crate::redis_connection::RedisTarget,
        namespace: &str,
    ) -> Result<Arc<RateLimiter>, crate::redis_connection::OpenError> {
        let build = |kind| {
            settings
                .policies
                .get(kind)
                .map(|policy| PolicyLimiter::new(policy.clone(), settings.instances))
        };
        let limiter = Arc::new(RateLimiter {
            listing: build(PolicyKind::Listing),
            webhook: build(PolicyKind::Webhook),
            clients: settings.clients.clone(),
            shared: SharedQuota::new(redis, namespace, settings.redis_timeout)?,
            fallbacks: AtomicU64::new(0),
        });
        spawn_janitor(Arc::downgrade(&limiter));
        Ok(limiter)
    }

    /// How many decisions this limiter left to the local fallback (Redis unreachable).
    #[must_use]
    pub fn fallback_decisions(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    #[must_use]
    pub fn clients(&self) -> &ClientResolver {
        &self.clients
    }

    fn policy(&self, kind: PolicyKind) -> Option<&PolicyLimiter> {
        match kind {
            PolicyKind::Listing => self.listing.as_ref(),
            PolicyKind::Webhook => self.webhook.as_ref(),
        }
    }

    /// Whether `client` was refused recently and is still waiting: a conditional request from it
    /// is then not worth evaluating.
    #[must_use]
    pub fn is_blocked(&self, kind: PolicyKind, client: &ClientId) -> bool {
        self.policy(kind)
            .is_some_and(|limiter| limiter.blocked_until(client, Instant::now()).is_some())
    }

    /// Charges one request of `client` to `kind`; `None` when that policy is off.
    pub async fn check(&self, kind: PolicyKind, client: &ClientId) -> Option<Verdict> {
        let limiter = self.policy(kind)?;
        let (outcome, layer) = self.decide(limiter, client).await;
        crate::meter::rate_limit_decision(
            kind.name(),
            layer.label(),
            matches!(outcome, Outcome::Allowed { .. }),
        );
        Some(Verdict {
            policy_header: limiter.header.clone(),
            name: kind.name(),
            outcome,
        })
    }

    async fn decide(&self, limiter: &PolicyLimiter, client: &ClientId) -> (Outcome, Layer) {
        let now = Instant::now();
        if let Some(until) = limiter.blocked_until(client, now) {
            return (limited(until - now), Layer::Lease);
        }
        let local_remaining = match limiter.check_local(client) {
            Ok(remaining) => remaining,
            Err(wait) => {
                limiter.block(client, now + wait);
                return (limited(wait), Layer::Local);
            }
        };
        let want = match limiter.spend_lease(client, now) {
            LeaseSpend::Spent(shared_remaining) => {
                let remaining = local_remaining.min(shared_remaining);
                return (limiter.allowed(remaining), Layer::Lease);
            }
            LeaseSpend::Empty { want } => want,
        };
        // Boxed: a Redis round trip once per lease; inline, its state would size every
        // request's future.
        match Box::pin(self.shared.take(&limiter.policy, client, want)).await {
            Some(grant) if grant.granted > 0 => {
                limiter.store_lease(client, grant, now);
                let remaining = local_remaining.min(grant.remaining + grant.granted - 1);
                (limiter.allowed(remaining), Layer::Shared)
            }
            Some(grant) => {
                limiter.block(client, now + grant.retry_after);
                (limited(grant.retry_after), Layer::Shared)
            }
            None => {
                crate::meter::rate_limit_fallback(limiter.policy.kind.name());
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                let outcome = limiter.check_fallback(client);
                if let Outcome::Limited { retry_after } = outcome {
                    limiter.block(client, now + retry_after);
                }
                (outcome, Layer::Fallback)
            }
        }
    }

    fn forget_idle(&self) {
        for limiter in [&self.listing, &self.webhook].into_iter().flatten() {
            limiter.forget_idle(Instant::now());
        }
    }
}

fn limited(retry_after: Duration) -> Outcome {
    Outcome::Limited { retry_after }
}

fn spawn_janitor(limiter: Weak<RateLimiter>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(IDLE_FORGET);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(limiter) = limiter.upgrade() else {
                return;
            };
            limiter.forget_idle();
        }
    });
}

impl Verdict {
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        matches!(self.outcome, Outcome::Allowed { .. })
    }

    /// Adds `RateLimit-Policy` and `RateLimit` to a response.
    pub fn stamp(&self, response: &mut HttpResponse) {
        let (remaining, reset) = match self.outcome {
            Outcome::Allowed { remaining, reset } => (remaining, reset),
            Outcome::Limited { retry_after } => (0, retry_after),
        };
        let value = format!("\"{}\";r={remaining};t={}", self.name, whole_seconds(reset));
        let headers = response.headers_mut();
        headers.insert(RATELIMIT_POLICY, self.policy_header.clone());
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(RATELIMIT, value);
        }
    }
}

/// Seconds rounded up, so a client that waits that long is let in.
#[must_use]
pub fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// One policy's limiters and leases.
struct PolicyLimiter {
    policy: Policy,
    header: HeaderValue,
    local: DefaultKeyedRateLimiter<ClientId, StateInformationMiddleware>,
    fallback: DefaultKeyedRateLimiter<ClientId>,
    leases: Mutex<HashMap<ClientId, Lease>>,
    /// The largest lease: a tenth of the burst, at most 32. Bounds the slack per instance.
    lease_max: u32,
    clock: DefaultClock,
}

/// Quota this instance took from Redis for one client and has not spent yet.
struct Lease {
    tokens: u32,
    /// What Redis said the client had left after the last grant.
    shared_remaining: u32,
    want: u32,
    refilled: Option<Instant>,
    blocked_until: Option<Instant>,
    last_seen: Instant,
}

enum LeaseSpend {
    /// Spent one leased request; the client's remaining shared quota, as far as known.
    Spent(u32),
    /// Nothing leased: ask Redis for this many.
    Empty { want: u32 },
}

impl PolicyLimiter {
    fn new(policy: Policy, instances: u32) -> PolicyLimiter {
        let local = governor::RateLimiter::dashmap(policy.governor_quota(1))
            .with_middleware::<StateInformationMiddleware>();
        let fallback = governor::RateLimiter::dashmap(policy.governor_quota(instances));
        PolicyLimiter {
            header: policy.header(),
            lease_max: (policy.burst.get() / 10).clamp(1, 32),
            policy,
            local,
            fallback,
            leases: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, Lease>> {
        self.leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check_local(&self, client: &ClientId) -> Result<u32, Duration> {
        self.local
            .check_key(client)
            .map(|snapshot| snapshot.remaining_burst_capacity())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    fn check_fallback(&self, client: &ClientId) -> Outcome {
        match self.fallback.check_key(client) {
            Ok(()) => self.allowed(0),
            Err(not_until) => limited(not_until.wait_time_from(self.clock.now())),
        }
    }

    /// `remaining` with the time until the quota is whole again at that level.
    fn allowed(&self, remaining: u32) -> Outcome {
        let used = self.policy.burst.get().saturating_sub(remaining);
        Outcome::Allowed {
            remaining,
            reset: self.policy.interval() * used,
        }
    }

    fn blocked_until(&self, client: &ClientId, now: Instant) -> Option<Instant> {
        let leases = self.leases();
        let until = leases.get(client)?.blocked_until?;
        (now < until).then_some(until)
    }

    fn block(&self, client: &ClientId, until: Instant) {
        let mut leases = self.leases();
        let lease = leases
            .entry(client.clone())
            .or_insert_with(|| Lease::new(until));
        lease.blocked_until = Some(until);
    }

    fn spend_lease(&self, client: &ClientId, now: Instant) -> LeaseSpend {
        let mut leases = self.leases();
        let lease = leases
            .entry(client.clone())
            .or_insert_with(|| Lease::new(now));
        lease.last_seen = now;
        if lease.tokens > 0 {
            lease.tokens -= 1;
            return LeaseSpend::Spent(lease.shared_remaining + lease.tokens);
        }
        lease.want = match lease.refilled {
            Some(at) if now.duration_since(at) < LEASE_RAMP => (lease.want * 2).min(self.lease_max),
            _ => 1,
        };
        LeaseSpend::Empty { want: lease.want }
    }

    fn store_lease(&self, client: &ClientId, grant: Grant, now: Instant) {
        let mut leases = self.leases();
        let lease = leases
            .entry(client.clone())
            .or_insert_with(|| Lease::new(now));
        lease.tokens += grant.granted - 1;
        lease.shared_remaining = grant.remaining;
        lease.refilled = Some(now);
    }

    /// Drops clients idle for [`IDLE_FORGET`]; an unspent lease is lost, which only errs on the
    /// strict side.
    fn forget_idle(&self, now: Instant) {
        self.leases()
            .retain(|_, lease| now.duration_since(lease.last_seen) < IDLE_FORGET);
        self.local.retain_recent();
        self.fallback.retain_recent();
    }
}

impl Lease {
    fn new(now: Instant) -> Lease {
        Lease {
            tokens: 0,
            shared_remaining: 0,
            want: 1,
            refilled: None,
            blocked_until: None,
            last_seen: now,
        }
    }
}
