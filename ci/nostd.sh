#!/usr/bin/env bash
# favor-core must build without std and without alloc: a Cortex-M4F target has neither.
set -euo pipefail
cargo build -p favor-core --target thumbv7em-none-eabihf
cargo build -p favor-core --target wasm32-unknown-unknown
