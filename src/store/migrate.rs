//! Schema migrations: the numbered files of `migrations/`, compiled into the binary and applied
//! in order, each recorded in `schema_migrations` so a second run is a no-op.
//!
//! A named lock (`GET_LOCK`, on MySQL 8 and MariaDB) keeps two instances starting together
//! from applying the same file twice.

use mysql_async::prelude::Queryable;

use super::{Store, StoreError};

/// A migration: its number, its name and its SQL (statements separated by `;` at line ends).
struct Migration {
    version: u32,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "create_products",
        sql: include_str!("../../migrations/0001_create_products.sql"),
    },
    Migration {
        version: 2,
        name: "webhooks_and_sync",
        sql: include_str!("../../migrations/0002_webhooks_and_sync.sql"),
    },
    Migration {
        version: 3,
        name: "date_indexes_carry_price",
        sql: include_str!("../../migrations/0003_date_indexes_carry_price.sql"),
    },
    Migration {
        version: 4,
        name: "replication_heartbeat",
        sql: include_str!("../../migrations/0004_replication_heartbeat.sql"),
    },
    Migration {
        version: 5,
        name: "price_indexes_carry_date",
        sql: include_str!("../../migrations/0005_price_indexes_carry_date.sql"),
    },
    Migration {
        version: 6,
        name: "search_signature",
        sql: include_str!("../../migrations/0006_search_signature.sql"),
    },
];

/// How long to wait for another instance's migration run.
const LOCK_WAIT_SECONDS: u32 = 60;

/// Applies every migration not yet recorded; returns how many ran.
pub async fn run(store: &Store) -> Result<usize, StoreError> {
    let mut conn = store.connection().await?;
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INT UNSIGNED NOT NULL PRIMARY KEY,
            name VARCHAR(255) NOT NULL,
            applied_at DATETIME(6) NOT NULL
        ) ENGINE = InnoDB",
    )
    .await?;
    let locked: Option<i64> = conn
        .exec_first(
            "SELECT GET_LOCK('product_api_migrate', ?)",
            (LOCK_WAIT_SECONDS,),
        )
        .await?;
    if locked != Some(1) {
        return Err(StoreError::Database(mysql_async::Error::Other(
            "another instance holds the migration lock".into(),
        )));
    }
    let result = apply_pending(&mut conn).await;
    conn.query_drop("DO RELEASE_LOCK('product_api_migrate')")
        .await?;
    result
}

async fn apply_pending(conn: &mut mysql_async::Conn) -> Result<usize, StoreError> {
    let applied: Vec<u32> = conn
        .query("SELECT version FROM schema_migrations ORDER BY version")
        .await?;
    let mut count = 0;
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applying migration"
        );
        for statement in statements(migration.sql) {
            conn.query_drop(statement).await?;
        }
        conn.exec_drop(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, UTC_TIMESTAMP(6))",
            (migration.version, migration.name),
        )
        .await?;
        count += 1;
    }
    Ok(count)
}

/// Splits a file into statements at `;` ending a line; comment-only chunks are dropped.
fn statements(sql: &str) -> impl Iterator<Item = &str> {
    sql.split(";\n").map(str::trim).filter(|chunk| {
        chunk
            .lines()
            .any(|line| !line.trim().is_empty() && !line.trim_start().starts_with("--"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_and_split_into_statements() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, index + 1);
            assert!(statements(migration.sql).count() >= 1);
        }
        let split: Vec<_> = statements("-- only a comment\n;\nSELECT 1;\nSELECT 2;\n").collect();
        assert_eq!(split, ["SELECT 1", "SELECT 2"]);
    }
}
