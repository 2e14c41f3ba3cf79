"""Writes reference outputs of two peer Performer (FAVOR+) implementations as .npy fixtures.

    python peer_outputs.py OUTDIR        # run with the venv python that setup.sh prints

Peers: lucidrains' performer-pytorch 1.1.4 and Google's JAX fast_attention.py (google-research,
performer/fast_attention/jax/fast_attention.py), the latter imported from
$FAVOR_PEERS_DIR/fast_attention.py (default ~/.cache/favor/peers/fast_attention.py).

For each regime in REGIMES, OUTDIR/<regime>/ gets (all float32, np.save):
  q.npy k.npy v.npy               inputs, shape (B, H, L, d) = (1, 4, 512, 64)
  W.npy                           the shared projection, (m, d) = (256, 64), the same in every
                                  regime: performer-pytorch's
                                  gaussian_orthogonal_random_matrix(256, 64, scaling=0) drawn
                                  under torch.manual_seed(W_SEED)
  pt_{softmax,relu}_{bi,causal}   performer-pytorch FastAttention outputs, (B, H, L, d)
  jax_{softmax,relu}_{bi,causal}  JAX outputs, transposed back to (B, H, L, d)
  pt_softmax_causal_leak          pt_softmax_causal with k[..., t >= L/2, :] multiplied by 2
Every peer runs with its own defaults except: the projection is fixed to W, no redraws, and
the JAX softmax attention takes numerical_stabilizer=1e-6, renormalize_attention=True,
nonnegative_features=True (its defaults, spelled out).
"""

import os
import sys

import numpy as np

B, H, L, D, M = 1, 4, 512, 64, 256
W_SEED = 0
# regime -> (numpy seed, scale of q and k); v is always N(0, 1).
REGIMES = {"s03": (303, 0.3), "s1": (101, 1.0)}


def peers_dir():
    return os.environ.get(
        "FAVOR_PEERS_DIR",
        os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "favor", "peers"),
    )


def inputs(seed, scale):
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((B, H, L, D)) * scale).astype(np.float32)
    k = (rng.standard_normal((B, H, L, D)) * scale).astype(np.float32)
    v = rng.standard_normal((B, H, L, D)).astype(np.float32)
    return q, k, v


def projection():
    import torch
    from performer_pytorch.performer_pytorch import gaussian_orthogonal_random_matrix

    torch.manual_seed(W_SEED)
    w = gaussian_orthogonal_random_matrix(M, D, scaling=0)
    assert w.dtype == torch.float32 and tuple(w.shape) == (M, D)
    return w.numpy().astype(np.float32)


def pytorch_peer(W):
    import torch
    from performer_pytorch import FastAttention

    mods = {}
    for kern in ("softmax", "relu"):
        for mode in ("bi", "causal"):
            fa = FastAttention(
                dim_heads=D,
                nb_features=M,
                causal=(mode == "causal"),
                generalized_attention=(kern == "relu"),  # kernel_fn defaults to nn.ReLU()
            )
            with torch.no_grad():
                fa.projection_matrix.copy_(torch.from_numpy(W))
            fa.eval()
            mods[f"pt_{kern}_{mode}"] = fa

    def run(name, q, k, v):
        with torch.no_grad():
            out = mods[name](*(torch.from_numpy(x) for x in (q, k, v)))
        assert out.dtype == torch.float32
        return out.numpy()

    return run


def jax_peer(W):
    sys.path.insert(0, peers_dir())
    import jax
    import jax.numpy as jnp
    import fast_attention as fa  # Google's file, kept outside this repository

    assert not jax.config.jax_enable_x64
    w = jnp.asarray(W)
    fns = {}
    for mode in ("bi", "causal"):
        uni = mode == "causal"
        soft = fa.make_fast_softmax_attention(
            D,
            renormalize_attention=True,
            numerical_stabilizer=1e-6,
            nb_features=M,
            redraw_features=False,
            unidirectional=uni,
            nonnegative_features=True,
        )
        # Generalized attention with its defaults (kernel_fn=relu, kernel_epsilon=1e-3,
        # numerical_stabilizer=0, features_type='deterministic' i.e. no matrix drawn).
        relu = fa.make_fast_generalized_attention(D, nb_features=M, unidirectional=uni)
        for kern, fn in (("softmax", soft), ("relu", relu)):
            # make_* return the bound method dot_product_attention; its instance holds the
            # projection, used as is because redraw_features is False.
            inst = fn.__self__
            assert inst.redraw_features is False
            inst.projection_matrix = w
            fns[f"jax_{kern}_{mode}"] = fn

    def run(name, q, k, v):
        # ours (B, H, L, d) -> JAX's (B, L, H, d) and back
        t = lambda x: jnp.asarray(np.ascontiguousarray(x.transpose(0, 2, 1, 3)))
        out = fns[name](t(q), t(k), t(v))
        out = np.asarray(out)
        assert out.dtype == np.float32
        return out.transpose(0, 2, 1, 3)

    return run


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    outdir = sys.argv[1]
    W = projection()
    pt = pytorch_peer(W)
    jx = jax_peer(W)
    for regime, (seed, scale) in REGIMES.items():
        d = os.path.join(outdir, regime)
        os.makedirs(d, exist_ok=True)
        q, k, v = inputs(seed, scale)
        arrays = {"q": q, "k": k, "v": v, "W": W}
        for kern in ("softmax", "relu"):
            for mode in ("bi", "causal"):
                arrays[f"pt_{kern}_{mode}"] = pt(f"pt_{kern}_{mode}", q, k, v)
                arrays[f"jax_{kern}_{mode}"] = jx(f"jax_{kern}_{mode}", q, k, v)
        k2 = k.copy()
        k2[:, :, L // 2:, :] *= 2.0
        arrays["pt_softmax_causal_leak"] = pt("pt_softmax_causal", q, k2, v)
        for name, a in arrays.items():
            a = np.asarray(a)
            assert a.dtype == np.float32 and np.all(np.isfinite(a)), name
            np.save(os.path.join(d, f"{name}.npy"), a)
        leak = np.abs(arrays["pt_softmax_causal_leak"] - arrays["pt_softmax_causal"])[:, :, : L // 2]
        print(f"{regime}: wrote {len(arrays)} arrays to {d}; "
              f"causal leak max |diff| at t < {L // 2}: {leak.max():.3e}")


if __name__ == "__main__":
    main()
