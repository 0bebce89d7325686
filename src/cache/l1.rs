//! L1: finished responses in process memory (`quick_cache`), bounded by bytes.
//!
//! A hit costs no I/O, no allocation and no await: one hash, one shard read lock, the page's
//! reference counts and a clock read. `quick_cache` replaced moka here because a hit is the
//! whole of the busiest path, and moka's hit (`SipHash`, epoch pinning, a read log for its
//! admission sketch) was a twentieth of the service's CPU there (perf/RESULTS.md, eighth
//! session). It has no time-to-live, so each entry carries its expiry, checked on every read,
//! and a sweeper ([`L1::spawn_sweeper`]) drops expired entries, so that memory follows the live
//! entries, and falls when traffic does, rather than filling to the weigher's bound with pages
//! no read may serve.
//!
//! Pages whose listing this instance had not missed before (the L2 doorkeeper's first
//! sightings, [`super::admission`]) stay in a window a sixteenth of the capacity until they are
//! read again, which moves them to the kept part; the others are kept at once: a listing asked for once (a deep cursor, a price band nobody repeats) is still
//! there for an immediate repeat, but cannot fill the cache. Filled with such pages, the whole
//! capacity churned through memory at the miss rate: under `loadtest uncached` a 1 MiB L1 gave
//! 8.5 % more requests a second than the 64 MiB default; with the window the service spent
//! 3.6 % less CPU per request and the p99 fell from 9.47 to 8.83 ms, while `mixed` read ~1–2 %
//! more from MySQL (perf/RESULTS.md, ninth session).
//!
//! Concurrent misses of one key are coalesced by `quick_cache`'s placeholders: one task loads
//! and the others wait for its page. A failed load is stored too, as an entry no read serves,
//! so that the tasks that were waiting for it share its error, as they would its page, instead
//! of each retrying the failing store in turn; a request arriving after the failure loads
//! again.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use quick_cache::sync::{Cache, EntryAction, EntryResult};
use quick_cache::Weighter;

use super::{key::CacheKey, CachedPage};
use crate::store::StoreError;

/// The in-process cache.
#[derive(Clone)]
pub struct L1 {
    tiers: Arc<Tiers>,
    ttl: Duration,
}

type Slots = Cache<CacheKey, Slot, ByBytes>;

/// Where pages live: those of listings missed before, for their time-to-live, and first
/// sightings, in a window a sixteenth of the size.
struct Tiers {
    kept: Slots,
    window: Slots,
}

impl Tiers {
    /// The kept page for `key` a read may serve at `now`.
    fn kept_page(&self, key: &CacheKey, now: Instant) -> Option<CachedPage> {
        self.kept.get(key).and_then(|slot| slot.page_at(now))
    }
}

/// What the cache holds for a key.
#[derive(Clone)]
enum Slot {
    Page {
        page: CachedPage,
        expires: Instant,
    },
    /// The error of a load that other tasks were waiting for; `at` tells them from later
    /// arrivals, which load again.
    Failed {
        error: Arc<StoreError>,
        at: Instant,
    },
}

impl Slot {
    /// Whether a read may still serve it; a failure is only ever shared with its waiters.
    fn is_live(&self, now: Instant) -> bool {
        matches!(self, Slot::Page { expires, .. } if now < *expires)
    }

    /// The page a read may serve at `now`.
    fn page_at(self, now: Instant) -> Option<CachedPage> {
        match self {
            Slot::Page { page, expires } if now < expires => Some(page),
            _ => None,
        }
    }
}

/// What a load hands to [`L1::get_or_load`].
pub struct Loaded<T> {
    pub page: CachedPage,
    /// Whether L1 keeps the page for its time-to-live; else only its window holds it.
    pub keep: bool,
    /// What the load reports alongside, handed back in [`Fill::Loaded`].
    pub report: T,
}

/// How a miss was answered.
#[derive(Debug)]
pub enum Fill<T> {
    /// This task loaded the page; `T` is what its load reported alongside.
    Loaded(CachedPage, T),
    /// Another task's load, waited for.
    Joined(CachedPage),
}

/// Weighs an entry by the bytes of its key and page.
#[derive(Clone)]
struct ByBytes;

impl Weighter<CacheKey, Slot> for ByBytes {
    fn weight(&self, key: &CacheKey, slot: &Slot) -> u64 {
        let value = match slot {
            Slot::Page { page, .. } => page.weight(),
            Slot::Failed { .. } => 0,
        };
        // Never zero: quick_cache never evicts a zero-weight entry.
        (key.as_str().len() + value + 1) as u64
    }
}

/// The sweeper's shortest pause, for tiny time-to-lives (tests): a sweep locks every shard in
/// turn.
const MIN_SWEEP_PAUSE: Duration = Duration::from_millis(100);

fn sweep(tiers: &Tiers) {
    let now = Instant::now();
    tiers.kept.retain(|_, slot| slot.is_live(now));
    tiers.window.retain(|_, slot| slot.is_live(now));
    crate::meter::l1_size(
        tiers.kept.len() + tiers.window.len(),
        tiers.kept.weight() + tiers.window.weight(),
    );
}

/// A page of 20 products is a few KiB: sizes the table, not the bound.
const TYPICAL_ENTRY_BYTES: u64 = 8 * 1024;

/// The window's share of the capacity: 4 MiB of the default 64 MiB, a few hundred pages.
const WINDOW_SHARE: u64 = 16;

/// The window's least size (up to half the capacity): a load's waiters read its page from the
/// window, and `quick_cache` drops a page heavier than a shard's share instead of storing it, so
/// a small window would turn every waiter of a large page into a loader of its own.
const WINDOW_FLOOR: u64 = 1024 * 1024;

/// The window's bytes for an L1 of `capacity_bytes`.
fn window_bytes(capacity_bytes: u64) -> u64 {
    (capacity_bytes / WINDOW_SHARE).max(WINDOW_FLOOR.min(capacity_bytes / 2))
}

fn slots(capacity_bytes: u64) -> Slots {
    let entries = usize::try_from(capacity_bytes / TYPICAL_ENTRY_BYTES)
        .unwrap_or(usize::MAX)
        .max(1);
    Cache::with_weighter(entries, capacity_bytes, ByBytes)
}

impl L1 {
    #[must_use]
    pub fn new(capacity_bytes: u64, ttl: Duration) -> Self {
        let window = window_bytes(capacity_bytes);
        L1 {
            tiers: Arc::new(Tiers {
                kept: slots(capacity_bytes - window),
                window: slots(window),
            }),
            ttl,
        }
    }

    /// Drops expired entries (and stored failures) four times per time-to-live, until the
    /// cache is gone: an entry then outlives its expiry by at most a quarter of its life. Each
    /// sweep reports what is left (`cache_l1_entries`, `cache_l1_bytes`).
    pub fn spawn_sweeper(&self) {
        let tiers: Weak<_> = Arc::downgrade(&self.tiers);
        let every = (self.ttl / 4).max(MIN_SWEEP_PAUSE);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(tiers) = tiers.upgrade() else { return };
                sweep(&tiers);
            }
        });
    }

    /// Entries held, expired ones included until a sweep; a kept page still in the window
    /// counts twice (both hold the same bytes).
    #[must_use]
    pub fn len(&self) -> usize {
        self.tiers.kept.len() + self.tiers.window.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The page for `key` if one is cached and not expired. A page read from the window has
    /// been asked for twice, so it moves to the kept part.
    #[must_use]
    pub fn get(&self, key: &CacheKey) -> Option<CachedPage> {
        let now = Instant::now();
        if let Some(page) = self.tiers.kept_page(key, now) {
            return Some(page);
        }
        let slot = self.tiers.window.get(key)?;
        let page = slot.clone().page_at(now)?;
        self.tiers.kept.insert(key.clone(), slot);
        self.tiers.window.remove(key);
        Some(page)
    }

    /// The page for `key`: cached, another task's load joined, or `load`ed here. Loads are
    /// coalesced in the window, which holds every loaded page until its turnover or a second
    /// read; a page whose load says to keep it also goes to the kept part, for its
    /// time-to-live.
    pub async fn get_or_load<T, Fut>(
        &self,
        key: &CacheKey,
        load: Fut,
    ) -> Result<Fill<T>, Arc<StoreError>>
    where
        Fut: Future<Output = Result<Loaded<T>, StoreError>>,
    {
        if let Some(page) = self.tiers.kept_page(key, Instant::now()) {
            return Ok(Fill::Joined(page));
        }
        let window = &self.tiers.window;
        let arrived = Instant::now();
        let found = window
            .entry_async(key, |_, slot| match slot {
                Slot::Page { page, expires } if Instant::now() < *expires => {
                    EntryAction::Retain(Ok(page.clone()))
                }
                Slot::Failed { error, at } if *at >= arrived => {
                    EntryAction::Retain(Err(error.clone()))
                }
                _ => EntryAction::ReplaceWithGuard,
            })
            .await;
        let guard = match found {
            EntryResult::Retained(joined) => return joined.map(Fill::Joined),
            EntryResult::Vacant(guard) | EntryResult::Replaced(guard, _) => Some(guard),
            // Neither is asked for (no `Remove` action, no timeout); load uncoalesced.
            EntryResult::Removed(..) | EntryResult::Timeout => None,
        };
        let loaded = load.await.map_err(Arc::new);
        let (slot, keep) = match &loaded {
            Ok(loaded) => (
                Slot::Page {
                    page: loaded.page.clone(),
                    expires: Instant::now() + self.ttl,
                },
                loaded.keep,
            ),
            Err(error) => (
                Slot::Failed {
                    error: error.clone(),
                    at: Instant::now(),
                },
                false,
            ),
        };
        if keep {
            self.tiers.kept.insert(key.clone(), slot.clone());
        }
        match guard {
            // Waiters read the slot from the window once it is in, so a kept page goes there
            // too (sharing its bytes) and leaves with the window's turnover. They get it even
            // when it is too heavy for the window.
            Some(guard) => drop(guard.insert(slot)),
            None => window.insert(key.clone(), slot),
        }
        loaded.map(|loaded| Fill::Loaded(loaded.page, loaded.report))
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use futures::poll;
    use http::HeaderValue;
    use tokio::sync::oneshot;

    use super::*;
    use crate::cache::Generation;
    use crate::request::{cursor::CursorKey, parse_listing};

    fn key() -> CacheKey {
        let listing = parse_listing(Some("category=tops"), &CursorKey::new(b"k")).unwrap();
        CacheKey::for_listing(&listing, Generation::default())
    }

    fn page(body: &'static str) -> CachedPage {
        CachedPage {
            body: Bytes::from_static(body.as_bytes()),
            etag: HeaderValue::from_static("\"e\""),
            next_link: None,
        }
    }

    fn lasting() -> L1 {
        L1::new(1 << 20, Duration::from_secs(60))
    }

    /// A load that counts itself and reports `who` loaded.
    #[expect(
        clippy::unused_async,
        reason = "a load counts when it runs, not when it is made"
    )]
    async fn counted(
        loads: &AtomicUsize,
        who: &'static str,
    ) -> Result<Loaded<&'static str>, StoreError> {
        loads.fetch_add(1, Ordering::SeqCst);
        Ok(Loaded {
            page: page(who),
            keep: true,
            report: who,
        })
    }

    #[tokio::test]
    async fn tasks_missing_a_key_together_share_one_load() {
        let (l1, key, loads) = (lasting(), key(), AtomicUsize::new(0));
        let (release, released) = oneshot::channel::<()>();
        let mut leader = pin!(l1.get_or_load(&key, async {
            released.await.unwrap();
            counted(&loads, "leader").await
        }));
        assert!(poll!(&mut leader).is_pending(), "the leader holds the key");
        let mut waiters: Vec<_> = (0..3)
            .map(|_| Box::pin(l1.get_or_load(&key, counted(&loads, "waiter"))))
            .collect();
        for waiter in &mut waiters {
            assert!(poll!(waiter).is_pending(), "a waiter waits for the leader");
        }
        release.send(()).unwrap();

        assert!(matches!(leader.await, Ok(Fill::Loaded(p, "leader")) if p == page("leader")));
        for waiter in waiters {
            assert!(matches!(waiter.await, Ok(Fill::Joined(p)) if p == page("leader")));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(l1.get(&key), Some(page("leader")));
    }

    /// Waiters share a failed load's error rather than each retrying the store in turn; a
    /// request arriving after the failure loads again.
    #[tokio::test]
    async fn tasks_waiting_for_a_failed_load_share_its_error_and_later_ones_retry() {
        let (l1, key, loads) = (lasting(), key(), AtomicUsize::new(0));
        let (release, released) = oneshot::channel::<()>();
        let mut leader = pin!(l1.get_or_load(&key, async {
            released.await.unwrap();
            loads.fetch_add(1, Ordering::SeqCst);
            Err::<Loaded<&str>, _>(StoreError::Saturated)
        }));
        assert!(poll!(&mut leader).is_pending());
        let mut waiter = pin!(l1.get_or_load(&key, counted(&loads, "waiter")));
        assert!(poll!(&mut waiter).is_pending());
        release.send(()).unwrap();

        let failed = leader.await.unwrap_err();
        let shared = waiter.await.unwrap_err();
        assert!(
            Arc::ptr_eq(&failed, &shared),
            "the waiter gets the leader's error"
        );
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(l1.get(&key), None, "an error is never a hit");

        let later = l1.get_or_load(&key, counted(&loads, "later")).await;
        assert!(matches!(later, Ok(Fill::Loaded(p, "later")) if p == page("later")));
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }

    /// A loader whose request is dropped (its client left) hands the load to a waiter.
    #[tokio::test]
    async fn a_dropped_loader_hands_the_load_to_a_waiter() {
        let (l1, key, loads) = (lasting(), key(), AtomicUsize::new(0));
        let mut leader = Box::pin(l1.get_or_load(&key, async {
            std::future::pending::<()>().await;
            counted(&loads, "leader").await
        }));
        assert!(poll!(&mut leader).is_pending());
        let mut waiter = pin!(l1.get_or_load(&key, counted(&loads, "waiter")));
        assert!(poll!(&mut waiter).is_pending());
        drop(leader);

        assert!(matches!(waiter.await, Ok(Fill::Loaded(p, "waiter")) if p == page("waiter")));
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_entry_is_served_until_its_time_to_live_and_never_after() {
        let key = key();
        let loads = AtomicUsize::new(0);
        let lasting = lasting();
        lasting
            .get_or_load(&key, counted(&loads, "first"))
            .await
            .unwrap();
        assert_eq!(lasting.get(&key), Some(page("first")));
        let again = lasting.get_or_load(&key, counted(&loads, "second")).await;
        assert!(matches!(again, Ok(Fill::Joined(p)) if p == page("first")));
        assert_eq!(loads.load(Ordering::SeqCst), 1);

        let expired = L1::new(1 << 20, Duration::ZERO);
        expired
            .get_or_load(&key, counted(&loads, "first"))
            .await
            .unwrap();
        assert_eq!(expired.get(&key), None);
        let again = expired.get_or_load(&key, counted(&loads, "second")).await;
        assert!(matches!(again, Ok(Fill::Loaded(p, "second")) if p == page("second")));
        assert_eq!(expired.get(&key), None);
        assert_eq!(loads.load(Ordering::SeqCst), 3);
    }

    fn key_of(category: &str) -> CacheKey {
        let query = format!("category={category}");
        let listing = parse_listing(Some(&query), &CursorKey::new(b"k")).unwrap();
        CacheKey::for_listing(&listing, Generation::default())
    }

    /// A load whose page is not to be kept (a first sighting).
    #[expect(clippy::unused_async, reason = "stands for a load")]
    async fn passing(body: Bytes) -> Result<Loaded<()>, StoreError> {
        let page = CachedPage {
            body,
            etag: HeaderValue::from_static("\"e\""),
            next_link: None,
        };
        Ok(Loaded {
            page,
            keep: false,
            report: (),
        })
    }

    /// Waiters read a load's page from the window: a window too small to store it would turn
    /// each of them into a loader.
    #[tokio::test]
    async fn a_small_l1_still_shares_a_large_page_with_its_waiters() {
        let (l1, key, loads) = (
            L1::new(256 * 1024, Duration::from_secs(60)),
            key(),
            AtomicUsize::new(0),
        );
        let large = Bytes::from(vec![b'x'; 100 * 1024]);
        let (release, released) = oneshot::channel::<()>();
        let mut leader = pin!(l1.get_or_load(&key, async {
            released.await.unwrap();
            loads.fetch_add(1, Ordering::SeqCst);
            passing(large.clone()).await
        }));
        assert!(poll!(&mut leader).is_pending());
        let mut waiter = pin!(l1.get_or_load(&key, async {
            loads.fetch_add(1, Ordering::SeqCst);
            passing(large.clone()).await
        }));
        assert!(poll!(&mut waiter).is_pending());
        release.send(()).unwrap();

        assert!(matches!(leader.await, Ok(Fill::Loaded(..))));
        assert!(matches!(waiter.await, Ok(Fill::Joined(page)) if page.body == large));
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_first_sighting_stays_in_the_window_until_it_is_read_again() {
        let (l1, key) = (lasting(), key());
        let body = Bytes::from_static(b"once");
        l1.get_or_load(&key, passing(body.clone())).await.unwrap();
        let tiers = &l1.tiers;
        assert_eq!((tiers.kept.len(), tiers.window.len()), (0, 1));

        assert_eq!(l1.get(&key).map(|page| page.body), Some(body));
        assert_eq!((tiers.kept.len(), tiers.window.len()), (1, 0));
    }

    #[tokio::test]
    async fn first_sightings_turn_over_in_the_window_and_never_fill_the_kept_part() {
        let l1 = L1::new(64 * 1024, Duration::from_secs(60));
        for index in 0..400 {
            let body = Bytes::from(vec![b'x'; 512]);
            l1.get_or_load(&key_of(&format!("c{index}")), passing(body))
                .await
                .unwrap();
        }
        assert_eq!(l1.tiers.kept.len(), 0);
        assert!(l1.tiers.window.weight() <= window_bytes(64 * 1024));
        assert!(l1.tiers.window.len() < 400, "the window turned over");
    }

    /// A sweep drops what no read may serve, expired pages and stored failures, and reports
    /// what is left.
    #[tokio::test]
    async fn a_sweep_drops_expired_pages_and_failures_and_keeps_live_ones() {
        let loads = AtomicUsize::new(0);
        let failing = async { Err::<Loaded<&str>, _>(StoreError::Saturated) };
        let lasting = lasting();
        lasting
            .get_or_load(&key(), counted(&loads, "live"))
            .await
            .unwrap();
        let other = CacheKey::for_listing(
            &parse_listing(Some("category=shoes"), &CursorKey::new(b"k")).unwrap(),
            Generation::default(),
        );
        lasting.get_or_load(&other, failing).await.unwrap_err();
        let expired = L1::new(1 << 20, Duration::ZERO);
        expired
            .get_or_load(&key(), counted(&loads, "old"))
            .await
            .unwrap();
        // A loaded page is in the window too (its waiters read it there); a kept one also in
        // the kept part.
        assert_eq!((lasting.len(), expired.len()), (3, 2));

        sweep(&expired.tiers);
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        metrics::with_local_recorder(&recorder, || sweep(&lasting.tiers));
        assert_eq!((lasting.len(), expired.len()), (2, 0));
        assert_eq!(lasting.get(&key()), Some(page("live")));

        let exposition = recorder.handle().render();
        let weight = lasting.tiers.kept.weight() + lasting.tiers.window.weight();
        assert!(weight > 0);
        for line in [
            "cache_l1_entries 2".to_owned(),
            format!("cache_l1_bytes {weight}"),
        ] {
            assert!(
                exposition.lines().any(|l| l == line),
                "{line} in {exposition}"
            );
        }
    }
}
