#!/usr/bin/env bash
# The aarch64 tests under qemu-user (runner in .cargo/config.toml): favor-core's whole suite
# proves the golden values are bit-identical across architectures, favor-simd's runs the
# NEON backend for real. One invocation at the test profile (opt-level 2), so the shared
# dev-dependencies (favor-testkit and what it pulls in) are cross-compiled once.
set -euo pipefail
cargo test -p favor-core -p favor-simd --target aarch64-unknown-linux-gnu
