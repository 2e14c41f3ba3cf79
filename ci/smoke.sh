#!/usr/bin/env bash
# The README's main job and the CLI's report modes on built-in data: they must run to the end
# (their numbers are not asserted here; tests assert correctness). The `favor` binary is the
# one `cargo test --workspace` (ci/check.sh) built for favor-cli's tests, at the test profile
# (optimised, debug assertions and overflow checks on): the same code as the README's
# `--release` command, without a second optimised build of favor-cli and its dependencies
# (about 2 min of CI on 2 cores). Speed is measured in release (`favor bench`), never here.
set -euo pipefail
# Builds go where cargo puts them: $CARGO_TARGET_DIR when set, else target/.
target="${CARGO_TARGET_DIR:-target}"
favor="$target/debug/favor"
# Built here when this script runs alone.
[ -x "$favor" ] || cargo build --profile test -p favor-cli
"$favor" demo
"$favor" bench --quick --json > /tmp/favor-bench.jsonl
test -s /tmp/favor-bench.jsonl
"$favor" fidelity --len 256 --seeds 2 --features 16,64 --pairs 100 > /dev/null
"$favor" fidelity --setting local --len 128 --seeds 1 --features 16 --json > /dev/null
# Issue 11's host contract, from a crate outside the workspace (public API only). Its own
# workspace shares no profile with ours, so it builds at its dev profile: the quickest to
# compile, and its few small calls need no optimiser.
cargo run --locked --manifest-path ci/host/Cargo.toml --target-dir "$target"
# Issue 13's command on a few short texts, each attention. Built at the test profile with
# --workspace, so the features resolve as in `cargo test --workspace` and its compiled
# dependencies are reused (a release build of candle, or a -p build with other features,
# would add minutes).
cargo build --quiet --workspace --profile test --example embed --example decode
examples="$target/debug/examples"
texts=$(mktemp)
calib=$(mktemp)
printf '%s\n' "FAVOR+ approximates softmax attention." "Linear attention runs in constant memory per token." "Rust" > "$texts"
printf '%s\n' "Everyone is permitted to copy and distribute verbatim copies of this license document." > "$calib"
for attention in "exact" "favor --features 64" "hybrid --window 4 --sinks 1 --features 32 --calibrate $calib"; do
  # shellcheck disable=SC2086
  "$examples/embed" --input "$texts" --out /tmp/favor-embed.npy --attention $attention
  test -s /tmp/favor-embed.npy
done
"$examples/decode" --tokens 2048 > /dev/null
rm -f "$texts" "$calib"
