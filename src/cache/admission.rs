//! L2 admission: which misses write their page to Redis.
//!
//! Most misses by nature are one-hit wonders: a page deep in a sort reached by one client's
//! cursor, a price band nobody asks for twice. Written to L2, each costs a Redis script call and
//! a ~5 KiB value kept for `L2_TTL_SECONDS` that no one reads: measured under issue 5's
//! `uncached` load (random cursors), Redis held 555 MB after 20 s. So, as CDNs cache on the
//! second request, a page is written to L2 (under the fill lock) only on its second miss at
//! this instance within the doorkeeper's memory; its first miss reads L2 (another instance or
//! an earlier run may have it) and loads it without the lock.
//!
//! The doorkeeper remembers the key without its generation: a page missed again because a
//! change moved its generation is a second miss, so the refills after a change, the herd the fill
//! lock exists for, keep their cross-instance coalescing. What a first miss gives up is that
//! coalescing for a key no instance has missed before: at most one load per instance.

use std::sync::atomic::{AtomicUsize, Ordering};

use fastbloom::AtomicBloomFilter;

use super::CacheKey;

/// `L2_ADMISSION`: when a miss writes its page to L2 (`every-miss`, `second-miss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AdmissionPolicy {
    /// Every miss takes the fill lock and writes its page.
    EveryMiss,
    /// A key's first miss at this instance reads L2 but neither locks nor writes.
    SecondMiss,
}

/// Keys one half of the doorkeeper holds before the older half is cleared: with both halves
/// it remembers the last 2^18 to 2^19 missed keys (at 5,000 misses a second, 52 s or more; at
/// `mixed`'s ~1,100, four minutes or more) in 2 × 315 KiB.
pub const KEYS_PER_HALF: usize = 1 << 18;

/// False positives a half allows when full: a one-hit wonder mistaken for a second miss is
/// written to L2 as before this policy existed, so 1 % costs 1 % of the saving.
const FALSE_POSITIVES: f64 = 0.01;

/// Decides, per miss, whether it is admitted to L2.
pub struct Admission {
    doorkeeper: Option<Doorkeeper>,
}

impl Admission {
    #[must_use]
    pub fn new(policy: AdmissionPolicy) -> Self {
        Self::with_capacity(policy, KEYS_PER_HALF)
    }

    /// `keys_per_half` smaller than [`KEYS_PER_HALF`] lets a test see the rotation.
    #[must_use]
    pub fn with_capacity(policy: AdmissionPolicy, keys_per_half: usize) -> Self {
        Admission {
            doorkeeper: match policy {
                AdmissionPolicy::EveryMiss => None,
                AdmissionPolicy::SecondMiss => Some(Doorkeeper::new(keys_per_half.max(1))),
            },
        }
    }

    /// Records a miss of `key`; whether its page goes to L2.
    #[must_use]
    pub fn admits(&self, key: &CacheKey) -> bool {
        self.doorkeeper
            .as_ref()
            .is_none_or(|doorkeeper| doorkeeper.missed_before(key.as_str()))
    }
}

/// Two Bloom filters taking turns: new keys go into the current one; a key counts as seen when
/// either holds it; when the current one is full, the other is cleared and becomes current. So
/// memory and the false-positive rate stay bounded, and a key is remembered for at least one
/// half's worth of later keys.
///
/// Lock-free and approximate under races: a key inserted while the halves turn may be
/// forgotten, which makes its next miss a first one again (one more load without the lock),
/// never a wrong page.
struct Doorkeeper {
    halves: [AtomicBloomFilter; 2],
    current: AtomicUsize,
    /// New keys inserted into the current half.
    filled: AtomicUsize,
    keys_per_half: usize,
}

impl Doorkeeper {
    fn new(keys_per_half: usize) -> Self {
        // The same seed in both halves: a key's bits are at the same places in each.
        let half = || {
            AtomicBloomFilter::with_false_pos(FALSE_POSITIVES)
                .seed(&0x6b65_7973)
                .expected_items(keys_per_half)
        };
        Doorkeeper {
            halves: [half(), half()],
            current: AtomicUsize::new(0),
            filled: AtomicUsize::new(0),
            keys_per_half,
        }
    }

    fn missed_before(&self, key: &str) -> bool {
        let current = self.current.load(Ordering::Acquire);
        if self.halves[current].insert(key) {
            return true;
        }
        let seen = self.halves[1 - current].contains(key);
        if self.filled.fetch_add(1, Ordering::AcqRel) + 1 >= self.keys_per_half {
            self.turn(current);
        }
        seen
    }

    /// Clears the older half and makes it current; only the caller that resets the count does.
    fn turn(&self, current: usize) {
        if self
            .filled
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |filled| {
                (filled >= self.keys_per_half).then_some(0)
            })
            .is_ok()
        {
            self.halves[1 - current].clear();
            self.current.store(1 - current, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Generation;
    use crate::request::{cursor::CursorKey, parse_listing};

    fn key(query: &str, shared: u64) -> CacheKey {
        let listing = parse_listing(Some(query), &CursorKey::new(b"k")).unwrap();
        CacheKey::for_listing(
            &listing,
            Generation {
                shared,
                local: shared,
            },
        )
    }

    #[test]
    fn a_key_is_admitted_from_its_second_miss_on() {
        let admission = Admission::new(AdmissionPolicy::SecondMiss);
        let page = key("category=tops&take=5", 1);
        assert!(!admission.admits(&page));
        assert!(admission.admits(&page));
        assert!(admission.admits(&page));
        assert!(!admission.admits(&key("category=tops&take=6", 1)));
    }

    #[test]
    fn a_miss_after_a_generation_move_is_a_second_miss() {
        let admission = Admission::new(AdmissionPolicy::SecondMiss);
        assert!(!admission.admits(&key("sort=price", 1)));
        assert!(admission.admits(&key("sort=price", 2)));
    }

    #[test]
    fn every_miss_admits_every_miss() {
        let admission = Admission::new(AdmissionPolicy::EveryMiss);
        let page = key("sort=price", 1);
        assert!(admission.admits(&page));
        assert!(admission.admits(&page));
    }

    /// A key stays remembered while the next half fills, and is forgotten once both halves
    /// have turned after it.
    #[test]
    fn keys_are_remembered_for_one_to_two_halves() {
        let admission = Admission::with_capacity(AdmissionPolicy::SecondMiss, 100);
        let first = key("search=lamp", 1);
        assert!(!admission.admits(&first));
        let fill = |from: usize| {
            for i in from..from + 100 {
                let _ = admission.admits(&key(&format!("take=5&min_price={}", i + 1), 1));
            }
        };
        fill(0);
        let again = key("search=lamp", 7);
        assert!(admission.admits(&again), "remembered by the older half");
        fill(100);
        fill(200);
        assert!(!admission.admits(&again), "both halves turned since");
    }

    #[test]
    fn the_policy_parses_and_names_its_values() {
        use crate::config::choice;
        assert_eq!(choice("second-miss"), Ok(AdmissionPolicy::SecondMiss));
        assert_eq!(choice(" Every-Miss "), Ok(AdmissionPolicy::EveryMiss));
        assert!(choice::<AdmissionPolicy>("always")
            .unwrap_err()
            .contains("`second-miss`"));
    }
}
