//! Keeps every row's `search_signature` what its text gives (`domain::signature`).
//!
//! The service's own writes set the signature in the statement that writes the text. Rows it did
//! not write that way hold something else: every row written before migration 0006 (the
//! column's default, every bit set: correct, but a search walk reads them all), and any row whose
//! text an older instance changed during a rolling upgrade (a stale signature: a search walk
//! could miss the row). So at start-up the service reads the whole table in id order, in
//! batches, and re-signs the rows whose signature differs.
//!
//! The read is plain (no locks, nothing to wait for when all is signed, as it is after the first
//! run). A batch with rows to fix is read again with `FOR UPDATE`, so a webhook changing one of
//! those rows meanwhile either committed first (its text is the one signed) or waits for this
//! transaction and then writes its own signature with its own text.

use mysql_async::prelude::Queryable;
use mysql_async::{TxOpts, Value};

use super::{Store, StoreError};
use crate::domain::signature;

/// Rows read per batch: ~250 KiB of text at the seed's ~120 bytes a row, ~1.6 ms of reading.
const BATCH_ROWS: u64 = 2_000;

/// What a reconciliation found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Rows read.
    pub checked: u64,
    /// Rows whose signature was replaced.
    pub signed: u64,
}

/// Reads every row once and re-signs those whose signature is not their text's.
pub async fn reconcile(store: &Store) -> Result<Reconciled, StoreError> {
    let mut run = Reconciliation::default();
    while run.step(store).await? {}
    Ok(run.totals)
}

/// A reconciliation in batches, so a caller can stop between them (the service's shutdown).
#[derive(Debug, Default)]
pub struct Reconciliation {
    /// The last id checked.
    after: u64,
    pub totals: Reconciled,
}

impl Reconciliation {
    /// Checks the next batch of rows and re-signs its stale ones; false once past the last row.
    pub async fn step(&mut self, store: &Store) -> Result<bool, StoreError> {
        let rows = read_batch(store, self.after).await?;
        let Some(last) = rows.last().map(|row| row.id) else {
            return Ok(false);
        };
        self.totals.checked += rows.len() as u64;
        if rows.iter().any(Row::is_stale) {
            self.totals.signed += sign_range(store, self.after, last).await?;
        }
        self.after = last;
        Ok(true)
    }
}

/// One row as the check needs it.
struct Row {
    id: u64,
    name: String,
    description: String,
    signature: u64,
}

impl Row {
    fn expected(&self) -> u64 {
        signature::of_product(&self.name, &self.description)
    }

    /// `(id, signature)` to write when the stored signature is not the text's.
    fn fix(&self) -> Option<(u64, u64)> {
        let expected = self.expected();
        (self.signature != expected).then_some((self.id, expected))
    }

    fn is_stale(&self) -> bool {
        self.fix().is_some()
    }
}

const SELECT_BATCH: &str = "SELECT id, name, description, search_signature FROM products \
     WHERE id > ? ORDER BY id LIMIT ?";

async fn read_batch(store: &Store, after: u64) -> Result<Vec<Row>, StoreError> {
    let mut conn = store.connection().await?;
    let rows: Vec<(u64, String, String, u64)> =
        conn.exec(SELECT_BATCH, (after, BATCH_ROWS)).await?;
    Ok(rows.into_iter().map(row_of).collect())
}

fn row_of((id, name, description, signature): (u64, String, String, u64)) -> Row {
    Row {
        id,
        name,
        description,
        signature,
    }
}

/// Locks the rows with ids in `(after, last]`, and re-signs each whose signature is stale now.
async fn sign_range(store: &Store, after: u64, last: u64) -> Result<u64, StoreError> {
    let mut conn = store.connection().await?;
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let rows: Vec<(u64, String, String, u64)> = tx
        .exec(
            "SELECT id, name, description, search_signature FROM products \
             WHERE id > ? AND id <= ? ORDER BY id FOR UPDATE",
            (after, last),
        )
        .await?;
    let stale: Vec<(u64, u64)> = rows
        .into_iter()
        .filter_map(|row| row_of(row).fix())
        .collect();
    if let Some((sql, params)) = update_of(&stale) {
        tx.exec_drop(sql, params).await?;
    }
    tx.commit().await?;
    Ok(stale.len() as u64)
}

/// One `UPDATE` setting each stale row's signature: `CASE id WHEN ? THEN ? … END`, by primary key.
fn update_of(stale: &[(u64, u64)]) -> Option<(String, Vec<Value>)> {
    if stale.is_empty() {
        return None;
    }
    let mut sql = String::with_capacity(80 + stale.len() * 18);
    sql.push_str("UPDATE products SET search_signature = CASE id");
    let mut params = Vec::with_capacity(stale.len() * 3);
    for &(id, signature) in stale {
        sql.push_str(" WHEN ? THEN ?");
        params.push(Value::UInt(id));
        params.push(Value::UInt(signature));
    }
    sql.push_str(" END WHERE id IN (");
    for (index, &(id, _)) in stale.iter().enumerate() {
        sql.push_str(if index == 0 { "?" } else { ", ?" });
        params.push(Value::UInt(id));
    }
    sql.push(')');
    Some((sql, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64, name: &str, signature: u64) -> Row {
        Row {
            id,
            name: name.to_owned(),
            description: String::new(),
            signature,
        }
    }

    #[test]
    fn a_row_is_stale_unless_its_signature_is_its_texts() {
        assert!(row(1, "oak", signature::UNSIGNED).is_stale());
        assert!(!row(1, "oak", signature::of_product("oak", "")).is_stale());
        assert!(row(1, "oak", signature::of_product("walnut", "")).is_stale());
    }

    #[test]
    fn the_update_sets_each_stale_row_by_its_id() {
        let stale: Vec<(u64, u64)> = [row(3, "oak", 0), row(9, "walnut", 0)]
            .iter()
            .filter_map(Row::fix)
            .collect();
        let (sql, params) = update_of(&stale).unwrap();
        assert_eq!(
            sql,
            "UPDATE products SET search_signature = CASE id WHEN ? THEN ? WHEN ? THEN ? END \
             WHERE id IN (?, ?)"
        );
        assert_eq!(params.len(), 6);
        assert_eq!(params[1], Value::UInt(signature::of_product("oak", "")));
        assert!(update_of(&[]).is_none());
    }
}
