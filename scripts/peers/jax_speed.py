#!/usr/bin/env python3
"""Times bidirectional FAVOR+ in JAX (XLA, jit) on the workload of `favor bench`, on one thread.

The computation is google-research's `fast_attention` softmax path written out in jax.numpy
(the same formulas: `softmax_kernel_transformation` with the data normaliser d^-1/4, the
per-row stabiliser for queries and one max for keys, the `1/sqrt(m)` ratio, then the
non-causal numerator `Q'(K'ᵀV)` and denominator `Q'(K'ᵀ1)`), jitted as one function of
(q, k, v, w) so XLA fuses what it can. The workload is `favor bench`'s: batch 1, 8 heads, each
with its own W (m = 256 rows), head dim d = dv = 64, float32, FLOPs counted as 8·H·L·m·d.

One thread: XLA's CPU client is told to use one intra-op thread and no multi-threaded Eigen,
and the script pins itself to one CPU (the first it may run on) before jax starts, so compare
with `taskset -c <cpu> favor bench --threads 1` on the same CPU.

    scripts/peers/setup.sh                       # or any python with jax[cpu] and numpy
    python scripts/peers/jax_speed.py [--lens 1024,4096] [--reps 15] [--json]

Prints one line per length: median and range of the per-call time over `reps` calls (after a
compile and two warm-up calls), and GFLOP/s by the FLOP model above.
"""

import argparse
import json
import os
import statistics
import sys
import time

# Before jax is imported: one CPU, one XLA thread.
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

HEADS, DIM, FEATURES = 8, 64, 256


def favor_bidirectional(q, k, v, w):
    """fast_attention's softmax FAVOR+ (non-causal) for [H, L, d] inputs and [H, m, d] W."""
    d = q.shape[-1]
    m = w.shape[1]
    normaliser = d**-0.25
    ratio = m**-0.5
    eps = 1e-6  # make_fast_softmax_attention's numerical_stabilizer

    def features(x, is_query):
        xw = jnp.einsum("hld,hmd->hlm", normaliser * x, w)
        diag = jnp.sum(x * x, axis=-1, keepdims=True) * (normaliser**2) / 2.0
        if is_query:
            stab = jnp.max(xw, axis=-1, keepdims=True)
        else:
            stab = jnp.max(xw, axis=(-2, -1), keepdims=True)
        return ratio * (jnp.exp(xw - diag - stab) + eps)

    qf = features(q, True)
    kf = features(k, False)
    kv = jnp.einsum("hlm,hld->hmd", kf, v)
    num = jnp.einsum("hlm,hmd->hld", qf, kv)
    den = jnp.einsum("hlm,hm->hl", qf, jnp.sum(kf, axis=1))
    return num / den[..., None]


def flops(length):
    return 8 * HEADS * length * FEATURES * DIM


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lens", default="4096", help="comma-separated sequence lengths")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--json", action="store_true", help="one JSON object per length")
    a = ap.parse_args()

    rng = np.random.default_rng(7)
    f = jax.jit(favor_bidirectional)
    cpu = min(os.sched_getaffinity(0))
    if not a.json:
        print(
            f"jax {jax.__version__} on {jax.devices()[0].platform}, one thread (CPU {cpu}); "
            f"batch 1, {HEADS} heads, d = dv = {DIM}, m = {FEATURES}, f32; {a.reps} calls"
        )
    for length in (int(x) for x in a.lens.split(",")):
        shape = (HEADS, length, DIM)
        q, k, v = (jnp.asarray(0.5 * rng.standard_normal(shape), jnp.float32) for _ in range(3))
        w = jnp.asarray(rng.standard_normal((HEADS, FEATURES, DIM)), jnp.float32)
        out = f(q, k, v, w).block_until_ready()  # compile
        assert np.isfinite(np.asarray(out)).all(), "non-finite output"
        for _ in range(2):
            f(q, k, v, w).block_until_ready()
        times = []
        for _ in range(a.reps):
            t = time.perf_counter()
            f(q, k, v, w).block_until_ready()
            times.append(time.perf_counter() - t)
        med, lo, hi = statistics.median(times), min(times), max(times)
        gf = flops(length) / med / 1e9
        if a.json:
            print(
                json.dumps(
                    {
                        "impl": "jax",
                        "workload": "bidirectional",
                        "len": length,
                        "ms_median": med * 1e3,
                        "ms_min": lo * 1e3,
                        "ms_max": hi * 1e3,
                        "gflops": gf,
                    }
                )
            )
        else:
            print(
                f"bidirectional L = {length:6}: {med * 1e3:8.2f} ms "
                f"[{lo * 1e3:.2f}, {hi * 1e3:.2f}]  {gf:6.1f} GFLOP/s"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
