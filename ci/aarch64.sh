#!/usr/bin/env bash
# The aarch64 tests under qemu-user (runner in .cargo/config.toml): favor-core's whole suite
# proves the golden values are bit-identical across architectures, favor-simd's runs the
# NEON backend for real.
set -euo pipefail
cargo test -p favor-core --target aarch64-unknown-linux-gnu
cargo test -p favor-simd --release --target aarch64-unknown-linux-gnu
