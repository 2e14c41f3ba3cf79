//! favor-cli's integration tests, one binary: each file under tests/ is a module here, so the
//! crate and its generic kernels are compiled and linked once rather than once per file.
//! Run one file's tests with `cargo test -p favor-cli --test integration <file>::`.

mod calibrate;
mod cli;
mod common;
mod fidelity;
mod peers;

/// The library's own unit tests (moved here so `cargo test` does not build the library a
/// second time as a test harness; `[lib] test = false`).
mod unit {
    mod args;
    mod bench;
    mod plot;
    mod progress;
}
