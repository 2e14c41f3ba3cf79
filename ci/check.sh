#!/usr/bin/env bash
# Formatting, lints, the README's test command, and warning-free docs.
set -euo pipefail
# Each command's time goes to the log, so the next cut can be chosen from a CI run.
timed() {
  local start=$SECONDS
  "$@"
  echo "check.sh: $((SECONDS - start)) s: $*" >&2
}
timed cargo fmt --all -- --check
# favor-benches' exploration examples build only with its `examples` feature (so that
# `cargo test` skips them): lint them too.
timed cargo clippy --workspace --all-targets --features favor-benches/examples -- -D warnings
# Without the thread pool, as the wasm and C ABI builds use them.
timed cargo clippy -p favor-tensor -p favor-ffi -p favor-testkit --no-default-features -- -D warnings
# ci/setup.sh fetched the model: favor-candle's model tests must run, not skip.
FAVOR_REQUIRE_MODEL=1 timed cargo test --workspace
RUSTDOCFLAGS="-D warnings" timed cargo doc --workspace --no-deps
