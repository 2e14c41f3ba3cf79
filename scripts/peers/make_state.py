"""Writes the fixtures of favor-cli's `peers` tests from the real performer-pytorch:

    python make_state.py OUTDIR

- `performer_lm.safetensors`: a small PerformerLM's `state_dict()` (2 layers, 2 heads of 8,
  12 random features, torch seed 0), every tensor as it is, for `favor import`;
- `q.npy`, `k.npy`, `v.npy` (1, 2, 16, 8) float32, q and k N(0,1) (the regime where favor's
  own definition and the peer's differ most), v N(0,1);
- `pt_softmax_bi.npy`, `pt_softmax_causal.npy`: performer-pytorch's `FastAttention` of those
  inputs with layer 1's projection matrix (the one `favor import` lists as layer 1).
"""

import os
import sys

import numpy as np
import torch
from performer_pytorch import FastAttention, PerformerLM
from safetensors.torch import save_file


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = PerformerLM(num_tokens=8, max_seq_len=16, dim=16, depth=2, heads=2, dim_head=8,
                        nb_features=12, ff_mult=1, causal=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(out, "performer_lm.safetensors"))
    w = state["performer.net.layers.1.0.fn.fast_attention.projection_matrix"]
    rng = np.random.default_rng(14)
    q, k, v = (rng.standard_normal((1, 2, 16, 8)).astype(np.float32) for _ in range(3))
    for name, x in (("q", q), ("k", k), ("v", v)):
        np.save(os.path.join(out, f"{name}.npy"), x)
    for causal, name in ((False, "pt_softmax_bi"), (True, "pt_softmax_causal")):
        attn = FastAttention(dim_heads=8, nb_features=12, causal=causal)
        attn.projection_matrix.copy_(w)
        with torch.no_grad():
            o = attn(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v))
        np.save(os.path.join(out, f"{name}.npy"), o.numpy().astype(np.float32))


if __name__ == "__main__":
    main()
