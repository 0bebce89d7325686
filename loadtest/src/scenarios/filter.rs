//! `filter`: a category and a price range, in a random sort, then the next page.
//! Ranges start on whole $10 steps with a few widths, so popular ranges repeat as
//! they do for real shoppers, but there are far more of them than the cache keeps
//! hot: most first pages are read from MySQL.

use goose::prelude::*;

use super::{Pace, RunDefaults};
use crate::api::{self, Listing};

pub const DEFAULTS: RunDefaults = RunDefaults {
    users: 32,
    increase_rate: "16",
    run_time: "20s",
};

const TAKE: usize = 20;
/// Pages read after the first one.
const FOLLOW_PAGES: usize = 1;

/// Where a range may start: $0 to $4,990 in $10 steps (seeded prices run from $0.50
/// to $5,000).
const RANGE_STARTS: u64 = 500;
const RANGE_STEP_CENTS: u64 = 1_000;
/// Range widths, in cents: $10, $50, $100, $500.
const RANGE_WIDTHS_CENTS: [u64; 4] = [1_000, 5_000, 10_000, 50_000];

pub fn scenario(pace: Pace) -> Result<Scenario, GooseError> {
    Ok(pace
        .apply(scenario!("filter"))?
        .register_transaction(transaction!(category_and_price).set_name("filter")))
}

async fn category_and_price(user: &mut GooseUser) -> TransactionResult {
    let (min, max) = price_range(
        rand::random_range(0..RANGE_STARTS),
        api::pick(&RANGE_WIDTHS_CENTS),
    );
    let listing = Listing {
        category: Some(api::pick(&api::CATEGORIES)),
        sort: Some(api::pick(&api::SORTS)),
        min_price_cents: Some(min),
        max_price_cents: Some(max),
        ..Listing::new(TAKE)
    };
    api::follow(
        user,
        listing,
        FOLLOW_PAGES,
        "filter: first page",
        "filter: next page",
    )
    .await
}

/// The inclusive range `[start, start + width]` in cents for the `step`-th start.
fn price_range(step: u64, width_cents: u64) -> (u64, u64) {
    let min = step * RANGE_STEP_CENTS;
    (min, min + width_cents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_seeded_prices() {
        assert_eq!(price_range(0, 1_000), (0, 1_000));
        let widest = RANGE_WIDTHS_CENTS.iter().max().copied().unwrap();
        let (min, max) = price_range(RANGE_STARTS - 1, widest);
        assert_eq!(min, 499_000);
        // The last start still overlaps the dearest seeded price ($5,000.00).
        assert!(min <= 500_000 && max >= 500_000);
    }
}
