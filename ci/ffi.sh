#!/usr/bin/env bash
# The C ABI (crates/favor-ffi) from C. cargo test (ci/check.sh) already checked that
# include/favor.h is current. Here: the C test program and the README's example, compiled by
# the system C compiler against the header and the static library, run natively under
# valgrind, then cross-built for aarch64 and run under qemu (NEON through the ABI); and the
# mobile static libraries (no SDK needed for a staticlib), with favor-tensor checked there.
set -euo pipefail
# Builds go where cargo puts them: $CARGO_TARGET_DIR when set, else target/.
target="${CARGO_TARGET_DIR:-target}"
out="$target/ffi"
mkdir -p "$out"
# The static library: cargo test builds favor-ffi as an rlib only. The same targets as
# cargo test (--lib --bins --tests --examples) resolve the same features, so everything
# ci/check.sh built is reused and only favor-ffi's library is built again, with its static
# and shared crate types (4 s on 2 cores). Alone (-p favor-ffi) its dependencies resolve
# fewer features and its whole chain was built again (68 s); run alone, this script builds
# what cargo test would.
cargo build --profile test --workspace --lib --bins --tests --examples
# favor-cli's binary, from the same build, writes the fixtures.
fix=crates/favor-cli/tests/data/peers
cp "$fix/q.npy" "$fix/k.npy" "$fix/v.npy" "$out/"
"$target/debug/favor" run --q "$out/q.npy" --k "$out/k.npy" --v "$out/v.npy" \
  --features 16 --seed 7 --out "$out/out.npy"
"$target/debug/favor" projection --features 16 --dim 8 --seed 7 --out "$out/w.npy"
cflags=(-std=c11 -Wall -Wextra -Werror -g -O1 -I crates/favor-ffi/include)
libs=(-lm -lpthread -ldl)
cc "${cflags[@]}" crates/favor-ffi/tests/c/favor_test.c "$target/debug/libfavor_ffi.a" \
  "${libs[@]}" -o "$out/favor_test"
cc "${cflags[@]}" crates/favor-ffi/examples/c/hello.c "$target/debug/libfavor_ffi.a" \
  "${libs[@]}" -o "$out/hello"
# The self-test's deliberate panic prints its message; backtraces would only add noise.
export RUST_BACKTRACE=0
# Definite leaks and every memory error fail; rayon's pool threads live until exit.
valgrind -q --error-exitcode=1 --leak-check=full --show-leak-kinds=definite \
  --errors-for-leak-kinds=definite "$out/favor_test" "$out"
"$out/hello"

# aarch64: the same program against the aarch64 static library, under qemu.
cargo build --profile test -p favor-ffi --target aarch64-unknown-linux-gnu
aarch64-linux-gnu-gcc "${cflags[@]}" crates/favor-ffi/tests/c/favor_test.c \
  "$target/aarch64-unknown-linux-gnu/debug/libfavor_ffi.a" "${libs[@]}" -o "$out/favor_test_aarch64"
qemu-aarch64 -L /usr/aarch64-linux-gnu "$out/favor_test_aarch64" "$out"

# Mobile: the static library alone (a cdylib would need the platform's linker); unoptimised,
# as only the build is checked here.
for triple in aarch64-linux-android aarch64-apple-ios; do
  cargo rustc -p favor-ffi --lib --crate-type staticlib --target "$triple"
  ls -l "$target/$triple/debug/libfavor_ffi.a"
  cargo check -p favor-tensor --target "$triple"
done
