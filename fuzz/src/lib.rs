//! Fixtures shared by the fuzz targets and their seed corpora.
//!
//! The seeds under `corpus/` were produced with these values (see `fuzz/README.md`), so a seed
//! cursor decodes with [`cursor_key`] and a seed query with such a cursor parses.

use product_api::request::cursor::CursorKey;

/// The cursor secret of the `query_string` and `cursor` targets.
pub const CURSOR_SECRET: &[u8] = b"fuzzing cursor secret, at least 32 bytes";

/// The query the seed cursor of `corpus/cursor/` was issued for.
pub const SEED_CURSOR_QUERY: &str = "sort=price&category=tops";

#[must_use]
pub fn cursor_key() -> CursorKey {
    CursorKey::new(CURSOR_SECRET)
}
