//! Product changes from the outside world, applied exactly once.
//!
//! The webhook event id is inserted in the same transaction as the change it causes, so an event
//! is either recorded with its change or not at all: a failure midway leaves nothing behind and the
//! sender's retry applies it. `external_versions` keeps the time of the newest change applied per
//! product (also after a delete), so a late, older event changes nothing.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{IsolationLevel, Transaction, TxOpts, Value};

use super::sql::{datetime_value, timestamp_of};
use super::{Store, StoreError};
use crate::domain::event::{ExternalProduct, ProductChange, ProductEvent};
use crate::domain::signature;

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The change is now in the catalogue.
    Changed(Moved),
    /// Recorded, but a newer change was already applied: nothing changed.
    Stale,
    /// This event id was processed before.
    Duplicate,
}

/// A changed product's category and text before and after the change (`None`: it did not
/// exist): the listings whose pages the change may have altered, besides those without a
/// filter, are those of these categories and of the searches these texts can match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub from: Option<Listed>,
    pub to: Option<Listed>,
}

/// What of a product decides the listings it is in: its category and the text a search matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub category: String,
    pub name: String,
    pub description: String,
}

impl Moved {
    pub fn categories(&self) -> impl Iterator<Item = &str> {
        self.versions().map(|listed| listed.category.as_str())
    }

    /// The names and descriptions before and after.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.versions()
            .flat_map(|listed| [listed.name.as_str(), listed.description.as_str()])
    }

    fn versions(&self) -> impl Iterator<Item = &Listed> {
        self.from.iter().chain(&self.to)
    }
}

/// How long a delivery waits for a concurrent delivery of the same event or product.
const LOCK_WAIT_SECONDS: u32 = 5;
/// [`LOCK_WAIT_SECONDS`] as a duration: part of the longest time a delivery may take.
const LOCK_WAIT: Duration = Duration::from_secs(LOCK_WAIT_SECONDS as u64);
const ER_DUP_ENTRY: u16 = 1062;
const ER_LOCK_DEADLOCK: u16 = 1213;
/// MySQL's error for a lock wait that ran out: another delivery of the event is in flight.
pub const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;

impl Store {
    /// Applies one webhook event under its id, exactly once, within [`apply_deadline`]: a
    /// database that stops answering (a dead network, a hung server) costs a delivery a bounded
    /// time, never a hang. Past the deadline the database is taken as unavailable (503); the
    /// transaction is rolled back, so the sender's retry applies the event.
    pub async fn apply_event(
        &self,
        event_id: &str,
        event: &ProductEvent,
    ) -> Result<Applied, StoreError> {
        let deadline = apply_deadline(self.query_timeout);
        let attempts = async {
            let mut attempts = 0;
            loop {
                attempts += 1;
                match self.try_apply_event(event_id, event).await {
                    Err(StoreError::Database(error))
                        if server_code(&error) == Some(ER_LOCK_DEADLOCK) && attempts < 3 =>
                    {
                        tracing::debug!(event_id, "deadlock applying an event; retrying");
                    }
                    outcome => return outcome,
                }
            }
        };
        tokio::time::timeout(deadline, attempts)
            .await
            .unwrap_or(Err(StoreError::Timeout(deadline)))
    }

    /// One attempt. The set-up waits for no lock, so it gets the query deadline: a dead pooled
    /// connection fails the delivery fast. The transaction may wait for a concurrent delivery's
    /// locks, so only the caller's deadline bounds it.
    async fn try_apply_event(
        &self,
        event_id: &str,
        event: &ProductEvent,
    ) -> Result<Applied, StoreError> {
        let mut conn = self
            .bounded(async {
                let mut conn = self.request_connection().await?;
                conn.query_drop(format!(
                    "SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_SECONDS}"
                ))
                .await?;
                Ok::<_, StoreError>(conn)
            })
            .await?;
        // READ COMMITTED: under REPEATABLE READ the `UPDATE products … WHERE external_id = ?` of
        // a new product takes a gap lock, so two deliveries creating two new products both hold
        // the gap and then deadlock on each other's INSERT (seen under concurrent deliveries,
        // failing all three attempts). No gap lock is needed: changes of one product are
        // serialised by its `external_versions` row lock, and the unique index guards ids.
        let mut options = TxOpts::default();
        options.with_isolation_level(IsolationLevel::ReadCommitted);
        let mut tx = conn.start_transaction(options).await?;
        let recorded = tx
            .exec_drop(
                "INSERT INTO webhook_events (event_id, event_type, received_at) VALUES (?, ?, UTC_TIMESTAMP(6))",
                (event_id, event.change.kind()),
            )
            .await;
        match recorded {
            Err(mysql_async::Error::Server(error)) if error.code == ER_DUP_ENTRY => {
                tx.rollback().await?;
                return Ok(Applied::Duplicate);
            }
            other => other?,
        }
        let applied = apply_change(&mut tx, event).await?;
        tx.commit().await?;
        Ok(applied)
    }
}

/// The longest applying an event may take: the lock wait for a concurrent delivery plus the
/// query deadline for its own statements.
#[must_use]
pub fn apply_deadline(query_timeout: Duration) -> Duration {
    LOCK_WAIT + query_timeout
}

/// Applies `event` inside `tx` unless a newer change of the same product was applied already.
pub(super) async fn apply_change(
    tx: &mut Transaction<'_>,
    event: &ProductEvent,
) -> Result<Applied, StoreError> {
    let external_id = event.change.external_id();
    // Creates the version row if missing, so the lock below always has a row to take.
    tx.exec_drop(
        "INSERT IGNORE INTO external_versions (external_id, last_change_at, deleted) VALUES (?, '1970-01-01 00:00:01', 0)",
        (external_id,),
    )
    .await?;
    let last: Option<Value> = tx
        .exec_first(
            "SELECT last_change_at FROM external_versions WHERE external_id = ? FOR UPDATE",
            (external_id,),
        )
        .await?;
    let last = last.as_ref().and_then(timestamp_of);
    if last.is_some_and(|last| last >= event.happened_at) {
        return Ok(Applied::Stale);
    }
    // Under the version row's lock, so no other change of this product can come between.
    let from = tx
        .exec_first(
            "SELECT category, name, description FROM products WHERE external_id = ?",
            (external_id,),
        )
        .await?
        .map(|(category, name, description)| Listed {
            category,
            name,
            description,
        });
    let to = match &event.change {
        ProductChange::Upsert(product) => {
            upsert_product(tx, product, from.is_some()).await?;
            Some(Listed {
                category: product.category.clone(),
                name: product.name.clone(),
                description: product.description.clone(),
            })
        }
        ProductChange::Delete { external_id } => {
            if from.is_some() {
                tx.exec_drop("DELETE FROM products WHERE external_id = ?", (external_id,))
                    .await?;
            }
            None
        }
    };
    tx.exec_drop(
        "UPDATE external_versions SET last_change_at = ?, deleted = ? WHERE external_id = ?",
        (
            datetime_value(event.happened_at),
            matches!(event.change, ProductChange::Delete { .. }),
            external_id,
        ),
    )
    .await?;
    Ok(Applied::Changed(Moved { from, to }))
}

async fn upsert_product(
    tx: &mut Transaction<'_>,
    product: &ExternalProduct,
    exists: bool,
) -> Result<(), StoreError> {
    let fields: [Value; 4] = [
        product.name.as_str().into(),
        product.description.as_str().into(),
        product.price.to_decimal_string().into(),
        product.category.as_str().into(),
    ];
    // Written with the text it signs, in the same statement: a row's signature never describes
    // other text (search walks would miss the row).
    let signature = signature::of_product(&product.name, &product.description);
    let tail = [signature.into(), product.external_id.as_str().into()];
    let (sql, params): (&str, Vec<Value>) = if exists {
        // `updated_at` first: MySQL and MariaDB evaluate SET left to right, so the comparison sees
        // the old values, and an event that changes nothing leaves the row as it was.
        (
            "UPDATE products SET updated_at = IF(name <> ? OR description <> ? OR price <> CAST(? AS DECIMAL(12,2)) OR category <> ?, UTC_TIMESTAMP(6), updated_at), name = ?, description = ?, price = CAST(? AS DECIMAL(12,2)), category = ?, search_signature = ? WHERE external_id = ?",
            fields.iter().cloned().chain(fields.clone()).chain(tail).collect(),
        )
    } else {
        (
            "INSERT INTO products (name, description, price, category, created_at, updated_at, search_signature, external_id) VALUES (?, ?, CAST(? AS DECIMAL(12,2)), ?, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), ?, ?)",
            fields.into_iter().chain(tail).collect(),
        )
    };
    tx.exec_drop(sql, params).await?;
    Ok(())
}

/// The server's error code, when the error came from the server.
#[must_use]
pub fn server_code(error: &mysql_async::Error) -> Option<u16> {
    match error {
        mysql_async::Error::Server(server) => Some(server.code),
        _ => None,
    }
}
