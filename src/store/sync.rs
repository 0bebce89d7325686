//! The catalogue sync's writes: a lease with a fencing generation, and batches of upserts that
//! only land while the lease is still held.
//!
//! The lease row is locked (`FOR UPDATE`) in the same transaction as each batch's writes, so a
//! holder that was paused past its lease, and lost it to another instance, finds a different
//! generation and writes nothing: a Redis lock alone could not give that guarantee.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::TxOpts;

use super::events::{apply_change, Applied};
use super::{Store, StoreError};
use crate::domain::event::{ExternalProduct, ProductChange, ProductEvent};
use crate::domain::Timestamp;

/// The one lease the catalogue sync takes.
const LEASE_NAME: &str = "catalogue";

/// A held lease: valid while the row still carries this holder and generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub generation: u64,
    /// Where an unfinished earlier run stopped (0 for a fresh run).
    pub resume_from: u64,
}

/// What a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchOutcome {
    pub changed: usize,
    pub unchanged: usize,
}

/// Why a batch was not written.
#[derive(Debug, thiserror::Error)]
pub enum SyncWriteError {
    #[error("the sync lease was lost to another instance")]
    LeaseLost,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<mysql_async::Error> for SyncWriteError {
    fn from(error: mysql_async::Error) -> Self {
        SyncWriteError::Store(StoreError::Database(error))
    }
}

impl Store {
    /// Takes the sync lease for `ttl` if it is free or expired; `None` when another holder has it.
    pub async fn acquire_sync_lease(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let mut conn = self.connection().await?;
        conn.exec_drop(
            "INSERT IGNORE INTO sync_lease (name, holder, generation, expires_at, next_skip) VALUES (?, '', 0, '1970-01-01 00:00:01', 0)",
            (LEASE_NAME,),
        )
        .await?;
        conn.exec_drop(
            "UPDATE sync_lease SET holder = ?, generation = generation + 1, expires_at = DATE_ADD(UTC_TIMESTAMP(6), INTERVAL ? MICROSECOND) WHERE name = ? AND expires_at < UTC_TIMESTAMP(6)",
            (holder, micros(ttl), LEASE_NAME),
        )
        .await?;
        if conn.affected_rows() != 1 {
            return Ok(None);
        }
        let row: Option<(u64, u64)> = conn
            .exec_first(
                "SELECT generation, next_skip FROM sync_lease WHERE name = ? AND holder = ?",
                (LEASE_NAME, holder),
            )
            .await?;
        Ok(row.map(|(generation, resume_from)| Lease {
            holder: holder.to_owned(),
            generation,
            resume_from,
        }))
    }

    /// Upserts `products` as changes made at `run_started_at`, records `next_skip` and extends
    /// the lease, all in one transaction that first checks the lease is still ours.
    pub async fn write_sync_batch(
        &self,
        lease: &Lease,
        products: &[ExternalProduct],
        run_started_at: Timestamp,
        next_skip: u64,
        ttl: Duration,
    ) -> Result<BatchOutcome, SyncWriteError> {
        let mut conn = self.connection().await?;
        let mut tx = conn.start_transaction(TxOpts::default()).await?;
        let current: Option<(String, u64)> = tx
            .exec_first(
                "SELECT holder, generation FROM sync_lease WHERE name = ? AND expires_at > UTC_TIMESTAMP(6) FOR UPDATE",
                (LEASE_NAME,),
            )
            .await?;
        if current != Some((lease.holder.clone(), lease.generation)) {
            tx.rollback().await?;
            return Err(SyncWriteError::LeaseLost);
        }
        let mut outcome = BatchOutcome::default();
        for product in products {
            let event = ProductEvent {
                change: ProductChange::Upsert(product.clone()),
                happened_at: run_started_at,
            };
            match apply_change(&mut tx, &event).await? {
                Applied::Changed(_) => outcome.changed += 1,
                Applied::Stale | Applied::Duplicate => outcome.unchanged += 1,
            }
        }
        tx.exec_drop(
            "UPDATE sync_lease SET next_skip = ?, expires_at = DATE_ADD(UTC_TIMESTAMP(6), INTERVAL ? MICROSECOND) WHERE name = ? AND generation = ?",
            (next_skip, micros(ttl), LEASE_NAME, lease.generation),
        )
        .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Ends a run: the next run starts from the beginning, and the lease is free at once.
    pub async fn finish_sync(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        conn.exec_drop(
            "UPDATE sync_lease SET next_skip = 0, expires_at = '1970-01-01 00:00:01' WHERE name = ? AND generation = ?",
            (LEASE_NAME, lease.generation),
        )
        .await?;
        Ok(())
    }

    /// Frees the lease without resetting progress, so the next run resumes where this one stopped.
    pub async fn release_sync_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        conn.exec_drop(
            "UPDATE sync_lease SET expires_at = '1970-01-01 00:00:01' WHERE name = ? AND generation = ?",
            (LEASE_NAME, lease.generation),
        )
        .await?;
        Ok(())
    }

    /// The time of the database server, so every instance's runs are ordered on one clock.
    pub async fn database_now(&self) -> Result<Timestamp, StoreError> {
        let mut conn = self.connection().await?;
        // The binary protocol (exec) returns a DATETIME as a date value, the text one as bytes.
        let now: Option<mysql_async::Value> =
            conn.exec_first("SELECT UTC_TIMESTAMP(6)", ()).await?;
        let now = now.unwrap_or(mysql_async::Value::NULL);
        super::sql::timestamp_of(&now).ok_or(StoreError::Decode {
            column: "UTC_TIMESTAMP(6)",
            value: now,
        })
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
