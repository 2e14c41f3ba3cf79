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
# Time: one ASan build (about 2-3 min on 2 cores from a fresh clone) plus FUZZ_SECONDS per
# target (default 12 s, 9 targets; 20 s until stop 26, cut to keep CI under 30 min): about
# 5 min.
set -euo pipefail
cd "$(dirname "$0")/.."

per_target=${FUZZ_SECONDS:-12}

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz's sanitizer build needs a nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
# Installed once per machine (~/.cargo persists between CI runs); about 2 min to build.
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

cd fuzz
start=$SECONDS
cargo +nightly fuzz build
echo "fuzz.sh: build took $((SECONDS - start)) s"

failed=()
for target in $(cargo +nightly fuzz list); do
  dirs=("corpus/$target")
  for extra in "regressions/$target" "seeds/$target"; do
    [ -d "$extra" ] && dirs+=("$extra")
  done
  mkdir -p "corpus/$target" "artifacts/$target"
  rm -f "artifacts/$target"/*  # only this run's findings are reported
  echo "==> fuzz $target (${per_target} s)"
  t0=$SECONDS
  # New corpus entries go to the first directory only (git-ignored fuzz/corpus). The
  # inputs are decoded into bounded structured cases, so long inputs cost no more than short
  # ones: -len_control=0 lets mutations use all of -max_len from the start.
  if ! cargo +nightly fuzz run "$target" "${dirs[@]}" -- \
      -max_total_time="$per_target" -len_control=0 -max_len=1024 -print_final_stats=1 \
      2>"artifacts/$target.log"; then
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
  echo "<== $target ($((SECONDS - t0)) s)"
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: crashes in: ${failed[*]} (inputs under fuzz/artifacts/<target>/;" \
    "minimise with 'cargo +nightly fuzz tmin <target> <file>' and commit under fuzz/regressions/<target>/)" >&2
  exit 1
fi
echo "fuzz.sh: all targets clean ($((SECONDS - start)) s)"
