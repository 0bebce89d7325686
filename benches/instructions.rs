//! Instruction-count benchmarks of the hot functions (gungraun under valgrind's callgrind): the
//! same functions as `hot_path.rs`, counted instead of timed, because an instruction count is
//! exact on a shared, noisy machine and so can fail a build on a regression where a time cannot.
//!
//! `scripts/bench-gate` runs them and compares each count with `perf/instructions.baseline`;
//! `cargo bench --bench instructions` needs `gungraun-runner` of the library's exact version.
//!
//! Each benchmark runs its function once, in a fresh process. Everything it needs is built by a
//! setup function outside the counted region, and that setup also calls the function once, so
//! one-time work (CPU-feature detection in `sha2`, first allocations of the allocator's pools) is
//! not counted: the count is the cost of a call on a warm server.

use std::hint::black_box;

use gungraun::{library_benchmark, library_benchmark_group, main};
use http::Method;
use product_api::cache::generation::Generations;
use product_api::cache::CacheKey;
use product_api::domain::{Page, Position, Sort};
use product_api::request::cursor::{CursorKey, Fingerprint};
use product_api::request::{parse_listing, Listing};
use product_api::response::page_body;
use product_api::route::{route, Route};

mod support;

/// The listing the criterion benches parse too: category, sort, take and a price range.
const QUERY: &str = "category=home-decoration&sort=-price&take=20&min_price=10&max_price=500";
const SECRET: &[u8] = b"bench cursor secret, long enough to be real";
const POSITION: Position = Position {
    key: 12_345,
    id: 987_654,
};

fn cursor_key() -> CursorKey {
    CursorKey::new(SECRET)
}

fn listing(key: &CursorKey) -> Listing {
    parse_listing(Some(QUERY), key).expect("the bench query is valid")
}

/// The next page's query: the same listing with the cursor the first page would link to.
fn query_with_cursor(key: &CursorKey) -> String {
    let fingerprint = Fingerprint::of(&listing(key).canonical_filters);
    let cursor = key.encode(Sort::PriceDesc, fingerprint, POSITION);
    format!("{QUERY}&cursor={cursor}")
}

fn warm_route() -> Method {
    black_box(route(&Method::GET, "/products/v1"));
    Method::GET
}

fn warm_parse(query: String) -> (String, CursorKey) {
    let key = cursor_key();
    parse_listing(Some(&query), &key).expect("the bench query is valid");
    (query, key)
}

fn warm_cursor() -> (CursorKey, Fingerprint, String) {
    let key = cursor_key();
    let fingerprint = Fingerprint::of(&listing(&key).canonical_filters);
    let cursor = key.encode(Sort::PriceDesc, fingerprint, POSITION);
    key.decode(&cursor, Sort::PriceDesc, fingerprint)
        .expect("a cursor just signed decodes");
    (key, fingerprint, cursor)
}

/// The generations boxed: moved in and out of the counted function, their 323 counters by value
/// would count a memmove the service never does.
fn warm_cache_key() -> (Listing, Box<Generations>) {
    let listing = listing(&cursor_key());
    let generations = Box::<Generations>::default();
    black_box(key_of(&listing, &generations));
    (listing, generations)
}

/// As `ResponseCache::key_for`: the generation of the listing's category and search, then the
/// key.
fn key_of(listing: &Listing, generations: &Generations) -> CacheKey {
    let filters = &listing.query.filters;
    let generation = generations.of_listing(filters.category.as_deref(), filters.search.as_ref());
    CacheKey::for_listing(listing, generation)
}

/// A page of 20 seed products, as the store returns it for a first page with more behind it.
fn warm_page() -> (Page, String) {
    let page = support::page_of(20);
    let (key, fingerprint, _) = warm_cursor();
    let cursor = key.encode(Sort::PriceDesc, fingerprint, POSITION);
    black_box(page_body(&page, Some(&cursor)));
    (page, cursor)
}

#[library_benchmark]
#[bench::products(setup = warm_route)]
fn route_listing(method: Method) -> Route {
    black_box(route(black_box(&method), black_box("/products/v1")))
}

// Every parameter rule of a first-page listing; and the same with a cursor to verify (HMAC).
// (Plain comments: gungraun's attribute accepts no doc attribute on a benchmark function.)
#[library_benchmark]
#[bench::first_page(args = (QUERY.to_owned()), setup = warm_parse)]
#[bench::with_cursor(args = (query_with_cursor(&cursor_key())), setup = warm_parse)]
fn parse_listing_query(input: (String, CursorKey)) -> (Listing, String, CursorKey) {
    let (query, key) = input;
    let listing = parse_listing(black_box(Some(&query)), black_box(&key)).expect("valid");
    black_box((listing, query, key))
}

#[library_benchmark]
#[bench::price_desc(setup = warm_cursor)]
fn cursor_encode(input: (CursorKey, Fingerprint, String)) -> (String, CursorKey) {
    let (key, fingerprint, _) = input;
    let cursor = key.encode(Sort::PriceDesc, black_box(fingerprint), black_box(POSITION));
    black_box((cursor, key))
}

#[library_benchmark]
#[bench::price_desc(setup = warm_cursor)]
fn cursor_decode(input: (CursorKey, Fingerprint, String)) -> (CursorKey, String) {
    let (key, fingerprint, cursor) = input;
    let position = key
        .decode(black_box(&cursor), Sort::PriceDesc, black_box(fingerprint))
        .expect("a cursor just signed decodes");
    black_box(position);
    (key, cursor)
}

#[library_benchmark]
#[bench::first_page(setup = warm_cache_key)]
fn cache_key(input: (Listing, Box<Generations>)) -> (CacheKey, Listing, Box<Generations>) {
    let (listing, generations) = input;
    let key = key_of(black_box(&listing), black_box(&generations));
    black_box((key, listing, generations))
}

// The hand-written writer, kept because it is twice as fast as serde_json (`perf/RESULTS.md`).
#[library_benchmark]
#[bench::products_20(setup = warm_page)]
fn serialize_page(input: (Page, String)) -> (Vec<u8>, Page, String) {
    let (page, cursor) = input;
    let body = page_body(black_box(&page), black_box(Some(&cursor)));
    black_box((body, page, cursor))
}

library_benchmark_group!(
    name = request_stages;
    benchmarks = route_listing, parse_listing_query, cursor_encode, cursor_decode, cache_key
);

library_benchmark_group!(
    name = response_stages;
    benchmarks = serialize_page
);

main!(library_benchmark_groups = request_stages, response_stages);
