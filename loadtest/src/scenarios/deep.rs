//! `deep`: each user walks one sort of the whole catalogue page after page, one page
//! per iteration, carrying its cursor from one iteration to the next; at the last
//! page it starts a new walk. A walk picks its own page size, so two users walking
//! the same sort do not ask for the same pages and the cache cannot answer for the
//! database: this scenario measures keyset pages far from the start.

use goose::prelude::*;

use super::{Pace, RunDefaults};
use crate::api::{self, Listing};

pub const DEFAULTS: RunDefaults = RunDefaults {
    users: 32,
    increase_rate: "16",
    run_time: "20s",
};

/// Page sizes a walk picks from: large pages go deep fastest, and each size gives
/// different page boundaries (and cache keys).
const TAKE_RANGE: std::ops::RangeInclusive<usize> = 50..=100;

/// Where a user is in its walk; kept in goose's per-user session data.
#[derive(Debug, Clone)]
struct Walk {
    sort: &'static str,
    take: usize,
    /// `None` before the first page.
    cursor: Option<String>,
}

impl Walk {
    fn start() -> Walk {
        Walk {
            sort: api::pick(&api::SORTS),
            take: rand::random_range(TAKE_RANGE),
            cursor: None,
        }
    }
}

pub fn scenario(pace: Pace) -> Result<Scenario, GooseError> {
    Ok(pace
        .apply(scenario!("deep"))?
        .register_transaction(transaction!(next_page).set_name("deep")))
}

async fn next_page(user: &mut GooseUser) -> TransactionResult {
    let walk = user
        .get_session_data::<Walk>()
        .cloned()
        .unwrap_or_else(Walk::start);
    let listing = Listing {
        sort: Some(walk.sort),
        cursor: walk.cursor.as_deref(),
        ..Listing::new(walk.take)
    };
    let name = if walk.cursor.is_some() {
        "deep: next page"
    } else {
        "deep: first page"
    };
    let page = match api::fetch_page(user, listing, name).await {
        Ok(page) => page,
        Err(error) => {
            // A failed page restarts the walk rather than retrying one bad cursor forever.
            user.set_session_data(Walk::start());
            return Err(error);
        }
    };
    let next = match page.next_cursor {
        Some(cursor) => Walk {
            cursor: Some(cursor),
            ..walk
        },
        None => Walk::start(),
    };
    user.set_session_data(next);
    Ok(())
}
