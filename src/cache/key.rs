//! Cache keys: the canonical form of a listing, so equivalent requests share one entry.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::request::Listing;

/// A normalised listing (canonical sort and filters, page size and start position) under the
/// cache generation it was read in: a change to the catalogue moves every instance to a new
/// generation, so entries filled before it are never read again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    text: Arc<str>,
    generation: Generation,
}

/// Which catalogue state a cache entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Generation {
    /// The deployment-wide generation, kept in Redis; part of L2 keys.
    pub shared: u64,
    /// This instance's own count of invalidations it has seen; part of L1 keys only, so a
    /// change seen while Redis is down still retires this instance's L1 entries.
    pub local: u64,
}

impl CacheKey {
    /// `sort=-price&category=tops&take=20&after=1250.42` (position as key and id).
    #[must_use]
    pub fn for_listing(listing: &Listing, generation: Generation) -> Self {
        let mut key = String::with_capacity(listing.canonical_filters.len() + 48);
        key.push_str(&listing.canonical_filters);
        let _ = write!(key, "&take={}", listing.query.take);
        if let Some(after) = listing.query.after {
            let _ = write!(key, "&after={}.{}", after.key, after.id);
        }
        CacheKey {
            text: key.into(),
            generation,
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    #[must_use]
    pub fn generation(&self) -> Generation {
        self.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{cursor::CursorKey, parse_listing};

    fn key(query: &str) -> String {
        let listing = parse_listing(Some(query), &CursorKey::new(b"k")).unwrap();
        CacheKey::for_listing(&listing, Generation::default())
            .as_str()
            .to_owned()
    }

    #[test]
    fn equivalent_requests_share_a_key() {
        let cases = [
            ("", "take=20&sort=-created_at"),
            ("sort=-PRICE&category=tops", "category=tops&sort=-price"),
            ("min_price=1.5&take=5", "take=05&min_price=1.50"),
            ("search=Oak%20Lamp", "search=oak+lamp"),
        ];
        for (a, b) in cases {
            assert_eq!(key(a), key(b), "{a} vs {b}");
        }
        assert_eq!(key(""), "sort=-created_at&take=20");
        assert_ne!(key("take=5"), key("take=6"));
    }
}
