#!/usr/bin/env bash
# wasm: favor-simd's whole suite with the simd128 backend on wasm32-wasip1 under Node's WASI
# (the runner and +simd128 are set in .cargo/config.toml), the simd128-vs-scalar speed
# figure of the README, and the C ABI as a wasm32-unknown-unknown module driven from
# JavaScript (after ci/ffi.sh, which wrote the fixtures to target/ffi).
set -euo pipefail
# Builds go where cargo puts them: $CARGO_TARGET_DIR when set, else target/.
target="${CARGO_TARGET_DIR:-target}"
cargo test -p favor-simd --target wasm32-wasip1
# A bench target run at the test profile (opt-level 2): the wasip1 libraries just built are
# reused.
cargo test --target wasm32-wasip1 -p favor-tensor --no-default-features --bench backend_speed
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C target-feature=+simd128" \
  cargo build --profile test --target wasm32-unknown-unknown -p favor-ffi --no-default-features
node crates/favor-ffi/tests/js/favor_test.mjs \
  "$target/wasm32-unknown-unknown/debug/favor_ffi.wasm" "$target/ffi"
