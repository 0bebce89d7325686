//! Cache generations: which catalogue state a cached page belongs to, kept per category and,
//! for searches, per word start.
//!
//! A product change can only alter the pages of listings without a filter, of its old and new
//! category, and of the searches its old or new text can match. So every change moves the
//! deployment-wide generation (the version of pages with neither filter), but a category's pages
//! carry the generation at which a change last touched that category: a change in `tops` leaves
//! `laptops`' pages cached. Measured in issue 5's `mixed` (~3 changes a second): one generation
//! for everything refilled every category's pages after each batch of changes (perf/RESULTS.md).
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
//! A search's pages can only be altered by a change of a product the search matches, before or
//! after the change, and a match starts a word of the product's text with the search's word. So
//! a change also records the [`WordBucket`]s of its products' word starts (their first three
//! characters), and a search page carries the generation at which a change last touched its
//! word's bucket: a change of "Oak desk" leaves the pages of `leather` cached. A search with a
//! category takes the older of its category's and its word's versions. Measured in issue 5's
//! `mixed` with events carrying real catalogue text (perf/RESULTS.md): with every search page
//! moved by every batch of webhook changes (a common word's refill walks ~1,300 rows), a common
//! word's p99 was 16–27 ms instead of 8–12 ms. The same rule as for categories keeps
//! it exact: only ASCII letters and digits at a word start of ASCII text, where matching is ASCII
//! case-insensitive, get a bucket (checked against MariaDB's REGEXP and FULLTEXT by
//! `word_buckets_cover_every_match_mariadb_finds`); a search word that starts with anything else
//! has none, and a product with anything else in its text moves every word bucket.
//!
//! Never talks to Redis: `l2` keeps the shared state, this module only holds this instance's view.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::key::Generation;
use crate::domain::search::{SearchTerms, MIN_WORD_CHARS};

/// FNV-1a (64-bit), folded onto a number of buckets: stable across builds and instances (every
/// instance must agree), a few instructions per byte on the L1-hit path, where a cryptographic
/// hash would cost more than the rest of the key.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn add(&mut self, byte: u8) {
        self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }

    fn bucket(self, buckets: usize) -> u8 {
        (self.0 % buckets as u64) as u8
    }
}

/// How many buckets categories share. A power of two that fits a bitmask in one `u64`; with the
/// catalogue's 24 categories a change moves one other category's pages now and then (a shared
/// bucket), which costs a refill, never a stale page.
pub const BUCKETS: usize = 64;

/// How many buckets search words share: as many as fit a `u8`. A product's text has ~16
/// distinct word starts (median over the 194 products of the dummyjson catalogue), so a change
/// moves ~6 % of them, where 64 buckets would move a quarter.
pub const WORD_BUCKETS: usize = 256;

/// The bucket of a category's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bucket(u8);

impl Bucket {
    /// The bucket of `category` (a filter value or a product's category); `None` when it holds
    /// anything but printable ASCII. Equal under the column's collation means equal buckets.
    ///
    /// Hashes the lower-cased bytes without trailing spaces.
    #[must_use]
    pub fn of(category: &str) -> Option<Bucket> {
        let mut bytes = category.as_bytes();
        while let [rest @ .., b' '] = bytes {
            bytes = rest;
        }
        let mut hash = Fnv::new();
        for &byte in bytes {
            if !(0x20..=0x7e).contains(&byte) {
                return None;
            }
            hash.add(byte.to_ascii_lowercase());
        }
        Some(Bucket(hash.bucket(BUCKETS)))
    }

    #[must_use]
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// The bucket of a search's pages: that of a word start's first [`MIN_WORD_CHARS`] characters
/// (every search word has at least that many), lower-cased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WordBucket(u8);

impl WordBucket {
    /// The bucket of a search's pages: its first word that starts with ASCII letters and digits
    /// (a product the search matches matches every word), `None` when none does.
    #[must_use]
    pub fn of_search(terms: &SearchTerms) -> Option<WordBucket> {
        terms
            .words()
            .iter()
            .find_map(|word| Self::of_start(word.as_bytes()))
    }

    /// The bucket of the word start at the beginning of `bytes`, if it is ASCII letters and
    /// digits for [`MIN_WORD_CHARS`].
    fn of_start(bytes: &[u8]) -> Option<WordBucket> {
        let start = bytes.get(..MIN_WORD_CHARS)?;
        if !start.iter().all(u8::is_ascii_alphanumeric) {
            return None;
        }
        let mut hash = Fnv::new();
        for &byte in start {
            hash.add(byte.to_ascii_lowercase());
        }
        Some(WordBucket(hash.bucket(WORD_BUCKETS)))
    }

    #[must_use]
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A set of word buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct WordMask([u64; WORD_BUCKETS / 64]);

impl WordMask {
    const ALL: WordMask = WordMask([u64::MAX; WORD_BUCKETS / 64]);

    /// The element of the array holding `bucket`, and its bit there.
    fn position(bucket: WordBucket) -> (usize, u64) {
        (bucket.index() / 64, 1 << (bucket.index() % 64))
    }

    fn with(mut self, bucket: WordBucket) -> WordMask {
        let (element, bit) = WordMask::position(bucket);
        self.0[element] |= bit;
        self
    }

    fn contains(self, bucket: WordBucket) -> bool {
        let (element, bit) = WordMask::position(bucket);
        self.0[element] & bit != 0
    }

    fn union(mut self, other: WordMask) -> WordMask {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine |= theirs;
        }
        self
    }

    fn buckets(self) -> impl Iterator<Item = WordBucket> {
        (0..=u8::MAX)
            .map(WordBucket)
            .filter(move |&bucket| self.contains(bucket))
    }
}

/// The word buckets a product's `text` (its name or description) can be found by; every bucket
/// when the text is not ASCII. A search word matches at a word start (MySQL 8's and MariaDB's
/// `\b`, or a FULLTEXT token's start), and each of those follows the text's start or a character
/// that is not a letter or digit; this takes every such position, a superset, so no match is
/// missed.
fn word_starts(text: &str) -> WordMask {
    let bytes = text.as_bytes();
    if !bytes.is_ascii() {
        return WordMask::ALL;
    }
    (0..bytes.len())
        .filter(|&at| at == 0 || !bytes[at - 1].is_ascii_alphanumeric())
        .filter_map(|at| WordBucket::of_start(&bytes[at..]))
        .fold(WordMask::default(), WordMask::with)
}

/// The pages a change may have altered: those without a category filter or search always, plus
/// the buckets of the categories and word starts it touched, or everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scope {
    /// Bit `i` set: category bucket `i` moves.
    buckets: u64,
    /// The word buckets that move.
    words: WordMask,
    everything: bool,
}

impl Scope {
    /// Every page of every category (the catalogue sync, a category without a bucket).
    pub const EVERYTHING: Scope = Scope {
        buckets: 0,
        words: WordMask([0; WORD_BUCKETS / 64]),
        everything: true,
    };

    /// A change of products in `categories` whose names and descriptions are `texts` (for a
    /// product: its category and text before and after).
    pub fn of_change<'a, 'b>(
        categories: impl IntoIterator<Item = &'a str>,
        texts: impl IntoIterator<Item = &'b str>,
    ) -> Scope {
        let mut scope = Scope::default();
        for category in categories {
            match Bucket::of(category) {
                Some(bucket) => scope.buckets |= 1 << bucket.index(),
                None => return Scope::EVERYTHING,
            }
        }
        scope.words = texts.into_iter().fold(WordMask::default(), |mask, text| {
            mask.union(word_starts(text))
        });
        scope
    }

    #[must_use]
    pub fn is_everything(self) -> bool {
        self.everything
    }

    /// The category buckets that move (empty for [`Scope::EVERYTHING`], which moves them all).
    pub fn buckets(self) -> impl Iterator<Item = Bucket> {
        (0..BUCKETS as u8)
            .filter(move |&index| self.buckets & (1 << index) != 0)
            .map(Bucket)
    }

    /// The word buckets that move (empty for [`Scope::EVERYTHING`], which moves them all).
    pub fn words(self) -> impl Iterator<Item = WordBucket> {
        self.words.buckets()
    }
}

/// The deployment's generations as Redis holds them (`l2`'s scripts return them whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedState {
    /// Moved by every change: the version of pages without a category filter.
    pub generation: u64,
    /// Moved by changes of everything: no category's version is below it.
    pub floor: u64,
    /// The generation of the last change that touched each category bucket (0: none since the
    /// floor).
    pub buckets: [u64; BUCKETS],
    /// The same for each word bucket.
    pub words: [u64; WORD_BUCKETS],
}

impl SharedState {
    /// From the generation and the scope hash's fields (`floor`, a category bucket's index and a
    /// word bucket's index after `w` for their generations); fields it does not know are skipped.
    #[must_use]
    pub fn from_fields<'a>(
        generation: u64,
        fields: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> Self {
        let mut state = SharedState {
            generation,
            floor: 0,
            buckets: [0; BUCKETS],
            words: [0; WORD_BUCKETS],
        };
        for (name, value) in fields {
            let (slots, index): (&mut [u64], _) = match name.strip_prefix('w') {
                Some(index) => (&mut state.words, index),
                None => (&mut state.buckets, name),
            };
            if name == "floor" {
                state.floor = value;
            } else if let Some(slot) = index
                .parse::<usize>()
                .ok()
                .and_then(|index| slots.get_mut(index))
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
    words: [AtomicU64; WORD_BUCKETS],
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
            words: std::array::from_fn(|_| AtomicU64::new(0)),
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

    /// The generation of a listing's pages (see the module's doc): its category's, its search
    /// word's, the older of the two when it has both (a change that can alter the page touches
    /// both, so both move past every version before it, and a change that touches one only
    /// cannot alter it), or, with neither filter or a bucket, the deployment-wide one.
    #[must_use]
    pub fn of_listing(&self, category: Option<&str>, search: Option<&SearchTerms>) -> Generation {
        let local = self.local.load(Ordering::Acquire);
        // A bucket's version: its last change's generation, or the floor if that is later.
        let version = |slot: &AtomicU64| {
            slot.load(Ordering::Acquire)
                .max(self.floor.load(Ordering::Acquire))
        };
        let by_category = category
            .and_then(Bucket::of)
            .map(|bucket| version(&self.buckets[bucket.index()]));
        let by_word = search
            .and_then(WordBucket::of_search)
            .map(|bucket| version(&self.words[bucket.index()]));
        let shared = match (by_category, by_word) {
            (Some(category), Some(word)) => category.min(word),
            (Some(one), None) | (None, Some(one)) => one,
            (None, None) => self.generation.load(Ordering::Acquire),
        };
        Generation { shared, local }
    }

    /// Whether `generation` is newer than any this instance has seen.
    #[must_use]
    pub fn is_behind(&self, generation: u64) -> bool {
        generation > self.generation.load(Ordering::Acquire)
    }

    /// Takes in Redis's state. Buckets move before the deployment-wide generation, so a
    /// reader that sees the new generation never pairs it with a bucket's old version.
    pub fn apply(&self, state: &SharedState) {
        self.floor.fetch_max(state.floor, Ordering::AcqRel);
        let pairs = self.buckets.iter().zip(&state.buckets);
        for (mine, &theirs) in pairs.chain(self.words.iter().zip(&state.words)) {
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
    words: [AtomicU64; WORD_BUCKETS / 64],
    everything: AtomicBool,
}

impl PendingScope {
    pub fn add(&self, scope: Scope) {
        if scope.everything {
            self.everything.store(true, Ordering::SeqCst);
        } else {
            self.buckets.fetch_or(scope.buckets, Ordering::SeqCst);
            for (mine, theirs) in self.words.iter().zip(scope.words.0) {
                mine.fetch_or(theirs, Ordering::SeqCst);
            }
        }
    }

    /// Everything added since the last call.
    pub fn take(&self) -> Scope {
        let buckets = self.buckets.swap(0, Ordering::SeqCst);
        let words = WordMask(std::array::from_fn(|index| {
            self.words[index].swap(0, Ordering::SeqCst)
        }));
        if self.everything.swap(false, Ordering::SeqCst) {
            Scope::EVERYTHING
        } else {
            Scope {
                buckets,
                words,
                everything: false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

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
        let scope = Scope::of_change(["tops", "laptops"], []);
        let buckets: Vec<_> = scope.buckets().collect();
        assert!(buckets.contains(&Bucket::of("tops").unwrap()));
        assert!(buckets.contains(&Bucket::of("laptops").unwrap()));
        assert!(!scope.is_everything());
        assert!(Scope::of_change(["tops", "tóps"], []).is_everything());
        assert_eq!(Scope::of_change([], []).buckets().count(), 0);
    }

    #[test]
    fn a_change_moves_its_categories_and_the_unfiltered_pages_only() {
        let generations = Generations::default();
        let tops = Bucket::of("tops").unwrap();
        let mut state = SharedState::from_fields(0, []);
        state.generation = 4;
        state.buckets[tops.index()] = 4;
        generations.apply(&state);
        assert_eq!(generations.of_listing(None, None).shared, 4);
        assert_eq!(generations.of_listing(Some("TOPS"), None).shared, 4);
        let other = ["laptops", "beauty", "tablets"]
            .into_iter()
            .find(|c| Bucket::of(c) != Some(tops))
            .unwrap();
        assert_eq!(generations.of_listing(Some(other), None).shared, 0);
        assert_eq!(generations.of_listing(Some("tóps"), None).shared, 4);

        generations.apply_everything(6);
        assert_eq!(generations.of_listing(Some(other), None).shared, 6);
        // An older state never moves anything back.
        generations.apply(&state);
        assert_eq!(generations.of_listing(Some("tops"), None).shared, 6);
        assert_eq!(generations.current().shared, 6);
    }

    #[test]
    fn the_shared_state_reads_the_hash_fields_and_skips_unknown_ones() {
        let fields = [
            ("floor", 3),
            ("at", 9),
            ("5", 8),
            ("64", 7),
            ("x", 1),
            ("w5", 6),
            ("w256", 2),
            ("wx", 1),
        ];
        let state = SharedState::from_fields(9, fields);
        assert_eq!((state.generation, state.floor), (9, 3));
        assert_eq!((state.buckets[5], state.words[5]), (8, 6));
        assert_eq!(state.buckets.iter().filter(|&&v| v != 0).count(), 1);
        assert_eq!(state.words.iter().filter(|&&v| v != 0).count(), 1);
    }

    fn search(text: &str) -> SearchTerms {
        SearchTerms::parse(text).unwrap().unwrap()
    }

    fn word(text: &str) -> WordBucket {
        WordBucket::of_search(&search(text)).unwrap()
    }

    #[test]
    fn a_search_word_has_the_bucket_of_its_first_three_characters() {
        assert_eq!(word("leather"), word("LEAther"));
        assert_eq!(word("leather"), word("lea"));
        // Every word of a search must match: the first one with a bucket stands for them.
        assert_eq!(word("crème leather"), word("leather"));
        for text in ["crème", "ſteel", "ǅemal"] {
            assert_eq!(WordBucket::of_search(&search(text)), None, "{text:?}");
        }
    }

    #[test]
    fn a_text_moves_the_buckets_of_its_word_starts_only() {
        let scope = Scope::of_change(["tops"], ["Oak desk", "A walnut-leather_chair, 2x"]);
        let moved: HashSet<_> = scope.words().collect();
        // `A` and `2x` are too short to start a search word; `alnut` and `ather` start no word.
        let starts: HashSet<_> = ["oak", "desk", "walnut", "leather", "chair"]
            .map(word)
            .into();
        assert_eq!(moved, starts);
        assert!(!scope.is_everything());
        // Outside ASCII the collation matches more than case (`ſ` is `s`): every word moves.
        let wide = Scope::of_change(["tops"], ["Crème"]);
        assert_eq!(wide.words().count(), WORD_BUCKETS);
        assert!(!wide.is_everything());
    }

    #[test]
    fn a_search_page_moves_with_its_category_and_word_together() {
        let generations = Generations::default();
        let tops = Bucket::of("tops").unwrap();
        let leather = word("leather");
        let oak = search("oak");
        assert_ne!(word("oak"), leather);
        let mut state = SharedState::from_fields(0, []);
        state.generation = 3;
        state.buckets[tops.index()] = 2;
        state.words[leather.index()] = 3;
        generations.apply(&state);
        let leather = search("leather");
        assert_eq!(generations.of_listing(None, Some(&leather)).shared, 3);
        assert_eq!(generations.of_listing(None, Some(&oak)).shared, 0);
        assert_eq!(
            generations.of_listing(Some("tops"), Some(&leather)).shared,
            2
        );
        // Without a bucket, the word gives way to the category, or to the whole deployment.
        let creme = search("crème");
        assert_eq!(generations.of_listing(Some("tops"), Some(&creme)).shared, 2);
        assert_eq!(generations.of_listing(None, Some(&creme)).shared, 3);
        assert_eq!(generations.of_listing(Some("tóps"), Some(&oak)).shared, 0);
    }

    #[test]
    fn pending_scopes_accumulate_until_taken() {
        let pending = PendingScope::default();
        pending.add(Scope::of_change(["tops"], ["oak"]));
        pending.add(Scope::of_change(["laptops"], ["leather"]));
        assert_eq!(
            pending.take(),
            Scope::of_change(["tops", "laptops"], ["oak leather"])
        );
        assert_eq!(pending.take(), Scope::default());
        pending.add(Scope::EVERYTHING);
        pending.add(Scope::of_change(["tops"], []));
        assert!(pending.take().is_everything());
    }
}
