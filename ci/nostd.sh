#!/usr/bin/env bash
# favor-core must build without std and without alloc: a Cortex-M4F target has neither.
# favor-simd without its `std` feature must too (it then falls back to pulp's scalar path).
set -euo pipefail
cargo build -p favor-core --target thumbv7em-none-eabihf
cargo build -p favor-core --target wasm32-unknown-unknown
cargo build -p favor-simd --no-default-features --target thumbv7em-none-eabihf
