//! Seed data: realistic, deterministic products for development, tests and benchmarks.
//!
//! Off the request path. Row `n` is a pure function of `n` (each row has its own RNG seeded from
//! a fixed seed and `n`), so topping a table up from 500k to 1M rows gives the same rows as
//! seeding 1M at once. Vocabularies are shaped for search benchmarks: every adjective of a
//! name appears in about 2.5 % of rows, every material in about 5 %, and the rare words in a
//! handful of rows each (one row in 2,003 carries one of 97 rare words).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::domain::{Price, Timestamp};

/// The 24 categories of the DummyJSON catalogue (`tests/fixtures/dummyjson-products.json`).
pub const CATEGORIES: [&str; 24] = [
    "beauty",
    "fragrances",
    "furniture",
    "groceries",
    "home-decoration",
    "kitchen-accessories",
    "laptops",
    "mens-shirts",
    "mens-shoes",
    "mens-watches",
    "mobile-accessories",
    "motorcycle",
    "skin-care",
    "smartphones",
    "sports-accessories",
    "sunglasses",
    "tablets",
    "tops",
    "vehicle",
    "womens-bags",
    "womens-dresses",
    "womens-jewellery",
    "womens-shoes",
    "womens-watches",
];

const ADJECTIVES: [&str; 40] = [
    "Classic",
    "Modern",
    "Vintage",
    "Compact",
    "Deluxe",
    "Elegant",
    "Rugged",
    "Sleek",
    "Cozy",
    "Bold",
    "Bright",
    "Silent",
    "Smart",
    "Premium",
    "Essential",
    "Urban",
    "Rustic",
    "Polished",
    "Handmade",
    "Portable",
    "Durable",
    "Gentle",
    "Fresh",
    "Radiant",
    "Swift",
    "Sturdy",
    "Soft",
    "Crisp",
    "Vivid",
    "Noble",
    "Tidy",
    "Lunar",
    "Solar",
    "Arctic",
    "Tropical",
    "Royal",
    "Golden",
    "Silver",
    "Velvet",
    "Breezy",
];

const MATERIALS: [&str; 20] = [
    "Oak",
    "Walnut",
    "Bamboo",
    "Steel",
    "Aluminium",
    "Leather",
    "Cotton",
    "Linen",
    "Wool",
    "Silk",
    "Ceramic",
    "Glass",
    "Marble",
    "Copper",
    "Brass",
    "Titanium",
    "Carbon",
    "Cedar",
    "Granite",
    "Denim",
];

const NOUNS: [&str; 30] = [
    "Lamp",
    "Chair",
    "Table",
    "Watch",
    "Bag",
    "Shirt",
    "Shoe",
    "Phone",
    "Tablet",
    "Laptop",
    "Bottle",
    "Mirror",
    "Vase",
    "Kettle",
    "Helmet",
    "Jacket",
    "Dress",
    "Ring",
    "Necklace",
    "Wallet",
    "Speaker",
    "Blender",
    "Candle",
    "Perfume",
    "Serum",
    "Cushion",
    "Basket",
    "Backpack",
    "Sunglasses",
    "Bracelet",
];

/// Words that appear in a handful of rows each at 1M rows.
pub const RARE_WORDS: [&str; 97] = [
    "zephyrine",
    "quillback",
    "obsidianite",
    "marzipanic",
    "lumenfold",
    "kestrelwing",
    "jadeborn",
    "hollowmere",
    "gildenrod",
    "fernspire",
    "emberlight",
    "duskwillow",
    "cobaltine",
    "brindlewood",
    "amberlane",
    "yarrowick",
    "wyvernhide",
    "vesperine",
    "thistledown",
    "sablecrest",
    "rookwood",
    "quartzfall",
    "pewterlin",
    "opaline",
    "nettlebrook",
    "moonwhistle",
    "larkspurre",
    "ironbloom",
    "heronsgate",
    "glimmerdale",
    "foxglovia",
    "elderwick",
    "driftmoor",
    "cinderfell",
    "bramblecot",
    "ashenvale",
    "zinnober",
    "wrenfield",
    "violetta",
    "tanglewood",
    "saffronel",
    "ravenholt",
    "quincewood",
    "primrosa",
    "oakenshaw",
    "nimbusine",
    "mistletine",
    "lindenmoor",
    "kingfishery",
    "juniperine",
    "hazelmere",
    "goldfinchy",
    "frostvale",
    "eastwicke",
    "dovecotte",
    "cranberrine",
    "bluebellia",
    "alderbrook",
    "yewhollow",
    "willowick",
    "umberlyn",
    "tamarindel",
    "sorrelby",
    "rosewaldt",
    "quailmere",
    "peregrinia",
    "orchidelle",
    "nightjarre",
    "marigoldia",
    "lavendrel",
    "kelpiemoor",
    "ivorywick",
    "hawthornel",
    "gorsefield",
    "fennelby",
    "eglantyne",
    "damsonel",
    "chervilia",
    "buttercupp",
    "aspenwold",
    "yellowhamm",
    "wistfulle",
    "tarragonia",
    "snowdropia",
    "ragwortel",
    "quinoalia",
    "pimpernell",
    "oxlipwood",
    "nasturtia",
    "mallowby",
    "lichenvale",
    "knapweedy",
    "heatherin",
    "gentianel",
    "flaxmoore",
    "elmsworth",
    "cowslipper",
];

/// Syllables of the filler vocabulary: 2,000 made-up three-syllable words, each in ~0.4 % of rows.
const SYLLABLES: [&str; 20] = [
    "ka", "lo", "mi", "ra", "ten", "vo", "shi", "dal", "mur", "pex", "zan", "bro", "qui", "fel",
    "nor", "tas", "wen", "gri", "hol", "jus",
];
const FILLER_WORDS: u64 = 2_000;
const FILLER_PER_ROW: usize = 8;
const RARE_EVERY: u64 = 2_003;

const SEED: u64 = 0x005E_ED0F_CA7A_1096;
/// 2023-01-01T00:00:00Z in microseconds: the start of the three years rows are spread over.
pub const CREATED_FROM: i64 = 1_672_531_200_000_000;
pub const THREE_YEARS_MICROS: i64 = 3 * 365 * 86_400 * 1_000_000;
/// Seeded prices, in cents: $0.50 to $5,000.
pub const PRICE_CENTS: std::ops::RangeInclusive<i64> = 50..=500_000;

/// One generated product row, before MySQL gives it an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedProduct {
    pub name: String,
    pub description: String,
    pub price: Price,
    pub category: &'static str,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The `index`-th seed row; the same index always gives the same row.
#[must_use]
pub fn product(index: u64) -> SeedProduct {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let adjective = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
    let material = MATERIALS[rng.random_range(0..MATERIALS.len())];
    let noun = NOUNS[rng.random_range(0..NOUNS.len())];
    let name = format!("{adjective} {material} {noun}");
    let mut description = format!(
        "A {} {} made with {}",
        adjective.to_lowercase(),
        noun.to_lowercase(),
        material.to_lowercase()
    );
    for _ in 0..FILLER_PER_ROW {
        description.push(' ');
        description.push_str(&filler_word(rng.random_range(0..FILLER_WORDS)));
    }
    if index % RARE_EVERY == 0 {
        description.push(' ');
        description.push_str(RARE_WORDS[((index / RARE_EVERY) % RARE_WORDS.len() as u64) as usize]);
    }
    description.push('.');
    let created_at = CREATED_FROM + rng.random_range(0..THREE_YEARS_MICROS);
    // One row in ten gets a whole-minute timestamp so that equal sort keys (ties broken by id)
    // occur in real data, as they do with coarse upstream clocks.
    let created_at = if rng.random_ratio(1, 10) {
        created_at - created_at % 60_000_000
    } else {
        created_at
    };
    let updated_at = created_at + rng.random_range(0..30 * 86_400 * 1_000_000_i64);
    SeedProduct {
        name,
        description,
        price: Price(rng.random_range(PRICE_CENTS)),
        category: CATEGORIES[rng.random_range(0..CATEGORIES.len())],
        created_at: Timestamp(created_at),
        updated_at: Timestamp(updated_at),
    }
}

fn filler_word(index: u64) -> String {
    let syllable = |n: u64| SYLLABLES[(n % SYLLABLES.len() as u64) as usize];
    let count = SYLLABLES.len() as u64;
    format!(
        "{}{}{}",
        syllable(index),
        syllable(index / count),
        syllable(index / (count * count))
    )
}

/// Rows per INSERT: 6 parameters each, well under the 65,535-placeholder limit.
const BATCH_ROWS: u64 = 1_000;
/// INSERTs in flight at once: enough to keep MariaDB busy while the next batch is generated.
const INSERTS_IN_FLIGHT: usize = 2;

/// Tops the table up to `target` seed rows; returns how many it inserted.
pub async fn top_up(
    store: std::sync::Arc<crate::store::Store>,
    target: u64,
) -> Result<u64, crate::store::StoreError> {
    let present = crate::store::seed::count_seeded(&store).await?;
    if present >= target {
        tracing::info!(present, target, "seed: nothing to do");
        return Ok(0);
    }
    let progress = indicatif::ProgressBar::new(target - present).with_style(
        indicatif::ProgressStyle::with_template(
            "seeding {bar:40} {pos}/{len} rows ({per_sec}, eta {eta})",
        )
        .expect("static template"),
    );
    let mut in_flight = tokio::task::JoinSet::new();
    let mut next = present;
    while next < target {
        let end = (next + BATCH_ROWS).min(target);
        let rows: Vec<SeedProduct> = (next..end).map(product).collect();
        if in_flight.len() >= INSERTS_IN_FLIGHT {
            finish_one(&mut in_flight, &progress).await?;
        }
        let store = store.clone();
        in_flight.spawn(async move {
            let count = rows.len() as u64;
            crate::store::seed::insert(&store, &rows)
                .await
                .map(|()| count)
        });
        next = end;
    }
    while !in_flight.is_empty() {
        finish_one(&mut in_flight, &progress).await?;
    }
    progress.finish();
    Ok(target - present)
}

async fn finish_one(
    in_flight: &mut tokio::task::JoinSet<Result<u64, crate::store::StoreError>>,
    progress: &indicatif::ProgressBar,
) -> Result<(), crate::store::StoreError> {
    if let Some(joined) = in_flight.join_next().await {
        let count = joined.expect("seed insert task panicked")?;
        progress.inc(count);
        // Without a terminal the bar is hidden; log every 100k rows instead.
        if progress.is_hidden() && progress.position() % 100_000 < count {
            tracing::info!(
                inserted = progress.position(),
                of = progress.length(),
                "seeding"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_a_pure_function_of_their_index() {
        assert_eq!(product(12_345), product(12_345));
        assert_ne!(product(1), product(2));
    }

    #[test]
    fn rows_respect_the_listing_rules() {
        for index in 0..5_000 {
            let row = product(index);
            assert!(PRICE_CENTS.contains(&row.price.0), "{row:?}");
            assert!(row.name.len() <= 255 && !row.name.is_empty());
            assert!(row.updated_at >= row.created_at);
            assert!(row.created_at.0 >= CREATED_FROM);
            assert!(row.created_at.0 < CREATED_FROM + THREE_YEARS_MICROS);
        }
    }

    #[test]
    fn rare_words_are_rare_and_adjectives_common() {
        let rows: Vec<_> = (0..20_000).map(product).collect();
        let with = |word: &str| rows.iter().filter(|r| r.description.contains(word)).count();
        assert_eq!(with(RARE_WORDS[0]), 1);
        let classic = rows
            .iter()
            .filter(|r| r.name.starts_with("Classic "))
            .count();
        assert!((300..700).contains(&classic), "{classic}");
    }

    #[test]
    fn categories_are_the_dummyjson_ones() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/dummyjson-products.json"))
                .unwrap();
        let mut seen: Vec<String> = Vec::new();
        for product in fixture.as_array().unwrap() {
            let category = product["category"].as_str().unwrap().to_owned();
            if !seen.contains(&category) {
                seen.push(category);
            }
        }
        assert_eq!(seen, CATEGORIES);
    }
}
