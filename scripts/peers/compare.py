"""Compares `favor run` with the peers' outputs written by peer_outputs.py.

    python compare.py FIXTURES [FAVOR_BINARY]

For each regime and case it runs favor twice on the same q, k, v and W (the peer's own
projection, through --projection): with --compat set to the peer, and with favor's own
definition (no --compat), and prints the max and mean over output rows of the relative
difference ||favor_i - peer_i||_2 / ||peer_i||_2. Needs numpy only.
"""

import os
import subprocess
import sys
import tempfile

import numpy as np

CASES = [
    # (peer output, --compat, --kernel, causal)
    ("pt_softmax_bi", "performer-pytorch", "softmax", False),
    ("pt_softmax_causal", "performer-pytorch", "softmax", True),
    ("pt_relu_bi", "performer-pytorch", "relu", False),
    ("pt_relu_causal", "performer-pytorch", "relu", True),
    ("jax_softmax_bi", "google-jax", "softmax", False),
    ("jax_softmax_causal", "google-jax", "softmax", True),
    ("jax_relu_bi", "google-jax", "relu", False),
    ("jax_relu_causal", "google-jax", "relu", True),
]


def rel(a, b):
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    r = np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(b, axis=1), 1e-300)
    return r.max(), r.mean()


def favor(binary, d, out, compat, kernel, causal):
    cmd = [binary, "run", "--q", f"{d}/q.npy", "--k", f"{d}/k.npy", "--v", f"{d}/v.npy",
           "--projection", f"{d}/W.npy", "--kernel", kernel, "--out", out]
    if compat:
        cmd += ["--compat", compat]
    if causal:
        cmd += ["--causal"]
    subprocess.run(cmd, check=True)
    return np.load(out)


def main():
    fixtures = sys.argv[1]
    binary = sys.argv[2] if len(sys.argv) > 2 else "target/release/favor"
    print("| peer output | regime | favor --compat: max / mean | favor's own: max / mean |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.npy")
        for name, compat, kernel, causal in CASES:
            for regime in ("s03", "s1"):
                d = os.path.join(fixtures, regime)
                peer = np.load(os.path.join(d, f"{name}.npy"))
                with_compat = rel(favor(binary, d, out, compat, kernel, causal), peer)
                own = rel(favor(binary, d, out, None, kernel, causal), peer)
                print(f"| {name} | {regime} | {with_compat[0]:.1e} / {with_compat[1]:.1e} "
                      f"| {own[0]:.2g} / {own[1]:.2g} |")


if __name__ == "__main__":
    main()
