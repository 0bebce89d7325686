//! The integration tests: one binary, against real MariaDB, Redis and a Redis Cluster started by
//! `scripts/test` (`TEST_DATABASE_URL`, `TEST_REDIS_URL`, `TEST_REDIS_CLUSTER_URLS`, and for
//! `replicas` the replication pair: `TEST_REPL_PRIMARY_URL`, `TEST_REPLICA_URL`). Each test gets
//! its own database and cache namespace.

mod caching;
mod cluster;
mod errors;
mod faults;
mod helpers;
mod instances;
mod invalidation;
mod listing;
mod observability;
mod openapi;
mod proxy;
mod rate_limit;
mod replicas;
mod resilience;
mod standin;
mod sync;
mod upstream;
mod webhooks;
