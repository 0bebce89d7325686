//! `browse`: the catalogue's front door. Each iteration reads the first page of a
//! random category (or of everything) in a random sort. About a hundred distinct
//! pages exist, so after the first seconds nearly every request is an L1 hit: this
//! scenario measures the cached path.

use goose::prelude::*;

use super::{Pace, RunDefaults};
use crate::api::{self, Listing};

/// Enough users to keep both cores busy on the cached path without goose itself
/// taking most of the CPU.
pub const DEFAULTS: RunDefaults = RunDefaults {
    users: 32,
    increase_rate: "16",
    run_time: "20s",
};

/// The API's default page size.
const TAKE: usize = 20;

/// One iteration in this many lists every category instead of one.
const ALL_CATEGORIES_ONE_IN: u32 = 25;

pub fn scenario(pace: Pace) -> Result<Scenario, GooseError> {
    Ok(pace
        .apply(scenario!("browse"))?
        .register_transaction(transaction!(first_page).set_name("browse")))
}

async fn first_page(user: &mut GooseUser) -> TransactionResult {
    let category = if rand::random_ratio(1, ALL_CATEGORIES_ONE_IN) {
        None
    } else {
        Some(api::pick(&api::CATEGORIES))
    };
    let listing = Listing {
        category,
        sort: Some(api::pick(&api::SORTS)),
        ..Listing::new(TAKE)
    };
    api::fetch_page(user, listing, "browse: first page")
        .await
        .map(drop)
}
