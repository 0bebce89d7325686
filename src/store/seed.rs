//! Writes seed rows: counting what is there and inserting batches with one prepared statement.

use mysql_async::prelude::Queryable;
use mysql_async::Value;

use super::sql::datetime_value;
use super::{Store, StoreError};
use crate::domain::signature;
use crate::seed::SeedProduct;

/// Rows the seed has written so far (rows from the outside world carry an `external_id`).
pub async fn count_seeded(store: &Store) -> Result<u64, StoreError> {
    let mut conn = store.connection().await?;
    let count: Option<u64> = conn
        .query_first("SELECT COUNT(*) FROM products WHERE external_id IS NULL")
        .await?;
    Ok(count.unwrap_or(0))
}

/// Inserts `rows` in one multi-row prepared statement.
pub async fn insert(store: &Store, rows: &[SeedProduct]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut sql = String::with_capacity(100 + rows.len() * 16);
    sql.push_str(
        "INSERT INTO products (name, description, price, category, created_at, updated_at, search_signature) VALUES ",
    );
    for index in 0..rows.len() {
        if index > 0 {
            sql.push(',');
        }
        sql.push_str("(?, ?, ?, ?, ?, ?, ?)");
    }
    let mut params = Vec::with_capacity(rows.len() * 7);
    for row in rows {
        params.push(Value::Bytes(row.name.as_bytes().to_vec()));
        params.push(Value::Bytes(row.description.as_bytes().to_vec()));
        params.push(Value::Bytes(row.price.to_decimal_string().into_bytes()));
        params.push(Value::Bytes(row.category.as_bytes().to_vec()));
        params.push(datetime_value(row.created_at));
        params.push(datetime_value(row.updated_at));
        params.push(Value::UInt(signature::of_product(
            &row.name,
            &row.description,
        )));
    }
    let mut conn = store.connection().await?;
    conn.exec_drop(sql, params).await?;
    Ok(())
}
