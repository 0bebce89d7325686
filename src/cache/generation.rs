//! Cache generations: which catalogue state a cached page belongs to, kept per category.
//!
//! A product change can only alter the pages of listings without a category filter and of its
//! old and new category. So every change moves the deployment-wide generation (the version of
//! pages without a category), but a category's pages carry the generation at which a change last
//! touched that category: a change in `tops` leaves `laptops`' pages cached. Measured in issue 5's
//! `mixed` (~3 changes a second): one generation for everything refilled every category's pages
//! after each batch of changes (perf/RESULTS.md).
//!
//! Categories map onto [`BUCKETS`] buckets, so the state has a fixed size whatever clients ask
//! for, and equal categories must land in one bucket. "Equal" is MySQL's: the column's
//! `utf8mb4_unicode_ci` collation ignores case and trailing spaces, and also accents and more
//! outside ASCII, so `tóps` lists the rows of `tops`. Only printable ASCII, where the collation
//! is just case-insensitive with trailing spaces ignored (checked against MariaDB by the
//! integration test `category_buckets_agree_with_the_collation`), gets a bucket; a category
//! with anything else has none: its pages follow the deployment-wide generation, and a change
//! in such a category moves every page.
//!
//! Never talks to Redis: `l2` keeps the shared state, this module only holds this instance's view.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::key::Generation;

/// How many buckets categories share. A power of two that fits a bitmask in one `u64`; with the
/// catalogue's 24 categories a change moves one other category's pages now and then (a shared
/// bucket), which costs a refill, never a stale page.
pub const BUCKETS: usize = 64;

/// The bucket of a category's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bucket(u8);

impl Bucket {
    /// The bucket of `category` (a filter value or a product's category); `None` when it holds
    /// anything but printable ASCII. Equal under the column's collation means equal buckets.
    ///
    /// FNV-1a (64-bit) over the lower-cased bytes without trailing spaces: stable across builds
    /// and instances (every instance must agree), a few instructions per byte on the L1-hit path,
    /// where a cryptographic hash would cost more than the rest of the key.
    #[must_use]
    pub fn of(category: &str) -> Option<Bucket> {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0100_0000_01b3;
        let mut bytes = category.as_bytes();
        while let [rest @ .., b' '] = bytes {
            bytes = rest;
        }
        let mut hash = OFFSET;
        for &byte in bytes {
            if !(0x20..=0x7e).contains(&byte) {
                return None;
            }
            hash = (hash ^ u64::from(byte.to_ascii_lowercase())).wrapping_mul(PRIME);
        }
        Some(Bucket((hash % BUCKETS as u64) as u8))
    }

    #[must_use]
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// The pages a change may have altered: those without a category filter always, plus the
/// buckets of the categories it touched, or everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scope {
    /// Bit `i` set: bucket `i` moves.
    buckets: u64,
    everything: bool,
}

impl Scope {
    /// Every page of every category (the catalogue sync, a category without a bucket).
    pub const EVERYTHING: Scope = Scope {
        buckets: 0,
        everything: true,
    };

    /// A change of products in `categories` (for a product: its category before and after).
    pub fn of_categories<'a>(categories: impl IntoIterator<Item = &'a str>) -> Scope {
        let mut scope = Scope::default();
        for category in categories {
            match Bucket::of(category) {
                Some(bucket) => scope.buckets |= 1 << bucket.index(),
                None => return Scope::EVERYTHING,
            }
        }
        scope
    }

    #[must_use]
    pub fn is_everything(self) -> bool {
        self.everything
    }

    /// The buckets that move (empty for [`Scope::EVERYTHING`], which moves them all).
    pub fn buckets(self) -> impl Iterator<Item = Bucket> {
        (0..BUCKETS as u8)
            .filter(move |&index| self.buckets & (1 << index) != 0)
            .map(Bucket)
    }
}

/// The deployment's generations as Redis holds them (`l2`'s scripts return them whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedState {
    /// Moved by every change: the version of pages without a category filter.
    pub generation: u64,
    /// Moved by changes of everything: no category's version is below it.
    pub floor: u64,
    /// The generation of the last change that touched each bucket (0: none since the floor).
    pub buckets: [u64; BUCKETS],
}

impl SharedState {
    /// From the generation and the category hash's fields (`floor`, and a bucket's index for its
    /// generation); fields it does not know are skipped.
    #[must_use]
    pub fn from_fields<'a>(
        generation: u64,
        fields: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> Self {
        let mut state = SharedState {
            generation,
            floor: 0,
            buckets: [0; BUCKETS],
        };
        for (name, value) in fields {
            if name == "floor" {
                state.floor = value;
            } else if let Some(slot) = name
                .parse::<usize>()
                .ok()
                .and_then(|index| state.buckets.get_mut(index))
            {
                *slot = value;
            }
        }
        state
    }
}

/// This instance's view of the generations. Every part only grows, so views of two instances
/// (or two moments) never disagree about which of two versions is newer.
pub struct Generations {
    generation: AtomicU64,
    floor: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
    /// This instance's own count of changes it could not tell Redis about; part of L1 keys only,
    /// so a change seen while Redis is down still retires this instance's L1 entries.
    local: AtomicU64,
}

impl Default for Generations {
    fn default() -> Self {
        Generations {
            generation: AtomicU64::new(0),
            floor: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            local: AtomicU64::new(0),
        }
    }
}

impl Generations {
    /// The deployment-wide generation and the local count.
    #[must_use]
    pub fn current(&self) -> Generation {
        Generation {
            shared: self.generation.load(Ordering::Acquire),
            local: self.local.load(Ordering::Acquire),
        }
    }

    /// The generation of a listing's pages: its category's (see the module's doc) or, without a
    /// category filter or a bucket, the deployment-wide one.
    #[must_use]
    pub fn of_listing(&self, category: Option<&str>) -> Generation {
        let local = self.local.load(Ordering::Acquire);
        let shared = match category.and_then(Bucket::of) {
            Some(bucket) => self.buckets[bucket.index()]
                .load(Ordering::Acquire)
                .max(self.floor.load(Ordering::Acquire)),
            None => self.generation.load(Ordering::Acquire),
        };
        Generation { shared, local }
    }

    /// Whether `generation` is newer than any this instance has seen.
    #[must_use]
    pub fn is_behind(&self, generation: u64) -> bool {
        generation > self.generation.load(Ordering::Acquire)
    }

    /// Takes in Redis's state. Categories move before the deployment-wide generation, so a
    /// reader that sees the new generation never pairs it with a category's old version.
    pub fn apply(&self, state: &SharedState) {
        self.floor.fetch_max(state.floor, Ordering::AcqRel);
        for (mine, &theirs) in self.buckets.iter().zip(&state.buckets) {
            mine.fetch_max(theirs, Ordering::AcqRel);
        }
        self.generation
            .fetch_max(state.generation, Ordering::AcqRel);
    }

    /// A move to `generation` whose scope is unknown (Redis announced it but could not be read):
    /// every page moves.
    pub fn apply_everything(&self, generation: u64) {
        self.floor.fetch_max(generation, Ordering::AcqRel);
        self.generation.fetch_max(generation, Ordering::AcqRel);
    }

    /// A change Redis did not hear of: this instance's L1 entries all retire.
    pub fn retire_local(&self) {
        self.local.fetch_add(1, Ordering::AcqRel);
    }
}

/// The scope of the changes waiting for the next batched invalidation: lock-free, so a webhook
/// never waits for another to record its change.
#[derive(Default)]
pub struct PendingScope {
    buckets: AtomicU64,
    everything: AtomicBool,
}

impl PendingScope {
    pub fn add(&self, scope: Scope) {
        if scope.everything {
            self.everything.store(true, Ordering::SeqCst);
        } else {
            self.buckets.fetch_or(scope.buckets, Ordering::SeqCst);
        }
    }

    /// Everything added since the last call.
    pub fn take(&self) -> Scope {
        let buckets = self.buckets.swap(0, Ordering::SeqCst);
        if self.everything.swap(false, Ordering::SeqCst) {
            Scope::EVERYTHING
        } else {
            Scope {
                buckets,
                everything: false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_categories_under_the_collation_share_a_bucket() {
        for (a, b) in [
            ("tops", "TOPS"),
            ("Mens-Shoes", "mens-shoes"),
            ("tops", "tops  "),
        ] {
            assert_eq!(Bucket::of(a), Bucket::of(b), "{a:?} / {b:?}");
            assert!(Bucket::of(a).is_some());
        }
        // Outside printable ASCII the collation merges more than case: no bucket.
        for category in [
            "tóps",
            "ＴＯＰＳ",
            "stra\u{df}e",
            "tops\u{200b}",
            "tab\there",
        ] {
            assert_eq!(Bucket::of(category), None, "{category:?}");
        }
    }

    #[test]
    fn the_catalogue_categories_spread_over_the_buckets() {
        let used: std::collections::HashSet<_> = crate::seed::CATEGORIES
            .iter()
            .map(|c| Bucket::of(c).unwrap())
            .collect();
        assert!(used.len() >= 18, "{} buckets for 24 categories", used.len());
    }

    #[test]
    fn a_scope_names_its_buckets_and_a_category_without_one_means_everything() {
        let scope = Scope::of_categories(["tops", "laptops"]);
        let buckets: Vec<_> = scope.buckets().collect();
        assert!(buckets.contains(&Bucket::of("tops").unwrap()));
        assert!(buckets.contains(&Bucket::of("laptops").unwrap()));
        assert!(!scope.is_everything());
        assert!(Scope::of_categories(["tops", "tóps"]).is_everything());
        assert_eq!(Scope::of_categories([]).buckets().count(), 0);
    }

    #[test]
    fn a_change_moves_its_categories_and_the_unfiltered_pages_only() {
        let generations = Generations::default();
        let tops = Bucket::of("tops").unwrap();
        let mut state = SharedState::from_fields(0, []);
        state.generation = 4;
        state.buckets[tops.index()] = 4;
        generations.apply(&state);
        assert_eq!(generations.of_listing(None).shared, 4);
        assert_eq!(generations.of_listing(Some("TOPS")).shared, 4);
        let other = ["laptops", "beauty", "tablets"]
            .into_iter()
            .find(|c| Bucket::of(c) != Some(tops))
            .unwrap();
        assert_eq!(generations.of_listing(Some(other)).shared, 0);
        assert_eq!(generations.of_listing(Some("tóps")).shared, 4);

        generations.apply_everything(6);
        assert_eq!(generations.of_listing(Some(other)).shared, 6);
        // An older state never moves anything back.
        generations.apply(&state);
        assert_eq!(generations.of_listing(Some("tops")).shared, 6);
        assert_eq!(generations.current().shared, 6);
    }

    #[test]
    fn the_shared_state_reads_the_hash_fields_and_skips_unknown_ones() {
        let state =
            SharedState::from_fields(9, [("floor", 3), ("at", 9), ("5", 8), ("64", 7), ("x", 1)]);
        assert_eq!((state.generation, state.floor), (9, 3));
        assert_eq!(state.buckets[5], 8);
        assert_eq!(state.buckets.iter().filter(|&&v| v != 0).count(), 1);
    }

    #[test]
    fn pending_scopes_accumulate_until_taken() {
        let pending = PendingScope::default();
        pending.add(Scope::of_categories(["tops"]));
        pending.add(Scope::of_categories(["laptops"]));
        assert_eq!(pending.take(), Scope::of_categories(["tops", "laptops"]));
        assert_eq!(pending.take(), Scope::default());
        pending.add(Scope::EVERYTHING);
        pending.add(Scope::of_categories(["tops"]));
        assert!(pending.take().is_everything());
    }
}
