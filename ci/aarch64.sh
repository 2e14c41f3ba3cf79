#!/usr/bin/env bash
# favor-core's whole test suite on aarch64 under qemu-user (runner in .cargo/config.toml):
# proves the golden values are bit-identical across architectures.
set -euo pipefail
cargo test -p favor-core --target aarch64-unknown-linux-gnu
