//! favor-candle's integration tests, one binary (as in the other crates): each file under
//! tests/ is a module here. Run one file's tests with
//! `cargo test -p favor-candle --test integration <file>::`.
//!
//! `bert` needs all-MiniLM-L6-v2 (`scripts/fetch-minilm.sh`); without it those tests print
//! that they were skipped, unless `FAVOR_REQUIRE_MODEL=1` (CI) makes a missing model fail.

mod bert;
mod common;
mod op;
mod state;
