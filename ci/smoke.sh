#!/usr/bin/env bash
# The README's main job and the CLI's report modes, in release, on built-in data: they must
# run to the end (their numbers are not asserted here; tests assert correctness).
set -euo pipefail
cargo build --release -p favor-cli
# The build goes where cargo puts it: $CARGO_TARGET_DIR when set, else target/.
target="${CARGO_TARGET_DIR:-target}"
favor="$target/release/favor"
"$favor" demo
"$favor" bench --quick --json > /tmp/favor-bench.jsonl
test -s /tmp/favor-bench.jsonl
"$favor" fidelity --len 256 --seeds 2 --features 16,64 --pairs 100 > /dev/null
"$favor" fidelity --setting local --len 128 --seeds 1 --features 16 --json > /dev/null
# Issue 11's host contract, from a crate outside the workspace (public API only).
cargo run --release --locked --manifest-path ci/host/Cargo.toml --target-dir "$target"
