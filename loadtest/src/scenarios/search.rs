//! `search`: one word, common or rare, alone or with a category. The words are
//! taken from the seed vocabulary (`src/seed.rs`) and their frequencies were counted
//! at 1,000,194 rows (see loadtest/README.md): each common word is in about 5 % of
//! rows (≥ 3 %), each rare word in 5 or 6 rows (< 0.01 %). Issue 5's target 3 is
//! about exactly these two ends.

use goose::prelude::*;

use super::{Pace, RunDefaults};
use crate::api::{self, Listing};

pub const DEFAULTS: RunDefaults = RunDefaults {
    users: 32,
    increase_rate: "16",
    run_time: "20s",
};

const TAKE: usize = 20;

/// Seed materials: each in about 5 % of rows (50,197 for `leather`, 50,104 for
/// `walnut`, 49,614 for `steel` at 1M rows).
pub const COMMON_WORDS: [&str; 6] = ["leather", "walnut", "steel", "cotton", "marble", "copper"];

/// Seed rare words: 5 or 6 rows each at 1M rows, and no other seed word starts with
/// them (a search word also matches as a prefix).
pub const RARE_WORDS: [&str; 7] = [
    "zephyrine",
    "quillback",
    "obsidianite",
    "kestrelwing",
    "wyvernhide",
    "moonwhistle",
    "thistledown",
];

/// How often a search is for a common word, in percent; the rest are rare words.
const COMMON_PERCENT: u32 = 50;
/// How often a search also names a category, in percent.
const WITH_CATEGORY_PERCENT: u32 = 50;

/// Which end of the frequency range a search word comes from. Used as the request
/// name, so the two are reported (and judged) apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frequency {
    Common,
    Rare,
}

pub fn scenario(pace: Pace) -> Result<Scenario, GooseError> {
    Ok(pace
        .apply(scenario!("search"))?
        .register_transaction(transaction!(search).set_name("search")))
}

async fn search(user: &mut GooseUser) -> TransactionResult {
    let (frequency, word) = choose_word(
        rand::random_range(0..100),
        rand::random_range(0..usize::MAX),
    );
    let category =
        (rand::random_range(0..100) < WITH_CATEGORY_PERCENT).then(|| api::pick(&api::CATEGORIES));
    let listing = Listing {
        search: Some(word),
        category,
        ..Listing::new(TAKE)
    };
    let name = match (frequency, category.is_some()) {
        (Frequency::Common, false) => "search: common word",
        (Frequency::Common, true) => "search: common word + category",
        (Frequency::Rare, false) => "search: rare word",
        (Frequency::Rare, true) => "search: rare word + category",
    };
    api::fetch_page(user, listing, name).await.map(drop)
}

/// The word for a roll in `0..100` (below [`COMMON_PERCENT`] picks a common word)
/// and an index that selects within the list (any `usize`; taken modulo its length).
pub fn choose_word(roll: u32, index: usize) -> (Frequency, &'static str) {
    if roll < COMMON_PERCENT {
        (Frequency::Common, COMMON_WORDS[index % COMMON_WORDS.len()])
    } else {
        (Frequency::Rare, RARE_WORDS[index % RARE_WORDS.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_the_rolls_pick_common_words() {
        let common = (0..100)
            .filter(|&roll| choose_word(roll, 0).0 == Frequency::Common)
            .count();
        assert_eq!(common, 50);
        assert_eq!(choose_word(0, 0), (Frequency::Common, "leather"));
        assert_eq!(choose_word(99, 0), (Frequency::Rare, "zephyrine"));
    }

    #[test]
    fn every_word_can_be_chosen() {
        for (index, &word) in COMMON_WORDS.iter().enumerate() {
            assert_eq!(choose_word(0, index).1, word);
        }
        for (index, &word) in RARE_WORDS.iter().enumerate() {
            assert_eq!(choose_word(99, index).1, word);
        }
        // Any index is safe.
        assert!(!choose_word(0, usize::MAX).1.is_empty());
    }

    #[test]
    fn words_are_searchable() {
        // The service ignores words under 3 letters and splits on punctuation.
        for word in COMMON_WORDS.iter().chain(&RARE_WORDS) {
            assert!(word.len() >= 3, "{word}");
            assert!(word.chars().all(|c| c.is_ascii_lowercase()), "{word}");
        }
    }

    #[test]
    fn no_rare_word_is_a_prefix_of_a_common_one() {
        for rare in RARE_WORDS {
            for common in COMMON_WORDS {
                assert!(!common.starts_with(rare) && !rare.starts_with(common));
            }
        }
    }
}
