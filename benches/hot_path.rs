//! Criterion benchmarks of the hot functions: routing, query parsing, cursors, cache keys and
//! page serialization (the hand-written writer against serde_json and simd-json).
//!
//! `cargo bench --bench hot_path`; figures go to `perf/RESULTS.md` with the command.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;
use product_api::cache::generation::Generations;
use product_api::cache::CacheKey;
use product_api::domain::{Page, Position, Price, Sort, Timestamp};
use product_api::request::cursor::{CursorKey, Fingerprint};
use product_api::request::parse_listing;
use product_api::response::page_body;
use product_api::route::route;
use serde::Serialize;

mod support;
use support::page_of;

/// The same page as serde sees it, to compare serializers on equal output.
#[derive(Serialize)]
struct SerdePage<'a> {
    data: Vec<SerdeProduct<'a>>,
    next_cursor: Option<&'a str>,
    has_more: bool,
}

#[derive(Serialize)]
struct SerdeProduct<'a> {
    id: u64,
    name: &'a str,
    description: &'a str,
    price: f64,
    category: &'a str,
    created_at: String,
    updated_at: String,
}

fn rfc3339(timestamp: Timestamp) -> String {
    let mut out = Vec::with_capacity(27);
    timestamp.write_rfc3339(&mut out);
    String::from_utf8(out).expect("ASCII")
}

// Prices stay far below 2^53 cents, so the float is exact enough for the comparison.
#[allow(clippy::cast_precision_loss)]
fn serde_page<'a>(page: &'a Page, cursor: &'a str) -> SerdePage<'a> {
    SerdePage {
        data: page
            .products
            .iter()
            .map(|p| SerdeProduct {
                id: p.id,
                name: &p.name,
                description: &p.description,
                price: p.price.0 as f64 / 100.0,
                category: &p.category,
                created_at: rfc3339(p.created_at),
                updated_at: rfc3339(p.updated_at),
            })
            .collect(),
        next_cursor: Some(cursor),
        has_more: page.has_more,
    }
}

fn request_stages(c: &mut Criterion) {
    let key = CursorKey::new(b"bench cursor secret, long enough to be real");
    let query = "category=home-decoration&sort=-price&take=20&min_price=10&max_price=500";
    c.bench_function("route", |b| {
        b.iter(|| route(black_box(&Method::GET), black_box("/products/v1")));
    });
    c.bench_function("parse_listing", |b| {
        b.iter(|| parse_listing(black_box(Some(query)), &key).expect("valid"));
    });
    let listing = parse_listing(Some(query), &key).expect("valid");
    let position = Position {
        key: Price(12_345).0,
        id: 987_654,
    };
    let fingerprint = Fingerprint::of(&listing.canonical_filters);
    c.bench_function("cursor_encode", |b| {
        b.iter(|| key.encode(Sort::PriceDesc, fingerprint, black_box(position)));
    });
    let cursor = key.encode(Sort::PriceDesc, fingerprint, position);
    c.bench_function("cursor_decode", |b| {
        b.iter(|| key.decode(black_box(&cursor), Sort::PriceDesc, fingerprint));
    });
    c.bench_function("cache_key", |b| {
        let generations = Generations::default();
        b.iter(|| {
            let listing = black_box(&listing);
            let filters = &listing.query.filters;
            let generation =
                generations.of_listing(filters.category.as_deref(), filters.search.as_ref());
            CacheKey::for_listing(listing, generation)
        });
    });
}

fn serialize_page(c: &mut Criterion) {
    let page = page_of(20);
    let cursor = "AQP_pzJ6fIHOGQAAAAAAB5rkAAAAAAAAPBJ7ysfmfvuV0-muf-yRJ9dO";
    let mut group = c.benchmark_group("serialize_page_20");
    group.bench_function("hand_written", |b| {
        b.iter(|| page_body(black_box(&page), Some(cursor)));
    });
    group.bench_function("serde_json", |b| {
        b.iter(|| serde_json::to_vec(&serde_page(black_box(&page), cursor)).expect("serializes"));
    });
    group.bench_function("simd_json", |b| {
        b.iter(|| simd_json::to_vec(&serde_page(black_box(&page), cursor)).expect("serializes"));
    });
    group.finish();
}

/// The ETag digest of a finished page: XXH3-128 (in use) against SHA-256 (before).
fn etag_of_page(c: &mut Criterion) {
    use sha2::Digest as _;
    let body = page_body(
        &page_of(20),
        Some("AQP_pzJ6fIHOGQAAAAAAB5rkAAAAAAAAPBJ7ysfmfvuV0-muf-yRJ9dO"),
    );
    let mut group = c.benchmark_group("etag_page_20");
    group.bench_function("xxh3_128", |b| {
        b.iter(|| product_api::response::etag::of(black_box(&body)));
    });
    group.bench_function("sha256", |b| {
        b.iter(|| sha2::Sha256::digest(black_box(&body)));
    });
    group.finish();
}

criterion_group!(benches, request_stages, serialize_page, etag_of_page);
criterion_main!(benches);
