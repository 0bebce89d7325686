//! The catalogue sync: pages through the external catalogue and upserts what it finds.
//!
//! Off the request path: `product-api sync` runs it once, `serve` runs it every
//! `SYNC_INTERVAL_SECONDS` when that is set. Only one instance syncs at a time (a MySQL lease with a
//! fencing generation, see `store::sync`); a run that fails keeps its progress, and the next run
//! resumes there. It only creates and updates products keyed by `external_id`: it removes nothing,
//! and never touches the seed's rows. Caches are invalidated once per run, at its end.

use std::future::Future;
use std::time::Duration;

use crate::cache::ResponseCache;
use crate::domain::event::ExternalProduct;
use crate::store::sync::SyncWriteError;
use crate::store::{Store, StoreError};
use crate::upstream::CatalogueClient;

/// One page of the external catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePage {
    /// The products that can be stored (the rest were logged and skipped).
    pub products: Vec<ExternalProduct>,
    /// Entries the catalogue sent on this page, skipped ones included: where the next page starts.
    pub consumed: u64,
    /// How many products the catalogue holds in all.
    pub total: u64,
}

/// Where products come from: the external catalogue client in production.
pub trait CatalogueSource {
    /// The products from `skip` on, at most `limit` of them.
    fn fetch_page(
        &self,
        skip: u64,
        limit: u64,
    ) -> impl Future<Output = Result<SourcePage, SourceError>> + Send;
}

/// The catalogue could not be read; the run stops and keeps its progress.
#[derive(Debug, thiserror::Error)]
#[error("reading the external catalogue: {0}")]
pub struct SourceError(pub String);

/// How a run is done.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// Names this instance in the lease row.
    pub holder: String,
    /// Products per catalogue page and per write transaction.
    pub page_size: u64,
    /// How long the lease lasts without a batch renewing it.
    pub lease_ttl: Duration,
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncReport {
    /// Another instance holds the lease; nothing was done.
    Skipped,
    Completed {
        /// Where this run started (non-zero when it resumed an earlier, failed run).
        resumed_from: u64,
        read: u64,
        changed: u64,
    },
}

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the sync lease was lost to another instance; this run stopped writing")]
    LeaseLost,
}

impl From<SyncWriteError> for SyncError {
    fn from(error: SyncWriteError) -> Self {
        match error {
            SyncWriteError::LeaseLost => SyncError::LeaseLost,
            SyncWriteError::Store(error) => SyncError::Store(error),
        }
    }
}

/// Runs one sync if no other instance is running one.
pub async fn run_once(
    store: &Store,
    source: &impl CatalogueSource,
    cache: &ResponseCache,
    settings: &SyncSettings,
) -> Result<SyncReport, SyncError> {
    let Some(lease) = store
        .acquire_sync_lease(&settings.holder, settings.lease_ttl)
        .await?
    else {
        tracing::info!("sync: another instance holds the lease; skipping this run");
        crate::meter::sync_run("skipped");
        return Ok(SyncReport::Skipped);
    };
    let started_at = store.database_now().await?;
    let resumed_from = lease.resume_from;
    if resumed_from > 0 {
        tracing::info!(resumed_from, "sync: resuming an unfinished run");
    }
    let mut skip = resumed_from;
    let mut changed = 0u64;
    let outcome: Result<(), SyncError> = async {
        loop {
            let page = source.fetch_page(skip, settings.page_size).await?;
            if page.consumed == 0 {
                return Ok(());
            }
            let next_skip = skip + page.consumed;
            let batch = store
                .write_sync_batch(
                    &lease,
                    &page.products,
                    started_at,
                    next_skip,
                    settings.lease_ttl,
                )
                .await?;
            changed += batch.changed as u64;
            skip = next_skip;
            tracing::info!(synced = skip, total = page.total, changed, "sync: progress");
            crate::meter::sync_progress(skip, page.total);
            if skip >= page.total {
                return Ok(());
            }
        }
    }
    .await;
    if changed > 0 {
        cache.invalidate_everywhere().await;
    }
    match outcome {
        Ok(()) => {
            store.finish_sync(&lease).await?;
            tracing::info!(read = skip - resumed_from, changed, "sync: done");
            crate::meter::sync_run("completed");
            crate::meter::sync_succeeded();
            Ok(SyncReport::Completed {
                resumed_from,
                read: skip - resumed_from,
                changed,
            })
        }
        Err(error) => {
            if !matches!(error, SyncError::LeaseLost) {
                // Free the lease but keep `next_skip`, so the next run resumes here.
                if let Err(release) = store.release_sync_lease(&lease).await {
                    tracing::warn!(error = %release, "sync: could not release the lease; it expires by itself");
                }
            }
            tracing::warn!(%error, synced = skip, "sync: run stopped");
            crate::meter::sync_run("failed");
            Err(error)
        }
    }
}

impl CatalogueSource for CatalogueClient {
    async fn fetch_page(&self, skip: u64, limit: u64) -> Result<SourcePage, SourceError> {
        let page = CatalogueClient::fetch_page(self, skip, limit)
            .await
            .map_err(|error| SourceError(error.to_string()))?;
        for rejected in &page.rejected {
            tracing::warn!(external_id = ?rejected.external_id, reason = %rejected.reason, "sync: skipping a product");
        }
        let consumed = (page.products.len() + page.rejected.len()) as u64;
        let products = page
            .products
            .into_iter()
            .filter(|product| match product.validate() {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(external_id = %product.external_id, %error, "sync: skipping a product");
                    false
                }
            })
            .collect();
        Ok(SourcePage {
            products,
            consumed,
            total: page.total,
        })
    }
}
