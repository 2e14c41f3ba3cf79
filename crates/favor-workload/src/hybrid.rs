//! The hybrid-attention workload: the benchmark heads with an exact window of w keys and one
//! sink, random features for the rest: the heads' m = 256 map, or its first
//! [`SMALL_FEATURES`](super::SMALL_FEATURES) rows.

use super::{CAUSAL_CHUNK, DIM, Head};
use favor_core::*;

/// Queries per block of bidirectional hybrid attention (favor-tensor's choice: each block also
/// weighs a band of `block + 2w` keys, so the cost per query grows with the block).
pub const HYBRID_BLOCK: usize = 32;
/// Attention sinks in the hybrid workload (a `[CLS]` or BOS token).
pub const HYBRID_SINKS: usize = 1;

/// A hybrid configuration of the workload: the exact window w (with [`HYBRID_SINKS`] sinks)
/// and the random features m ([`FEATURES`](super::FEATURES) or
/// [`SMALL_FEATURES`](super::SMALL_FEATURES)) for the keys outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hybrid {
    /// The window w in tokens.
    pub window: usize,
    /// Random features m.
    pub features: usize,
}

/// FLOPs charged to hybrid attention over `len` tokens (per token for decode, `len` = 1):
/// [`favor_flops_with`](super::favor_flops_with) at the configuration's m plus the exact
/// part, 4·H·L·E·d, where E is the keys a query away from the sequence's ends takes exactly:
/// the window and the sinks, 2w + 1 + s bidirectional, w + 1 + s causal. The bidirectional
/// plan's band subtraction (the window's random-feature terms taken back out of the total
/// state) is not counted.
pub fn hybrid_flops(len: usize, causal: bool, hybrid: Hybrid) -> u64 {
    let w = hybrid.window;
    let exact_keys = if causal { w + 1 } else { 2 * w + 1 } + HYBRID_SINKS;
    super::favor_flops_with(len, hybrid.features)
        + 4 * (super::HEADS * len * exact_keys * DIM) as u64
}

fn shape(window: usize) -> HybridShape {
    HybridShape {
        window,
        sinks: HYBRID_SINKS,
    }
}

fn plan<'p, K: Kernels<f32>>(
    k: K,
    phi: &'p PositiveSoftmax<'_, f32>,
    len: usize,
    causal: bool,
    window: usize,
) -> Plan<'p, f32, K, PositiveSoftmax<'p, f32>> {
    let (kind, block) = if causal {
        (PlanKind::CausalChunked, CAUSAL_CHUNK)
    } else {
        (PlanKind::Bidirectional, HYBRID_BLOCK)
    };
    let opts = Options {
        block,
        ..Default::default()
    };
    Plan::new(kind, k, phi, Shape::new(len, DIM, DIM), opts)
        .and_then(|p| p.with_hybrid(shape(window)))
        .unwrap()
}

/// Scratch for [`hybrid_all`] with configuration `hybrid`, either direction.
pub fn hybrid_scratch_len(hybrid: Hybrid) -> usize {
    let w = vec![0f32; hybrid.features * DIM];
    let phi = PositiveSoftmax::new(&w, hybrid.features, DIM).unwrap();
    [false, true]
        .map(|causal| plan(Scalar, &phi, 1, causal, hybrid.window).scratch_len())
        .into_iter()
        .fold(0, usize::max)
}

/// Hybrid attention (configuration `hybrid`) over the first `len` tokens of every head with
/// kernels `k`, causal (chunks of [`CAUSAL_CHUNK`]) or bidirectional (blocks of
/// [`HYBRID_BLOCK`]); every head writes the same `out[..len·d]`. `scratch` holds at least
/// [`hybrid_scratch_len`]`(hybrid)`.
pub fn hybrid_all<K: Kernels<f32>>(
    k: &K,
    heads: &[Head],
    (len, causal, hybrid): (usize, bool, Hybrid),
    out: &mut [f32],
    scratch: &mut [f32],
) {
    let n = len * DIM;
    for h in heads {
        let phi = h.phi_with(hybrid.features);
        plan(*k, &phi, len, causal, hybrid.window)
            .run(&h.q[..n], &h.k[..n], &h.v[..n], out, scratch)
            .unwrap();
    }
}

/// A hybrid decode stream over one head's map.
pub type HybridHeadStream<'a, 'h, K> = HybridStream<'a, f32, PositiveSoftmax<'h, f32>, K>;

/// Runs `f` on one empty [`HybridStream`] per head (configuration `hybrid`), with kernels `k`.
/// The streams' buffers live for the call.
pub fn with_hybrid_streams<'h, K: Kernels<f32>, R>(
    k: K,
    heads: &'h [Head],
    hybrid: Hybrid,
    f: impl FnOnce(&mut [HybridHeadStream<'_, 'h, K>]) -> R,
) -> R {
    let window = hybrid.window;
    let phis: Vec<_> = heads.iter().map(|h| h.phi_with(hybrid.features)).collect();
    let mut bufs: Vec<Vec<f32>> = phis
        .iter()
        .map(|p| vec![0f32; HybridHeadStream::<K>::buffer_len(p, DIM, shape(window)).unwrap()])
        .collect();
    let mut streams: Vec<_> = phis
        .iter()
        .zip(bufs.iter_mut())
        .map(|(p, b)| HybridStream::new(k, p, DIM, shape(window), b).unwrap())
        .collect();
    f(&mut streams)
}

/// One hybrid decode step of every head: token `t` of each head (row `t` modulo its length);
/// every head writes the same `out[..d]`.
pub fn hybrid_decode_step<K: Kernels<f32>>(
    streams: &mut [HybridHeadStream<'_, '_, K>],
    heads: &[Head],
    t: usize,
    out: &mut [f32],
) {
    for (s, (q, k, v)) in streams.iter_mut().zip(super::tokens(heads, t)) {
        s.step(q, k, v, &mut out[..DIM]).unwrap();
    }
}
