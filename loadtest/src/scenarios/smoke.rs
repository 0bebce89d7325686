//! `smoke`: each iteration checks `/health`, then reads a random category's first
//! listing page and follows `next_cursor` for up to two more pages. Light load,
//! short run: it answers "does the API work end to end", not "how fast is it".

use std::time::Duration;

use goose::prelude::*;

use super::RunDefaults;
use crate::api::{self, Listing};

/// Few users for a short time: enough to exercise the cache and pagination paths
/// concurrently without turning a smoke check into a benchmark.
pub const DEFAULTS: RunDefaults = RunDefaults {
    users: 4,
    increase_rate: "4",
    run_time: "10s",
};

/// Items per page: small enough that most categories have a third page to follow.
const TAKE: usize = 10;

/// Pages to read after the first one.
const FOLLOW_PAGES: usize = 2;

pub fn scenario() -> Result<Scenario, GooseError> {
    Ok(scenario!("smoke")
        // A short pause between transactions keeps the load a smoke check's; it also
        // gives coordinated-omission mitigation a cadence to back-fill against.
        .set_wait_time(Duration::from_millis(10), Duration::from_millis(50))?
        .register_transaction(transaction!(health).set_name("health"))
        .register_transaction(transaction!(paginate).set_name("paginate")))
}

async fn health(user: &mut GooseUser) -> TransactionResult {
    api::get_ok(user, "/health", "/health").await
}

/// First page with a random category and sort, then up to [`FOLLOW_PAGES`] more by
/// cursor. A last page (`next_cursor` null) ends the walk early without an error.
async fn paginate(user: &mut GooseUser) -> TransactionResult {
    let first = Listing {
        category: Some(api::pick(&api::CATEGORIES)),
        sort: Some(api::pick(&api::SORTS)),
        ..Listing::new(TAKE)
    };
    api::follow(
        user,
        first,
        FOLLOW_PAGES,
        "/products/v1 first page",
        "/products/v1 next page",
    )
    .await
}
