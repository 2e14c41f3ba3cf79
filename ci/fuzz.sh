#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target in fuzz/ for a bounded time (nightly + AddressSanitizer) and
# fails if any target crashes. A finding is printed in full — target, panic message, and the
# input itself (base64) with the command that replays it on stable — so that a CI log alone is
# enough to reproduce it, commit it under fuzz/regressions/<target>/ and fix the class: the
# regressions seed every later run (and replay under `cargo test`), so a fixed class cannot
# fail this step again. Each run starts from the committed inputs
# (fuzz/regressions/<target>/, fuzz/seeds/<target>/), so a fixed bug that comes back fails
# here at once. The oracles live in crates/favor-testkit; its tests/replay.rs replays the
# same files on stable under `cargo test`.
#
# Time: one ASan build plus FUZZ_SECONDS per target (default 12 s, 9 targets), FUZZ_JOBS
# targets at a time (default 2: libFuzzer runs one thread, CI has 2 cores). The build uses
# FUZZ_CGU codegen units (default 16; cargo-fuzz's own default is 1, which compiled the
# largest crate on one core) at opt-level FUZZ_OPT_LEVEL (default 1; below). The build took
# 227-306 s of CI before these cuts.
set -euo pipefail
cd "$(dirname "$0")/.."

per_target=${FUZZ_SECONDS:-12}
jobs=${FUZZ_JOBS:-2}
# The same units and optimisation level for the build and every run, or each run would
# rebuild. Level 1 here (cargo-fuzz builds at 3, the level to keep for long campaigns by
# hand): the build took 143 s instead of 215 s on the 2-core machine, and 10 s of the
# `attention` and `tensor_stream` targets ran 34 and 746 inputs against 55 and 595 at 3.
cgu=(--codegen-units "${FUZZ_CGU:-16}")
export CARGO_PROFILE_RELEASE_OPT_LEVEL="${FUZZ_OPT_LEVEL:-1}"

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz's sanitizer build needs a nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! [[ "$jobs" =~ ^[1-9][0-9]*$ ]]; then
  echo "fuzz.sh: FUZZ_JOBS must be a positive integer, not '$jobs'" >&2
  exit 1
fi
# Installed once per machine (~/.cargo persists between CI runs); about 2 min to build.
# --codegen-units needs cargo-fuzz 0.13 or later: an older install is replaced.
fuzz_help=$(cargo +nightly fuzz build --help 2>/dev/null || true)
if [[ "$fuzz_help" != *--codegen-units* ]]; then
  cargo install cargo-fuzz --locked --force
fi

cd fuzz
start=$SECONDS
cargo +nightly fuzz build "${cgu[@]}"
echo "fuzz.sh: build took $((SECONDS - start)) s"

# One target: fuzz it for its time. Its log and any finding go under artifacts/; the report
# comes after every target ran, in order, so that parallel runs do not interleave.
fuzz_one() {
  local target=$1 t0=$SECONDS
  local dirs=("corpus/$target")
  for extra in "regressions/$target" "seeds/$target"; do
    [ -d "$extra" ] && dirs+=("$extra")
  done
  mkdir -p "corpus/$target" "artifacts/$target"
  rm -f "artifacts/$target"/* "artifacts/$target.failed" # only this run's findings are reported
  # New corpus entries go to the first directory only (git-ignored fuzz/corpus). The
  # inputs are decoded into bounded structured cases, so long inputs cost no more than short
  # ones: -len_control=0 lets mutations use all of -max_len from the start.
  if ! cargo +nightly fuzz run "${cgu[@]}" "$target" "${dirs[@]}" -- \
      -max_total_time="$per_target" -len_control=0 -max_len=1024 -print_final_stats=1 \
      >"artifacts/$target.log" 2>&1; then
    touch "artifacts/$target.failed"
  fi
  echo "$((SECONDS - t0))" >"artifacts/$target.seconds"
}

targets=$(cargo +nightly fuzz list)
running=0
for target in $targets; do
  if [ "$running" -ge "$jobs" ]; then
    # A job's own failure is in its artifacts (reported below), never the loop's.
    wait -n || true
    running=$((running - 1))
  fi
  echo "==> fuzz $target (${per_target} s)"
  fuzz_one "$target" &
  running=$((running + 1))
done
wait || true

failed=()
for target in $targets; do
  if [ -e "artifacts/$target.failed" ]; then
    failed+=("$target")
    echo "fuzz.sh: FINDING in target '$target':" >&2
    grep -A6 "panicked at" "artifacts/$target.log" >&2 \
      || grep -E "ERROR: libFuzzer|ERROR: AddressSanitizer|SUMMARY" "artifacts/$target.log" >&2 || true
    for f in "artifacts/$target"/*; do
      [ -f "$f" ] || continue
      echo "fuzz.sh: input $f ($(wc -c <"$f") bytes), base64:" >&2
      base64 -w 0 "$f" >&2
      echo >&2
      echo "fuzz.sh: replay: echo '<base64 above>' | base64 -d > /tmp/finding &&" \
        "cargo run -p favor-testkit --example replay_one -- $target /tmp/finding" >&2
    done
  fi
  grep -E "^(stat::number_of_executed_units|Done)" "artifacts/$target.log" || true
  echo "<== $target ($(cat "artifacts/$target.seconds") s)"
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: crashes in: ${failed[*]} (inputs under fuzz/artifacts/<target>/;" \
    "minimise with 'cargo +nightly fuzz tmin <target> <file>' and commit under fuzz/regressions/<target>/)" >&2
  exit 1
fi
echo "fuzz.sh: all targets clean ($((SECONDS - start)) s)"
