//! L1: finished responses in process memory (moka), bounded by bytes.
//!
//! A hit costs no I/O at all. Concurrent misses of one key are coalesced by moka's entry API,
//! so one instance sends one query per key however many requests wait for it.

use std::time::Duration;

use moka::future::Cache;

use super::{key::CacheKey, CachedPage};

/// The in-process cache.
#[derive(Clone)]
pub struct L1 {
    pages: Cache<CacheKey, CachedPage>,
}

impl L1 {
    #[must_use]
    pub fn new(capacity_bytes: u64, ttl: Duration) -> Self {
        let pages = Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|key: &CacheKey, page: &CachedPage| {
                u32::try_from(key.as_str().len() + page.weight()).unwrap_or(u32::MAX)
            })
            .time_to_live(ttl)
            .build();
        L1 { pages }
    }

    pub async fn get(&self, key: &CacheKey) -> Option<CachedPage> {
        self.pages.get(key).await
    }

    /// The entry API, for coalesced loading.
    #[must_use]
    pub fn pages(&self) -> &Cache<CacheKey, CachedPage> {
        &self.pages
    }
}
