//! product-api: a product catalogue over MySQL with an L1/L2 response cache.
//!
//! Modules are declared in the order a `GET /products/v1` flows through them; set-up and the
//! error map sit apart.

// Set-up: configuration, the application object, logging and the shutdown signal.
pub mod app;
pub mod config;
pub mod meter;
pub mod shutdown;
pub mod telemetry;

// The request path, in order.
// accept → connection (limits, timeouts, drain)
pub mod server;
// query string → validated listing, cursors
pub mod request;
// (method, path) → route
pub mod route;
// client → policy → allowed or 429 (local governor, shared GCRA in Redis)
pub mod limit;
// one file per endpoint
pub mod endpoints;
// L1 (quick_cache) → L2 (redis) with coalescing
pub mod cache;
// MySQL: the only module that talks to it
pub mod store;
// serialization into one buffer per response
pub mod response;

// Beside the path: the vocabulary, the error map, and the seed data.
pub mod domain;
pub mod error;
// A Redis connection, one server or a cluster: the only place that opens one.
pub mod redis_connection;
// Owner-token Redis locks, shared by the cache fill lock and the OAuth2 refresh lock.
pub mod redis_lock;
// Outbound: OAuth2 token and external catalogue client; never on the listing path.
pub mod seed;
pub mod sync;
pub mod upstream;
