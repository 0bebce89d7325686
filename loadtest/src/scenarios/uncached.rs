//! `uncached` and `uncached-search`: every request a page the caches cannot hold, so each
//! one is answered by MySQL. Issue 5's targets 2 and 3 are about exactly these: each
//! indexed shape (and each search) uncached, at 32 connections, p99 ≤ 10 ms (≤ 50 ms
//! for search).
//!
//! A page is made unique by its cursor: the user signs a cursor at a random position
//! (a random sort key and id anywhere in the seeded ranges) with the service's cursor
//! secret, exactly as the service would for that query, so pages are read at every
//! depth and no two requests share a cache key.

use std::sync::OnceLock;

use goose::prelude::*;
use product_api::domain::{Position, Sort};
use product_api::request::cursor::CursorKey;
use product_api::seed::{CREATED_FROM, PRICE_CENTS, THREE_YEARS_MICROS};

use super::search::{COMMON_WORDS, RARE_WORDS};
use super::{Pace, RunDefaults};
use crate::api::{self, Listing};

pub const DEFAULTS: RunDefaults = RunDefaults {
    users: 32,
    increase_rate: "32",
    run_time: "20s",
};

const TAKE: usize = 20;
/// Ids from 1 to about the seeded row count (1M); the other ranges are the seed's own
/// (`product_api::seed`).
const IDS: std::ops::RangeInclusive<u64> = 1..=1_000_000;

static CURSOR_KEY: OnceLock<CursorKey> = OnceLock::new();

/// Sets the key cursors are signed with: the service's `CURSOR_SECRET`.
pub fn set_cursor_secret(secret: &str) {
    let _ = CURSOR_KEY.set(CursorKey::new(secret.as_bytes()));
}

/// The shapes of target 2, one goose request name each.
pub fn scenario(pace: Pace) -> Result<Scenario, GooseError> {
    Ok(pace
        .apply(scenario!("uncached"))?
        .register_transaction(transaction!(indexed_shape).set_name("uncached")))
}

/// The searches of target 3, one goose request name each.
pub fn search_scenario(pace: Pace) -> Result<Scenario, GooseError> {
    Ok(pace
        .apply(scenario!("uncached-search"))?
        .register_transaction(transaction!(search_shape).set_name("uncached-search")))
}

async fn indexed_shape(user: &mut GooseUser) -> TransactionResult {
    let category = api::pick(&api::CATEGORIES);
    let by_price = api::pick(&["price", "-price"]);
    let low = rand::random_range(0..490_000);
    let (name, listing) = match rand::random_range(0..4) {
        0 => (
            "uncached: all, any sort",
            Listing {
                sort: Some(api::pick(&api::SORTS)),
                ..Listing::new(TAKE)
            },
        ),
        1 => (
            "uncached: category, any sort",
            Listing {
                category: Some(category),
                sort: Some(api::pick(&api::SORTS)),
                ..Listing::new(TAKE)
            },
        ),
        2 => (
            "uncached: category + price sort",
            Listing {
                category: Some(category),
                sort: Some(by_price),
                ..Listing::new(TAKE)
            },
        ),
        _ => (
            "uncached: price range, price sort",
            Listing {
                sort: Some(by_price),
                min_price_cents: Some(low),
                max_price_cents: Some(low + 10_000),
                ..Listing::new(TAKE)
            },
        ),
    };
    fetch_at_random_position(user, listing, name).await
}

async fn search_shape(user: &mut GooseUser) -> TransactionResult {
    let common = rand::random_bool(0.5);
    let with_category = rand::random_bool(0.5);
    let word = if common {
        api::pick(&COMMON_WORDS)
    } else {
        api::pick(&RARE_WORDS)
    };
    let name = match (common, with_category) {
        (true, false) => "uncached: search common word",
        (true, true) => "uncached: search common word + category",
        (false, false) => "uncached: search rare word",
        (false, true) => "uncached: search rare word + category",
    };
    let listing = Listing {
        search: Some(word),
        category: with_category.then(|| api::pick(&api::CATEGORIES)),
        sort: Some(api::pick(&api::SORTS)),
        ..Listing::new(TAKE)
    };
    fetch_at_random_position(user, listing, name).await
}

/// Reads the page of `listing` that starts after a random position in its order.
async fn fetch_at_random_position(
    user: &mut GooseUser,
    listing: Listing<'_>,
    name: &str,
) -> TransactionResult {
    let cursor = random_cursor(&listing)?;
    let listing = Listing {
        cursor: Some(&cursor),
        ..listing
    };
    api::fetch_page(user, listing, name).await.map(drop)
}

/// A cursor the service accepts for `listing`: signed over the same canonical filters.
fn random_cursor(listing: &Listing<'_>) -> Result<String, Box<TransactionError>> {
    let key = CURSOR_KEY
        .get()
        .ok_or_else(|| Box::new(setup_error("no cursor secret")))?;
    let path = listing.path();
    let query = path.split_once('?').map(|(_, query)| query);
    let parsed = product_api::request::parse_listing(query, key)
        .map_err(|error| Box::new(setup_error(&format!("{path}: {error}"))))?;
    let sort = parsed.query.sort;
    let key_value = if sort == Sort::PriceAsc || sort == Sort::PriceDesc {
        rand::random_range(PRICE_CENTS)
    } else {
        CREATED_FROM + rand::random_range(0..THREE_YEARS_MICROS)
    };
    let position = Position {
        key: key_value,
        id: rand::random_range(IDS),
    };
    Ok(key.encode(sort, parsed.fingerprint(), position))
}

fn setup_error(message: &str) -> TransactionError {
    TransactionError::Custom(message.to_owned())
}
