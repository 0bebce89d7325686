//! Cache stage: finished responses (body, ETag, Link) in L1 (`quick_cache`) over L2 (Redis).
//!
//! Owns coalescing: concurrent misses of a key make one load per instance (L1's placeholders)
//! and, across instances, one per key while the Redis fill lock is held; waiters read L2 and
//! load themselves only when the holder is too slow. Never talks to MySQL itself: the caller
//! passes the load.

pub mod admission;
pub mod generation;
pub mod key;
pub mod l1;
pub mod l2;
pub mod probe;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderValue;
use tokio::sync::Notify;

use crate::redis_lock::Lock;
use crate::store::StoreError;
use admission::Admission;
pub use admission::AdmissionPolicy;
pub use generation::Scope;
use generation::{Generations, PendingScope, SharedState};
pub use key::{CacheKey, Generation};
use l1::{Fill, Loaded, L1};
use l2::{Invalidation, Lookup, L2};
use probe::Probe;
pub use probe::ProbePolicy;

/// A finished listing response, as cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedPage {
    pub body: Bytes,
    pub etag: HeaderValue,
    /// The `Link: <…>; rel="next"` value when there is a next page.
    pub next_link: Option<HeaderValue>,
}

/// Where a response came from, for `X-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    HitL1,
    HitL2,
    Miss,
}

impl CacheStatus {
    #[must_use]
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            CacheStatus::HitL1 => "HIT-L1",
            CacheStatus::HitL2 => "HIT-L2",
            CacheStatus::Miss => "MISS",
        })
    }
}

/// The two cache levels and the coalescing rules.
pub struct ResponseCache {
    l1: L1,
    l2: L2,
    /// How long a waiter waits for another instance's fill before loading itself.
    lock_wait: Duration,
    /// The generations last seen (from Redis or its pub/sub channel), per category.
    generations: Generations,
    /// Called before this instance moves to a new generation (its own invalidation or another
    /// instance's): the store then reads listings from the primary for the replicas' lag bound,
    /// so no page of the new generation is filled from a replica that lacks the change.
    before_invalidation: Option<Box<dyn Fn() + Send + Sync>>,
    /// Webhook changes waiting for the next batched invalidation (see [`Self::invalidate_soon`]).
    invalidation_pending: AtomicBool,
    /// What those changes touched.
    pending_scope: PendingScope,
    /// Wakes the batcher ([`Self::spawn_invalidation_batcher`]) when the first change of a batch
    /// arrives.
    invalidation_requested: Arc<Notify>,
    invalidation_batch: Duration,
    /// Which misses write their page to L2 (`L2_ADMISSION`).
    admission: Admission,
    /// Whether a first miss reads L2 (`L2_FIRST_MISS_READS`).
    probe: Probe,
}

/// Pause between attempts to (re)subscribe to invalidations while Redis is unreachable.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_secs(1);

/// First pause between L2 reads while another instance fills a key; doubles each time.
const FIRST_L2_POLL: Duration = Duration::from_millis(2);

impl ResponseCache {
    #[must_use]
    pub fn new(l1: L1, l2: L2, lock_wait: Duration) -> Self {
        ResponseCache {
            l1,
            l2,
            lock_wait,
            generations: Generations::default(),
            before_invalidation: None,
            invalidation_pending: AtomicBool::new(false),
            pending_scope: PendingScope::default(),
            invalidation_requested: Arc::new(Notify::new()),
            invalidation_batch: Duration::ZERO,
            admission: Admission::new(AdmissionPolicy::EveryMiss),
            probe: Probe::new(ProbePolicy::Always),
        }
    }

    /// Which misses write their page to L2 (see [`admission`]); every miss by default.
    #[must_use]
    pub fn with_admission(mut self, policy: AdmissionPolicy) -> Self {
        self.admission = Admission::new(policy);
        self
    }

    /// Whether a miss L2 does not admit reads L2 first (see [`probe`]); always by default.
    #[must_use]
    pub fn with_first_miss_reads(mut self, policy: ProbePolicy) -> Self {
        self.probe = Probe::new(policy);
        self
    }

    /// Webhook changes arriving within `batch` of the first share one invalidation (see
    /// [`Self::invalidate_soon`]); zero (the default) invalidates on every change. A non-zero
    /// batch needs [`Self::spawn_invalidation_batcher`] running (`App::build` starts it).
    #[must_use]
    pub fn with_invalidation_batch(mut self, batch: Duration) -> Self {
        self.invalidation_batch = batch;
        self
    }

    /// Runs `hook` before every move to a new generation (see `before_invalidation`).
    #[must_use]
    pub fn with_invalidation_hook(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.before_invalidation = Some(Box::new(hook));
        self
    }

    fn notify_invalidation(&self) {
        if let Some(hook) = &self.before_invalidation {
            hook();
        }
    }

    /// The key of a listing under the current generation of its category and search word.
    #[must_use]
    pub fn key_for(&self, listing: &crate::request::Listing) -> CacheKey {
        let filters = &listing.query.filters;
        let generation = self
            .generations
            .of_listing(filters.category.as_deref(), filters.search.as_ref());
        CacheKey::for_listing(listing, generation)
    }

    /// The deployment-wide generation (moved by every change) and the local count.
    #[must_use]
    pub fn generation(&self) -> Generation {
        self.generations.current()
    }

    /// After a change of everything (the catalogue sync): see [`Self::invalidate`].
    pub async fn invalidate_everywhere(&self) {
        self.invalidate(Scope::EVERYTHING).await;
    }

    /// After a catalogue change of `scope`: moves every instance (L1 via pub/sub, L2 via the
    /// generations in its keys) to new generations for the pages it may have altered. When Redis
    /// does not answer, this instance's L1 entries all retire; the others see the change when
    /// their entries expire.
    ///
    /// This instance's own pages move with Redis's reply (one round trip, bounded by
    /// `REDIS_TIMEOUT_MS`), not before the call: the only thing it could move before is the local
    /// count, which is shared by all categories and would retire every category's pages.
    pub async fn invalidate(&self, scope: Scope) {
        self.notify_invalidation();
        let seen = self.generations.current().shared;
        if let Some(state) = self.l2.bump_generation(scope, seen).await {
            self.generations.apply(&state);
        } else {
            self.generations.retire_local();
            tracing::warn!(
                "redis unavailable: other instances see the change when their L1 entries expire"
            );
        }
    }

    /// After a webhook's change of `scope`: invalidates everywhere within
    /// `INVALIDATION_BATCH_MS`, once for every change that arrives meanwhile (the union of their
    /// scopes). Each invalidation refills the pages it moves, so one per change refills them as
    /// often as deliveries arrive; batched, a change is listed at most one batch later and the
    /// caches refill at most a few times a second, however many deliveries arrive. Measured in
    /// issue 5's `mixed` (~3 changes a second): the service's median went from 1.1 ms to 0.1 ms
    /// (perf/RESULTS.md). With a zero batch this is [`Self::invalidate`].
    ///
    /// Never misses a change: its scope is recorded before it looks at the flag, and the flag is
    /// cleared before the batch's scope is taken, so a change that found it set is in that
    /// batch's scope, and one that found it clear starts the next batch.
    pub async fn invalidate_soon(&self, scope: Scope) {
        if self.invalidation_batch.is_zero() {
            self.invalidate(scope).await;
            return;
        }
        self.pending_scope.add(scope);
        if !self.invalidation_pending.swap(true, Ordering::SeqCst) {
            self.invalidation_requested.notify_one();
        }
    }

    /// Runs the batched invalidations of [`Self::invalidate_soon`] until the cache is dropped:
    /// waits for a batch's first change, lets the batch fill, then invalidates once.
    pub fn spawn_invalidation_batcher(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        if self.invalidation_batch.is_zero() {
            return None;
        }
        let cache: Weak<ResponseCache> = Arc::downgrade(self);
        let requested = self.invalidation_requested.clone();
        let batch = self.invalidation_batch;
        Some(tokio::spawn(async move {
            loop {
                // Waits without keeping the cache alive, looking now and then whether it is gone.
                tokio::select! {
                    () = requested.notified() => {}
                    () = tokio::time::sleep(RESUBSCRIBE_PAUSE) => {
                        if cache.strong_count() == 0 {
                            return;
                        }
                        continue;
                    }
                }
                tokio::time::sleep(batch).await;
                let Some(cache) = cache.upgrade() else { return };
                cache.invalidation_pending.store(false, Ordering::SeqCst);
                let scope = cache.pending_scope.take();
                cache.invalidate(scope).await;
            }
        }))
    }

    /// Takes the deployment's generations from Redis, e.g. at start-up, after a reconnection
    /// and on another instance's invalidation; if Redis lost them (holds less than this instance
    /// has seen), puts them back first. Whether Redis answered.
    pub async fn sync_generation(&self) -> bool {
        let seen = self.generations.current().shared;
        let Some(state) = self.l2.catch_up_generation(seen).await else {
            return false;
        };
        self.observe(&state);
        true
    }

    fn observe(&self, state: &SharedState) {
        if self.generations.is_behind(state.generation) {
            self.notify_invalidation();
        }
        self.generations.apply(state);
    }

    /// Another instance's invalidation to `generation`, announced on the channel (the message
    /// carries only the generation, as it always has, so instances of every version understand
    /// each other): reads what moved from Redis. When Redis does not answer, every page moves,
    /// since the scope is unknown. Whether Redis answered, if it was asked.
    async fn observe_announced(&self, generation: u64) -> Option<bool> {
        if !self.generations.is_behind(generation) {
            return None;
        }
        let synced = self.sync_generation().await;
        if !synced && self.generations.is_behind(generation) {
            self.notify_invalidation();
            self.generations.apply_everything(generation);
        }
        Some(synced)
    }

    /// Follows other instances' invalidations until the cache is dropped: subscribes, catches up
    /// with the generation (messages sent while disconnected are lost), then applies each message;
    /// catches up again whenever a cluster connection reports it subscribed anew.
    ///
    /// A catch-up that fails (Redis answers pub/sub but not commands, as a slow Redis or a
    /// cluster still forming) is tried again every [`RESUBSCRIBE_PAUSE`] while messages are
    /// applied, so a change missed meanwhile is never left unread for longer than the outage.
    pub fn spawn_invalidation_listener(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let cache: Weak<ResponseCache> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(mut invalidations) = (match cache.upgrade() {
                    Some(cache) => cache.l2.subscribe_invalidations().await,
                    None => return,
                }) else {
                    tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
                    continue;
                };
                let mut caught_up = false;
                loop {
                    if !caught_up {
                        caught_up = match cache.upgrade() {
                            Some(cache) => cache.sync_generation().await,
                            None => return,
                        };
                    }
                    // Both arms are cancel-safe: a message is taken only when it is returned.
                    let invalidation = tokio::select! {
                        invalidation = invalidations.next() => invalidation,
                        () = tokio::time::sleep(RESUBSCRIBE_PAUSE), if !caught_up => continue,
                    };
                    let Some(invalidation) = invalidation else {
                        break;
                    };
                    let Some(cache) = cache.upgrade() else { return };
                    let synced = match invalidation {
                        Invalidation::Generation(generation) => {
                            cache.observe_announced(generation).await
                        }
                        Invalidation::CatchUp => Some(cache.sync_generation().await),
                    };
                    caught_up = synced.unwrap_or(caught_up);
                }
                tracing::debug!("invalidation subscription ended; resubscribing");
                tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
            }
        })
    }

    /// The cached page for `key`, loading it with `load` on a miss of both levels.
    pub async fn get_or_load<F, Fut>(
        &self,
        key: &CacheKey,
        load: F,
    ) -> Result<(CachedPage, CacheStatus), Arc<StoreError>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<CachedPage, StoreError>>,
    {
        if let Some(page) = self.l1.get(key) {
            return Ok((page, CacheStatus::HitL1));
        }
        // Boxed: inline, the miss path's state (L2 round trips, the fill lock, the L1
        // placeholder, the store's query) would size every request's future, which hyper moves,
        // kilobytes and all, a few times per L1 hit.
        Box::pin(self.fill_l1(key, load)).await
    }

    /// An L1 miss: one loader per key fills L1 from L2 or from `load`.
    async fn fill_l1<F, Fut>(
        &self,
        key: &CacheKey,
        load: F,
    ) -> Result<(CachedPage, CacheStatus), Arc<StoreError>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<CachedPage, StoreError>>,
    {
        match self
            .l1
            .get_or_load(key, self.load_shared(key, load))
            .await?
        {
            Fill::Loaded(page, origin) => Ok((page, origin)),
            Fill::Joined(page) => Ok((page, CacheStatus::HitL1)),
        }
    }

    /// Redis's state for `/ready`.
    pub async fn l2_is_up(&self) -> bool {
        self.l2.ping().await
    }

    #[must_use]
    pub fn l2(&self) -> &L2 {
        &self.l2
    }

    /// L2, then the fill lock, then the load; the result goes to L2 for other instances. A
    /// miss L2 does not admit (see [`admission`]) at most reads L2 before its load (see
    /// [`probe`]), and its page is not kept in L1 either, only held in its window
    /// ([`l1`]), unless another instance stored it in L2.
    async fn load_shared<F, Fut>(
        &self,
        key: &CacheKey,
        load: F,
    ) -> Result<Loaded<CacheStatus>, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<CachedPage, StoreError>>,
    {
        let kept = |page, origin| Loaded {
            page,
            keep: true,
            report: origin,
        };
        if !self.admission.admits(key) {
            if self.probe.reads() {
                let page = self.l2.get(key).await;
                self.probe.found(page.is_some());
                if let Some(page) = page {
                    return Ok(kept(page, CacheStatus::HitL2));
                }
            } else {
                crate::meter::l2_read_skipped();
            }
            crate::meter::l2_write_skipped();
            return Ok(Loaded {
                page: load().await?,
                keep: false,
                report: CacheStatus::Miss,
            });
        }
        // Two round trips on a miss: the page or the lock, then the page stored and the lock
        // released together.
        let lock = match self.l2.get_or_lock(key).await {
            Lookup::Page(page) => return Ok(kept(page, CacheStatus::HitL2)),
            Lookup::Lock(lock) => lock,
        };
        if matches!(lock, Lock::Busy) {
            if let Some(page) = self.wait_for_fill(key).await {
                return Ok(kept(page, CacheStatus::HitL2));
            }
        }
        let page = load().await;
        match (&page, lock) {
            (Ok(page), Lock::Held(token)) => self.l2.set_and_unlock(key, page, token).await,
            (Ok(page), _) => self.l2.set(key, page).await,
            (Err(_), Lock::Held(token)) => self.l2.unlock(key, token).await,
            (Err(_), _) => {}
        }
        Ok(kept(page?, CacheStatus::Miss))
    }

    /// Polls L2 with growing pauses until the holder's page appears or `lock_wait` passes.
    async fn wait_for_fill(&self, key: &CacheKey) -> Option<CachedPage> {
        let deadline = tokio::time::Instant::now() + self.lock_wait;
        let mut pause = FIRST_L2_POLL;
        while tokio::time::Instant::now() + pause < deadline {
            tokio::time::sleep(pause).await;
            if let Some(page) = self.l2.get(key).await {
                return Some(page);
            }
            pause *= 2;
        }
        None
    }
}

impl CachedPage {
    /// Bytes it occupies, for the L1 weigher.
    #[must_use]
    pub fn weight(&self) -> usize {
        self.body.len() + self.etag.len() + self.next_link.as_ref().map_or(0, HeaderValue::len)
    }

    /// `[etag_len u16][etag][link_len u16][link][body]`, the L2 value.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let link = self
            .next_link
            .as_ref()
            .map_or(&b""[..], HeaderValue::as_bytes);
        let mut out = BytesMut::with_capacity(4 + self.etag.len() + link.len() + self.body.len());
        out.put_u16(self.etag.len() as u16);
        out.put_slice(self.etag.as_bytes());
        out.put_u16(link.len() as u16);
        out.put_slice(link);
        out.put_slice(&self.body);
        out.freeze()
    }

    /// The inverse of [`CachedPage::encode`]; `None` for anything malformed (a miss).
    #[must_use]
    pub fn decode(mut bytes: Bytes) -> Option<CachedPage> {
        let etag = take_prefixed(&mut bytes)?;
        let link = take_prefixed(&mut bytes)?;
        Some(CachedPage {
            etag: HeaderValue::from_maybe_shared(etag).ok()?,
            next_link: if link.is_empty() {
                None
            } else {
                Some(HeaderValue::from_maybe_shared(link).ok()?)
            },
            body: bytes,
        })
    }
}

fn take_prefixed(bytes: &mut Bytes) -> Option<Bytes> {
    if bytes.len() < 2 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
    if bytes.len() < 2 + len {
        return None;
    }
    let _ = bytes.split_to(2);
    Some(bytes.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An L2 whose Redis refuses at once: every call is a miss, generations stay local.
    fn unreachable_l2() -> L2 {
        L2::new(
            &crate::redis_connection::RedisTarget::single("redis://127.0.0.1:1/"),
            l2::L2Settings {
                namespace: "hook-test".into(),
                ttl: Duration::from_secs(1),
                timeout: Duration::from_millis(50),
                lock_ttl: Duration::from_secs(1),
            },
        )
        .unwrap()
    }

    /// Webhook changes within one batch move the generation once, after the batch; a change
    /// after that batch's invalidation started gets one of its own.
    #[tokio::test(start_paused = true)]
    async fn changes_within_a_batch_share_one_invalidation() {
        let batch = Duration::from_millis(250);
        let cache = Arc::new(
            ResponseCache::new(
                L1::new(1 << 20, Duration::from_secs(1)),
                unreachable_l2(),
                Duration::from_millis(10),
            )
            .with_invalidation_batch(batch),
        );
        cache
            .spawn_invalidation_batcher()
            .expect("a batcher for a non-zero batch");
        let start = cache.generation().local;
        for _ in 0..50 {
            cache.invalidate_soon(Scope::EVERYTHING).await;
        }
        assert_eq!(
            cache.generation().local,
            start,
            "nothing moves before the batch ends"
        );
        let moved = |generation: u64| {
            let cache = cache.clone();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                while cache.generation().local < generation {
                    assert!(tokio::time::Instant::now() < deadline, "no invalidation");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        moved(start + 1).await;
        // Well past the batch: the 50 changes caused exactly one move.
        tokio::time::sleep(batch * 2).await;
        assert_eq!(cache.generation().local, start + 1);

        cache.invalidate_soon(Scope::EVERYTHING).await;
        moved(start + 2).await;
        tokio::time::sleep(batch * 2).await;
        assert_eq!(cache.generation().local, start + 2);
    }

    /// The store's primary window must be open before any request can see a new generation, so
    /// the hook runs while the old generation is still current; and only for a newer one.
    #[tokio::test]
    async fn the_invalidation_hook_runs_before_the_generation_moves() {
        let unreachable = unreachable_l2();
        let cache_cell: Arc<std::sync::OnceLock<Weak<ResponseCache>>> = Arc::default();
        let seen = Arc::new(std::sync::Mutex::new(Vec::<Generation>::new()));
        let (cell, record) = (cache_cell.clone(), seen.clone());
        let cache = Arc::new(
            ResponseCache::new(
                L1::new(1 << 20, Duration::from_secs(1)),
                unreachable,
                Duration::from_millis(10),
            )
            .with_invalidation_hook(move || {
                let cache = cell.get().and_then(Weak::upgrade).unwrap();
                record.lock().unwrap().push(cache.generation());
            }),
        );
        cache_cell.set(Arc::downgrade(&cache)).unwrap();

        let before = cache.generation();
        cache.invalidate_everywhere().await;
        assert_eq!(*seen.lock().unwrap(), [before], "own invalidation");
        assert_ne!(cache.generation(), before);

        // Announced by another instance while Redis cannot be read: every page moves.
        let before = cache.generation();
        assert_eq!(cache.observe_announced(5).await, Some(false));
        assert_eq!(cache.observe_announced(5).await, None);
        assert_eq!(cache.observe_announced(3).await, None);
        assert_eq!(
            seen.lock().unwrap()[1..],
            [before],
            "another instance's, once; not a repeated or older one"
        );
        assert_eq!(cache.generation().shared, 5);
    }

    #[test]
    fn l2_encoding_round_trips_and_rejects_garbage() {
        let page = CachedPage {
            body: Bytes::from_static(b"{\"data\":[]}"),
            etag: HeaderValue::from_static("\"abc\""),
            next_link: Some(HeaderValue::from_static(
                "</products/v1?cursor=x>; rel=\"next\"",
            )),
        };
        assert_eq!(CachedPage::decode(page.encode()), Some(page.clone()));
        let last = CachedPage {
            next_link: None,
            ..page
        };
        assert_eq!(CachedPage::decode(last.encode()), Some(last));
        for garbage in [&b""[..], b"\x00", b"\x00\x09abc", b"\x00\x01\n\x00\x00"] {
            assert_eq!(CachedPage::decode(Bytes::copy_from_slice(garbage)), None);
        }
    }
}
