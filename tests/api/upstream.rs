//! Upstream tests (being written).
