#!/usr/bin/env bash
# Formatting, lints, the README's test command, and warning-free docs.
set -euo pipefail
cargo fmt --all -- --check
# favor-benches' exploration examples build only with its `examples` feature (so that
# `cargo test` skips them): lint them too.
cargo clippy --workspace --all-targets --features favor-benches/examples -- -D warnings
# Without the thread pool, as the wasm and C ABI builds use them.
cargo clippy -p favor-tensor -p favor-ffi -p favor-testkit --no-default-features -- -D warnings
# ci/setup.sh fetched the model: favor-candle's model tests must run, not skip.
FAVOR_REQUIRE_MODEL=1 cargo test --workspace
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
