//! f64 ports of two peers' FAVOR+ attention, written from their published formulas (not from
//! favor's code): lucidrains' performer-pytorch 1.1.4 (`softmax_kernel`, `generalized_kernel`,
//! `linear_attention`, `causal_linear_attention_noncuda`) and google-research's JAX
//! `performer/fast_attention` (`nonnegative_softmax_kernel_feature_creator`,
//! `generalized_kernel_feature_creator`, the numerator / denominator and its guard).
//!
//! Every tensor is `[B, H, L, d]` row-major; W is `m × d`. The ports follow the peers'
//! operations one to one (the shapes of their einsums), in f64, with O(L·m) memory: the
//! causal prefix sums are kept as the peers' cumulative sums, one token at a time.

/// The peer whose formulas to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// performer-pytorch 1.1.4.
    PerformerPytorch,
    /// google-research performer/fast_attention (JAX).
    GoogleJax,
}

/// The kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKernel {
    /// `nonnegative_softmax_kernel_feature_creator` / `softmax_kernel`.
    Softmax,
    /// `generalized_kernel` with ReLU (both peers' default generalized kernel).
    Relu,
}

/// Dimensions of one call.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    /// Batch B.
    pub batch: usize,
    /// Heads H.
    pub heads: usize,
    /// Tokens L.
    pub len: usize,
    /// Head dimension d.
    pub dim: usize,
    /// Value dimension dv.
    pub value_dim: usize,
    /// Projection rows m.
    pub features: usize,
}

/// performer-pytorch `softmax_kernel(..., eps=1e-4)`; JAX `numerical_stabilizer = 1e-6`
/// passed as the feature creator's `eps`.
fn softmax_eps(peer: Peer) -> f64 {
    match peer {
        Peer::PerformerPytorch => 1e-4,
        Peer::GoogleJax => 1e-6,
    }
}

/// `data_dash = (s·x)·Wᵀ` for every row of `x` (rows × d): rows × m.
fn data_dash(x: &[f64], w: &[f64], d: usize, m: usize, s: f64) -> Vec<f64> {
    let rows = x.len() / d;
    let mut out = vec![0.0; rows * m];
    for r in 0..rows {
        for j in 0..m {
            out[r * m + j] = (0..d).map(|t| s * x[r * d + t] * w[j * d + t]).sum();
        }
    }
    out
}

/// The features of every head: `[B·H][L × m]`.
fn features(
    peer: Peer,
    kernel: PeerKernel,
    x: &[f64],
    w: &[f64],
    dims: Dims,
    is_query: bool,
) -> Vec<Vec<f64>> {
    let Dims {
        batch,
        heads,
        len,
        dim: d,
        features: m,
        ..
    } = dims;
    let normalize = match kernel {
        // Both peers' softmax feature creators default to normalize_data=True.
        PeerKernel::Softmax => true,
        // performer-pytorch's generalized_kernel defaults to normalize_data=True; JAX's
        // make_fast_generalized_attention to normalize_data=False.
        PeerKernel::Relu => peer == Peer::PerformerPytorch,
    };
    let s = if normalize {
        1.0 / (d as f64).sqrt().sqrt()
    } else {
        1.0
    };
    let per_head: Vec<&[f64]> = x.chunks_exact(len * d).collect();
    let dashes: Vec<Vec<f64>> = per_head.iter().map(|h| data_dash(h, w, d, m, s)).collect();
    if kernel == PeerKernel::Relu {
        return dashes
            .into_iter()
            .map(|dd| dd.into_iter().map(|u| u.max(0.0) + 1e-3).collect())
            .collect();
    }
    let ratio = 1.0 / (m as f64).sqrt();
    let eps = softmax_eps(peer);
    // Keys: performer-pytorch torch.amax(data_dash, dim=(-1, -2)); JAX jnp.max(data_dash,
    // axis=last_dims_t + attention_dims_t): both per (batch, head) over (L, m).
    let mut out = Vec::with_capacity(batch * heads);
    for (hx, dd) in per_head.iter().zip(&dashes) {
        let head_max = dd.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let mut f = vec![0.0; len * m];
        for i in 0..len {
            let diag: f64 = hx[i * d..(i + 1) * d].iter().map(|v| v * v).sum::<f64>() / 2.0 * s * s;
            let row = &dd[i * m..(i + 1) * m];
            let shift = if is_query {
                row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b))
            } else {
                head_max
            };
            for j in 0..m {
                f[i * m + j] = ratio * ((row[j] - diag - shift).exp() + eps);
            }
        }
        out.push(f);
    }
    out
}

/// The peer's attention output `[B, H, L, dv]`: `q`, `k` `[B, H, L, d]`, `v` `[B, H, L, dv]`,
/// `w` `m × d`.
pub fn peer_attention(
    peer: Peer,
    kernel: PeerKernel,
    causal: bool,
    (q, k, v): (&[f64], &[f64], &[f64]),
    w: &[f64],
    dims: Dims,
) -> Vec<f64> {
    let Dims {
        len,
        value_dim: dv,
        features: m,
        ..
    } = dims;
    // JAX's guard with its attention's numerical_stabilizer: 1e-6 for softmax, 0 (no-op)
    // for the generalized attention; performer-pytorch has none.
    let guard = match (peer, kernel) {
        (Peer::GoogleJax, PeerKernel::Softmax) => Guard::Jax,
        (Peer::GoogleJax, PeerKernel::Relu) => Guard::None,
        (Peer::PerformerPytorch, _) => Guard::Pytorch,
    };
    let qf = features(peer, kernel, q, w, dims, true);
    let kf = features(peer, kernel, k, w, dims, false);
    let mut out = vec![0.0; dims.batch * dims.heads * len * dv];
    for (hi, (qh, kh)) in qf.iter().zip(&kf).enumerate() {
        let vh = &v[hi * len * dv..(hi + 1) * len * dv];
        let oh = &mut out[hi * len * dv..(hi + 1) * len * dv];
        head(guard, causal, (qh, kh, vh), m, dv, oh);
    }
    out
}

/// The denominator rules.
#[derive(Clone, Copy, PartialEq)]
enum Guard {
    /// performer-pytorch: none bidirectional, `q·(k_cumsum + 1e-6)` causal.
    Pytorch,
    /// JAX softmax: `R + 2δ·[|R| ≤ δ]`.
    Jax,
    /// JAX generalized (numerical_stabilizer = 0).
    None,
}

/// JAX's `R + 2δ·[|R| ≤ δ]`, δ = `numerical_stabilizer` = 1e-6.
fn jax_guard(r: f64) -> f64 {
    let delta = 1e-6;
    if r.abs() <= delta { r + 2.0 * delta } else { r }
}

/// One head: performer-pytorch's `linear_attention` (k_cumsum = k.sum(dim=-2), context =
/// einsum('nd,ne->de', k, v)) or `causal_linear_attention_noncuda` (cumulative sums), JAX's
/// numerator and denominator, as `guard` says.
fn head(
    guard: Guard,
    causal: bool,
    (qf, kf, v): (&[f64], &[f64], &[f64]),
    m: usize,
    dv: usize,
    out: &mut [f64],
) {
    let len = qf.len() / m;
    let mut ksum = vec![0.0; m];
    let mut ctx = vec![0.0; m * dv];
    let key = |j: usize| (&kf[j * m..(j + 1) * m], &v[j * dv..(j + 1) * dv]);
    if !causal {
        for j in 0..len {
            let (k, vj) = key(j);
            absorb(k, vj, &mut ksum, &mut ctx);
        }
    }
    for i in 0..len {
        if causal {
            let (k, vi) = key(i);
            absorb(k, vi, &mut ksum, &mut ctx);
        }
        let qi = &qf[i * m..(i + 1) * m];
        let r: f64 = (0..m).map(|a| qi[a] * ksum[a]).sum();
        let den = match guard {
            // D_inv = 1 / einsum('nd,nd->n', q, k_cumsum + eps), eps = 1e-6.
            Guard::Pytorch if causal => (0..m).map(|a| qi[a] * (ksum[a] + 1e-6)).sum(),
            Guard::Jax => jax_guard(r),
            Guard::Pytorch | Guard::None => r,
        };
        answer(qi, &ctx, den, &mut out[i * dv..(i + 1) * dv]);
    }
}

/// One key: `k_sum += k'`, `context += k' vᵀ`.
fn absorb(kf: &[f64], v: &[f64], ksum: &mut [f64], ctx: &mut [f64]) {
    let dv = v.len();
    for (a, &f) in kf.iter().enumerate() {
        ksum[a] += f;
        for e in 0..dv {
            ctx[a * dv + e] += f * v[e];
        }
    }
}

/// One query's output `(q'·context) / den`.
fn answer(qi: &[f64], ctx: &[f64], den: f64, out: &mut [f64]) {
    let dv = out.len();
    for e in 0..dv {
        let num: f64 = (0..qi.len()).map(|a| qi[a] * ctx[a * dv + e]).sum();
        out[e] = num / den;
    }
}
