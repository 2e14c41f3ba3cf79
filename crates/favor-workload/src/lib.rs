//! The benchmark workload of the favor-simd issue — batch 1, 8 heads, head dim 64, m = 256
//! features, f32 — its FLOP model and the FMA roof loop.
//!
//! This crate is the one home of these definitions: `favor bench` (favor-cli) runs them, and
//! the criterion benches and examples in `benches/` re-export them (`favor_benches` is
//! `pub use favor_workload::*`). It is a crate of its own so that neither the benches nor
//! favor-testkit depend on the command-line program.
//!
//! ```
//! use favor_workload::{DIM, HEADS, heads, scratch_len, bidirectional_all};
//!
//! let len = 64;
//! let hs = heads(len);
//! assert_eq!(hs.len(), HEADS);
//! let (mut out, mut scratch) = (vec![0f32; len * DIM], vec![0f32; scratch_len()]);
//! bidirectional_all(&favor_core::Scalar, &hs, len, &mut out, &mut scratch);
//! assert!(out.iter().all(|x| x.is_finite()));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use favor_core::*;

mod hybrid;
use favor_tensor::Error;
pub use hybrid::{
    HYBRID_BLOCK, HYBRID_SINKS, Hybrid, HybridHeadStream, hybrid_all, hybrid_decode_step,
    hybrid_flops, hybrid_scratch_len, with_hybrid_streams,
};
use pulp::{Simd, WithSimd};
use std::result::Result;

/// Heads in the benchmark workload.
pub const HEADS: usize = 8;
/// Head (query/key/value) dimension.
pub const DIM: usize = 64;
/// Random features m.
pub const FEATURES: usize = 256;
/// The smaller m of the hybrid rows: the first [`SMALL_FEATURES`] rows of each head's W, one
/// whole orthogonal block (`SMALL_FEATURES == DIM`).
pub const SMALL_FEATURES: usize = 64;
/// Rows per block of bidirectional attention.
pub const BIDIR_BLOCK: usize = 256;
/// Tokens per chunk of the chunked causal path.
pub const CAUSAL_CHUNK: usize = 64;

/// FLOPs charged to FAVOR+ attention over `len` tokens: 8·H·L·m·d (projection of q and k,
/// K'ᵀV and Q'S, each 2·L·m·d). Exponentials, normalisers and the chunk-local causal tile
/// are not counted.
pub fn favor_flops(len: usize) -> u64 {
    favor_flops_with(len, FEATURES)
}

/// [`favor_flops`] with `features` random features instead of [`FEATURES`].
pub fn favor_flops_with(len: usize, features: usize) -> u64 {
    8 * (HEADS * len * features * DIM) as u64
}

/// FLOPs charged to exact softmax attention over `len` tokens: 4·H·L²·d (QKᵀ and the
/// weighted sum of V, each L²·d multiply-adds of 2 FLOPs). Exponentials are not counted.
pub fn exact_flops(len: usize) -> u64 {
    4 * (HEADS * DIM) as u64 * (len as u64 * len as u64)
}

/// One head's inputs and projection.
pub struct Head {
    /// Projection W (m×d).
    pub w: Vec<f32>,
    /// Its transpose Wᵀ (d×m), which lets SIMD backends project without transposing W.
    pub wt: Vec<f32>,
    /// The transpose of W's first [`SMALL_FEATURES`] rows (d×[`SMALL_FEATURES`]).
    pub wt_small: Vec<f32>,
    /// Queries (L×d).
    pub q: Vec<f32>,
    /// Keys (L×d).
    pub k: Vec<f32>,
    /// Values (L×d).
    pub v: Vec<f32>,
}

impl Head {
    /// The head's positive softmax feature map, with Wᵀ attached.
    pub fn phi(&self) -> PositiveSoftmax<'_, f32> {
        PositiveSoftmax::new(&self.w, FEATURES, DIM)
            .and_then(|p| p.with_transposed_projection(&self.wt))
            .unwrap()
    }

    /// The head's positive softmax feature map over the first `features` rows of W
    /// ([`FEATURES`] or [`SMALL_FEATURES`]), with that block's Wᵀ attached.
    ///
    /// # Panics
    /// For any other `features`.
    pub fn phi_with(&self, features: usize) -> PositiveSoftmax<'_, f32> {
        let wt = match features {
            FEATURES => &self.wt,
            SMALL_FEATURES => &self.wt_small,
            _ => panic!("the workload has m = {FEATURES} or {SMALL_FEATURES}, not {features}"),
        };
        PositiveSoftmax::new(&self.w[..features * DIM], features, DIM)
            .and_then(|p| p.with_transposed_projection(wt))
            .unwrap()
    }
}

/// `HEADS` heads of `len` tokens (the same projections whatever `len`): q, k rows of norm ≈ 2 (N(0, 1/16) entries), v ~ N(0, 1).
///
/// # Panics
/// If their memory is not available; [`try_heads`] returns an error instead.
pub fn heads(len: usize) -> Vec<Head> {
    try_heads(len).unwrap_or_else(|e| panic!("{e}"))
}

/// [`heads`], or [`Error::Alloc`] (`"benchmark inputs"`) when their memory is not available.
pub fn try_heads(len: usize) -> Result<Vec<Head>, Error> {
    let n = len.checked_mul(DIM).ok_or(alloc(None))?;
    let mut heads = Vec::new();
    heads
        .try_reserve_exact(HEADS)
        .map_err(|_| alloc(HEADS.checked_mul(size_of::<Head>())))?;
    for h in 0..HEADS {
        let mut w = vec![0f32; FEATURES * DIM];
        projection(ProjectionKind::default(), h as u64, FEATURES, DIM, &mut w).unwrap();
        let mut wt = vec![0f32; FEATURES * DIM];
        transpose_projection(&w, FEATURES, DIM, &mut wt).unwrap();
        let mut wt_small = vec![0f32; SMALL_FEATURES * DIM];
        transpose_projection(
            &w[..SMALL_FEATURES * DIM],
            SMALL_FEATURES,
            DIM,
            &mut wt_small,
        )
        .unwrap();
        let (mut q, mut k, mut v) = (zeros(n)?, zeros(n)?, zeros(n)?);
        fill_inputs(h, &mut q, &mut k, &mut v);
        heads.push(Head {
            w,
            wt,
            wt_small,
            q,
            k,
            v,
        });
    }
    Ok(heads)
}

/// The error of an input buffer that cannot be allocated (`bytes`: `None` when its size
/// overflows `usize`).
fn alloc(bytes: Option<usize>) -> Error {
    Error::Alloc {
        what: "benchmark inputs",
        bytes,
    }
}

/// `n` zeros, reserved fallibly.
fn zeros(n: usize) -> Result<Vec<f32>, Error> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| alloc(n.checked_mul(size_of::<f32>())))?;
    v.resize(n, 0.0);
    Ok(v)
}

/// Writes head `head`'s inputs into caller buffers, the values [`heads`] gives that head for
/// `q.len() / DIM` tokens: q, then k, then v drawn in turn from the head's seeded normal
/// stream (q and k scaled by 1/4). Lets a caller lay the heads out in one `[1, H, L, d]`
/// tensor without a second copy. Buffers of unequal lengths are filled in the same order.
pub fn fill_inputs(head: usize, q: &mut [f32], k: &mut [f32], v: &mut [f32]) {
    let mut g = Normals::new(0xBE4C_0000 + head as u64);
    for (x, s) in [(q, 0.25f32), (k, 0.25), (v, 1.0)] {
        for e in x.iter_mut() {
            *e = g.sample::<f32>() * s;
        }
    }
}

/// Bidirectional attention over the first `len` tokens of every head with kernels `k`; every
/// head writes the same `out[..len·d]`.
pub fn bidirectional_all<K: Kernels<f32>>(
    k: &K,
    heads: &[Head],
    len: usize,
    out: &mut [f32],
    scratch: &mut [f32],
) {
    all_heads(k, heads, len, out, scratch, false)
}

/// Chunked causal attention (chunks of [`CAUSAL_CHUNK`]) over the first `len` tokens of every
/// head with kernels `k`; every head writes the same `out[..len·d]`.
pub fn causal_all<K: Kernels<f32>>(
    k: &K,
    heads: &[Head],
    len: usize,
    out: &mut [f32],
    scratch: &mut [f32],
) {
    all_heads(k, heads, len, out, scratch, true)
}

fn all_heads<K: Kernels<f32>>(
    k: &K,
    heads: &[Head],
    len: usize,
    out: &mut [f32],
    scratch: &mut [f32],
    causal: bool,
) {
    let block = if causal { CAUSAL_CHUNK } else { BIDIR_BLOCK };
    let opts = Options {
        block,
        ..Default::default()
    };
    let shape = Shape::new(len, DIM, DIM);
    let n = len * DIM;
    for h in heads {
        let (phi, (q, kk, v)) = (h.phi(), (&h.q[..n], &h.k[..n], &h.v[..n]));
        if causal {
            Plan::new(PlanKind::CausalChunked, *k, &phi, shape, opts)
                .and_then(|plan| plan.run(q, kk, v, out, scratch))
                .unwrap();
        } else {
            Plan::new(PlanKind::Bidirectional, *k, &phi, shape, opts)
                .and_then(|plan| plan.run(q, kk, v, out, scratch))
                .unwrap();
        }
    }
}

/// Query and key tile of [`exact_all`]: a 128×128 logit tile (64 KiB) stays in L2.
pub const EXACT_TILE: usize = 128;

/// Exact (bidirectional) softmax attention with scale 1/√d, the tiled GEMM schedule
/// ([`softmax_attention_tiled`], tiles of [`EXACT_TILE`]), over the first `len` tokens of
/// every head with kernels `k`; every head writes the same `out[..len·d]`. The tiled
/// schedule runs at GEMM speed, so FAVOR+ is compared with a fair exact baseline, not with
/// the row-at-a-time reference.
pub fn exact_all<K: Kernels<f32>>(k: &K, heads: &[Head], len: usize, out: &mut [f32]) {
    let (n, shape) = (len * DIM, Shape::new(len, DIM, DIM));
    let opts = ExactOptions::default();
    let mut scratch = vec![0f32; softmax_attention_tiled_scratch_len(EXACT_TILE).unwrap()];
    for h in heads {
        let (q, kk, v) = (&h.q[..n], &h.k[..n], &h.v[..n]);
        softmax_attention_tiled(k, q, kk, v, shape, &opts, EXACT_TILE, out, &mut scratch).unwrap();
    }
}

/// A decode stream over one head's feature map (the map borrows the [`Head`] for `'h`).
pub type HeadStream<'a, 'h, K> = Stream<'a, f32, PositiveSoftmax<'h, f32>, K>;

/// Runs `f` on one empty decode [`Stream`] per head of `heads` (each over [`Head::phi`],
/// value dim [`DIM`]), with kernels `k`. The streams' buffers live for the call.
pub fn with_streams<'h, K: Kernels<f32>, R>(
    k: K,
    heads: &'h [Head],
    f: impl FnOnce(&mut [HeadStream<'_, 'h, K>]) -> R,
) -> R {
    let phis: Vec<_> = heads.iter().map(Head::phi).collect();
    let mut bufs: Vec<Vec<f32>> = phis
        .iter()
        .map(|p| vec![0f32; HeadStream::<K>::buffer_len(p, DIM).unwrap()])
        .collect();
    let mut streams: Vec<_> = phis
        .iter()
        .zip(bufs.iter_mut())
        .map(|(p, b)| Stream::new(k, p, DIM, b).unwrap())
        .collect();
    f(&mut streams)
}

/// [`with_streams`] for [`decode_step_shared`]: one stream per head, all over head 0's map
/// (the heads share one W, as favor-tensor's do), with the [`SharedMap`] that maps their
/// tokens in one GEMM.
pub fn with_shared_streams<'h, K: Kernels<f32>, R>(
    k: K,
    heads: &'h [Head],
    f: impl FnOnce(&mut SharedMap<'_, 'h, K>, &mut [HeadStream<'_, 'h, K>]) -> R,
) -> R {
    let phi = heads[0].phi();
    let mut shared = SharedMap::new(k, &phi, heads.len());
    let len = HeadStream::<K>::buffer_len(&phi, DIM).unwrap();
    let mut bufs = vec![vec![0f32; len]; heads.len()];
    let mut streams: Vec<_> = bufs
        .iter_mut()
        .map(|b| Stream::new(k, &phi, DIM, b).unwrap())
        .collect();
    f(&mut shared, &mut streams)
}

/// One decode step of every head: token `t` of each head (row `t` modulo the head's length)
/// goes through `streams[i]` (one per head, in order) with [`Stream::step`]; every head
/// writes the same `out[..d]`. Charged [`favor_flops`]`(1)`.
pub fn decode_step<K: Kernels<f32>>(
    streams: &mut [HeadStream<'_, '_, K>],
    heads: &[Head],
    t: usize,
    out: &mut [f32],
) {
    for (s, (q, kk, v)) in streams.iter_mut().zip(tokens(heads, t)) {
        s.step(q, kk, v, &mut out[..DIM]).unwrap();
    }
}

/// Token `t` of every head, as its `(q, k, v)` rows: row `t` modulo the head's length.
fn tokens(heads: &[Head], t: usize) -> impl Iterator<Item = (&[f32], &[f32], &[f32])> {
    heads.iter().map(move |h| {
        let row = t % (h.q.len() / DIM);
        let r = row * DIM..(row + 1) * DIM;
        (&h.q[r.clone()], &h.k[r.clone()], &h.v[r])
    })
}

/// What [`decode_step_shared`] maps every head's token with: the one feature map the heads
/// share, the kernels their streams run on, and the buffers of one mapping. They travel
/// together because they are set up once, before decoding, and every step uses them alike;
/// sizing the buffers here leaves callers nothing to get wrong.
pub struct SharedMap<'p, 'h, K> {
    /// Kernels of every head's stream.
    pub kernels: K,
    /// The map every head's stream is over.
    pub phi: &'p PositiveSoftmax<'h, f32>,
    /// 2·H·d elements: the heads' q rows, then their k rows.
    pub rows: Vec<f32>,
    /// [`mapped_tokens_len`] for H tokens.
    pub scratch: Vec<f32>,
}

impl<'p, 'h, K: Kernels<f32>> SharedMap<'p, 'h, K> {
    /// The map `phi` with kernels `kernels`, and buffers for `heads` heads' tokens.
    pub fn new(kernels: K, phi: &'p PositiveSoftmax<'h, f32>, heads: usize) -> Self {
        Self {
            kernels,
            phi,
            rows: vec![0f32; 2 * heads * DIM],
            scratch: vec![0f32; mapped_tokens_len(phi, heads).unwrap()],
        }
    }
}

/// One decode step of every head through one shared feature map — the heads of a layer with
/// one projection, as favor-tensor's `Performer` has: token `t` of each head (as in
/// [`decode_step`]) is mapped for all heads at once with [`MappedTokens`] (one GEMM of
/// 2·H rows: W is read once per token, not once per head), then applied to each head's
/// stream with [`Stream::step_mapped`]. `streams` must all be over `shared`'s map with its
/// kernels, and `shared` be made for `streams.len()` heads.
/// Charged [`favor_flops`]`(1)`, like [`decode_step`].
pub fn decode_step_shared<'h, K: Kernels<f32>>(
    shared: &mut SharedMap<'_, 'h, K>,
    streams: &mut [HeadStream<'_, 'h, K>],
    heads: &[Head],
    t: usize,
    out: &mut [f32],
) {
    let (k, phi) = (&shared.kernels, shared.phi);
    let (rows, scratch) = (&mut shared.rows[..], &mut shared.scratch[..]);
    let n = streams.len();
    let (qs, ks) = rows.split_at_mut(n * DIM);
    for (i, h) in heads.iter().enumerate().take(n) {
        let row = t % (h.q.len() / DIM);
        qs[i * DIM..(i + 1) * DIM].copy_from_slice(&h.q[row * DIM..(row + 1) * DIM]);
        ks[i * DIM..(i + 1) * DIM].copy_from_slice(&h.k[row * DIM..(row + 1) * DIM]);
    }
    let mapped = MappedTokens::new(k, phi, n, qs, ks, scratch).unwrap();
    for (i, (s, h)) in streams.iter_mut().zip(heads).enumerate() {
        let row = t % (h.q.len() / DIM);
        s.step_mapped(
            &mapped,
            i,
            &h.v[row * DIM..(row + 1) * DIM],
            &mut out[..DIM],
        )
        .unwrap();
    }
}

/// Scratch large enough for either path: the larger of what the bidirectional plan (blocks
/// of [`BIDIR_BLOCK`]) and the chunked causal plan (chunks of [`CAUSAL_CHUNK`]) size. A
/// plan's scratch depends on the map's dimensions only (not on W, the length or the backend),
/// so an all-zero W of the workload's shape sizes it.
pub fn scratch_len() -> usize {
    let w = vec![0f32; FEATURES * DIM];
    let phi = PositiveSoftmax::new(&w, FEATURES, DIM).unwrap();
    let planned = |kind: PlanKind, block: usize| {
        let opts = Options {
            block,
            ..Default::default()
        };
        let plan = Plan::new(kind, Scalar, &phi, Shape::new(1, DIM, DIM), opts).unwrap();
        plan.scratch_len()
    };
    planned(PlanKind::Bidirectional, BIDIR_BLOCK)
        .max(planned(PlanKind::CausalChunked, CAUSAL_CHUNK))
}

struct FmaLoop {
    iters: usize,
}

impl WithSimd for FmaLoop {
    type Output = (f32, u64);
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) -> (f32, u64) {
        // 12 independent chains: enough to cover FMA latency × issue width on current cores.
        let mut acc = [s.splat_f32s(0.0); 12];
        let a = s.splat_f32s(0.999_999);
        let b = s.splat_f32s(1e-7);
        for _ in 0..self.iters {
            for x in acc.iter_mut() {
                *x = s.mul_add_e_f32s(a, *x, b);
            }
        }
        let mut total = s.splat_f32s(0.0);
        for x in acc {
            total = s.add_f32s(total, x);
        }
        (
            s.reduce_sum_f32s(total),
            (2 * 12 * S::F32_LANES * self.iters) as u64,
        )
    }
}

/// Runs `iters` rounds of 12 independent vector FMAs on the widest ISA pulp detects and
/// returns (a checksum, the FLOPs performed). Its rate is the single-core FMA roof.
pub fn fma_roof(iters: usize) -> (f32, u64) {
    pulp::Arch::new().dispatch(FmaLoop {
        iters: std::hint::black_box(iters),
    })
}

/// The FMA roof of the 8-lane AVX2+FMA ISA (`None` where the CPU lacks it), for comparing the
/// forced AVX2 backend on a machine that also has AVX-512.
#[cfg(target_arch = "x86_64")]
pub fn fma_roof_avx2(iters: usize) -> Option<(f32, u64)> {
    pulp::x86::V3::try_new().map(|s| {
        Simd::vectorize(
            s,
            FmaLoop {
                iters: std::hint::black_box(iters),
            },
        )
    })
}
