//! FAVOR+ attention: bidirectional, causal token loop, and chunked causal prefill.

use core::marker::PhantomData;
use core::ops::Range;

use crate::error::{Result, check};
use crate::inputs::Qkv;
use crate::state::{
    PrefixState, Queries, Remap, guard, rescale_factor, scale_by_exp, stabiliser, state_len,
    underflowed,
};
use crate::{Accum, FeatureMap, Float, HybridShape, Kernels, MatMut, MatRef, range};

/// Shapes of one attention head: `q` is queries×dim, `k` keys×dim, `v` keys×value_dim,
/// the output queries×value_dim; all row-major and contiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Number of query rows.
    pub queries: usize,
    /// Number of key (and value) rows.
    pub keys: usize,
    /// Query/key dimension d.
    pub dim: usize,
    /// Value dimension dv.
    pub value_dim: usize,
}

impl Shape {
    /// Self-attention over `len` tokens (queries = keys = len).
    pub fn new(len: usize, dim: usize, value_dim: usize) -> Self {
        Self {
            queries: len,
            keys: len,
            dim,
            value_dim,
        }
    }

    /// Checks the inputs against this shape and a feature map: shapes, then the supported
    /// range (finite, entries within the map's limit, sums over `prior_keys` keys plus these
    /// that stay finite).
    pub(crate) fn check_inputs<T: Float, F: FeatureMap<T>>(
        &self,
        fm: &F,
        x: Qkv<'_, T>,
        out: &[T],
        key_mask: Option<&[bool]>,
        prior_keys: u64,
    ) -> Result<()> {
        self.check_shapes(fm.input_dim(), x, out, key_mask)?;
        let keys = prior_keys.saturating_add(self.keys as u64);
        range::inputs(fm, x, (self.dim, self.value_dim), keys)
    }

    /// Checks lengths and dimensions only.
    pub(crate) fn check_shapes<T: Float>(
        &self,
        input_dim: usize,
        Qkv { q, k, v }: Qkv<'_, T>,
        out: &[T],
        key_mask: Option<&[bool]>,
    ) -> Result<()> {
        check::nonzero("queries", self.queries)?;
        check::nonzero("keys", self.keys)?;
        check::nonzero("dim", self.dim)?;
        check::nonzero("value_dim", self.value_dim)?;
        check::same_dim("feature map input dim vs shape.dim", input_dim, self.dim)?;
        check::exact("q", q, check::mul(self.queries, self.dim)?)?;
        check::exact("k", k, check::mul(self.keys, self.dim)?)?;
        check::exact("v", v, check::mul(self.keys, self.value_dim)?)?;
        if let Some(mask) = key_mask {
            check::exact("key_mask", mask, self.keys)?;
        }
        check::room("out", out, check::mul(self.queries, self.value_dim)?)
    }

    fn check_causal(&self) -> Result<()> {
        check::same_dim(
            "causal attention needs queries == keys",
            self.keys,
            self.queries,
        )
    }
}

/// Options shared by the FAVOR+ attention entry points.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// Rows processed per block (bidirectional and token loop) or tokens per chunk
    /// (chunked causal). Scratch grows with it, never with the sequence length.
    pub block: usize,
    /// Divide by the estimated softmax denominator (the usual attention). When `false` the
    /// raw estimate of `A·V` is returned, which overflows where `exp(q·k)` does.
    pub normalized: bool,
    /// Key padding mask: `key_mask[j] == false` removes key j from numerator and
    /// denominator. Rows whose every visible key is masked output zeros.
    pub key_mask: Option<&'a [bool]>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            block: 64,
            normalized: true,
            key_mask: None,
        }
    }
}

impl Options<'_> {
    fn block(&self) -> Result<usize> {
        check::nonzero("block", self.block)
    }
}

/// Keys the bidirectional path adds to the compensation (a block at a time) before settling
/// them into the total: their rounding error is that of a sum of `FOLD_ROWS / block` block
/// sums; the settling pass over the state is then under 1% of the GEMMs that formed them.
const FOLD_ROWS: usize = 1024;

/// Prepares key rows for the state: masked keys, and keys whose log-scale is NaN (their
/// squared norm overflowed `T`, so their true feature is the limit 0), get log-scale `-∞` and
/// an all-zero feature row (their stored features may be NaN, and NaN·0 is NaN), which every
/// path treats as "absent".
pub(crate) fn prepare_keys<T: Float>(
    feats: &mut [T],
    width: usize,
    logs: &mut [T],
    mask: Option<&[bool]>,
    start: usize,
) {
    for (j, l) in logs.iter_mut().enumerate() {
        let masked = mask.is_some_and(|m| !m[start + j]);
        if masked || l.is_nan() {
            *l = T::neg_infinity();
            feats[j * width..(j + 1) * width].fill(T::zero());
        }
    }
}

/// Splits `n` elements off the front of `buf`.
pub(crate) fn take<'b, T>(buf: &mut &'b mut [T], n: usize) -> &'b mut [T] {
    let (a, b) = core::mem::take(buf).split_at_mut(n);
    *buf = b;
    a
}

/// Scratch elements [`PlanKind::Bidirectional`] needs: the state, one block of features, and two
/// feature rows for re-mapping a query whose denominator underflows.
pub(crate) fn bidirectional_scratch_len(
    features: usize,
    value_dim: usize,
    block: usize,
) -> Result<usize> {
    let blk = check::mul(check::nonzero("block", block)?, check::add(features, 1)?)?;
    let remap = check::mul(2, features)?;
    check::add(check::add(state_len(features, value_dim)?, blk)?, remap)
}

/// Bidirectional FAVOR+: `out = Q'(K'ᵀV) / Q'(K'ᵀ1)` in O((Lq + Lk)·M·(d + dv)) time and
/// scratch independent of L (keys, then queries, go through in blocks of `opts.block`).
///
/// ```
/// use favor_core::*;
/// let (l, d, m) = (5, 4, 16);
/// let mut w = [0f32; 64];
/// projection(ProjectionKind::default(), 1, m, d, &mut w).unwrap();
/// let phi = PositiveSoftmax::new(&w, m, d).unwrap();
/// let x: Vec<f32> = (0..l * d).map(|i| (i as f32 * 0.37).sin()).collect();
/// let shape = Shape::new(l, d, d);
/// let plan = Plan::new(PlanKind::Bidirectional, Scalar, &phi, shape, Options::default()).unwrap();
/// let mut scratch = vec![0f32; plan.scratch_len()];
/// let mut out = vec![0f32; l * d];
/// plan.run(&x, &x, &x, &mut out, &mut scratch).unwrap();
/// assert!(out.iter().all(|o| o.is_finite()));
/// ```
pub(crate) fn bidirectional<T: Float, K: Kernels<T>, F: FeatureMap<T>>(
    plan: &Plan<'_, T, K, F>,
    q: &[T],
    k: &[T],
    v: &[T],
    out: &mut [T],
    scratch: &mut [T],
) -> Result<()> {
    let (_, fm, shape, opts) = plan.parts();
    shape.check_inputs(fm, Qkv::new(q, k, v), out, opts.key_mask, 0)?;
    let (m, dv) = (fm.feature_dim(), shape.value_dim);
    check::room(
        "scratch",
        scratch,
        bidirectional_scratch_len(m, dv, opts.block()?)?,
    )?;
    let (state_buf, rest) = scratch.split_at_mut(state_len(m, dv)?);
    let mut state = PrefixState::new(m, dv, state_buf)?;
    absorb_rows(plan, &mut state, k, v, 0..shape.keys, rest)?;
    answer_rows(plan, &state, q, 0..shape.queries, out, rest)
}

/// `e` with its row index counted from the head's first row instead of a part's.
fn offset_row(e: crate::Error, first: usize) -> crate::Error {
    use crate::Error::{NonFinite, OutOfRange};
    match e {
        NonFinite { what, row } => NonFinite {
            what,
            row: row + first,
        },
        OutOfRange { what, row } => OutOfRange {
            what,
            row: row + first,
        },
        other => other,
    }
}

/// Scratch elements [`absorb_rows`] and [`answer_rows`] need: one block of features and
/// log-scales, and two feature rows for re-mapping a query whose denominator underflows.
/// Never overflows for a planned block: it is part of every plan's scratch.
fn part_scratch_len(features: usize, block: usize) -> usize {
    block * (features + 1) + 2 * features
}

/// Adds keys `keys` of `k` and `v` (the whole head's rows) to `state`, a block at a time
/// (inputs already checked), and settles the state's compensation at the end.
fn absorb_rows<T: Float, K: Kernels<T>, F: FeatureMap<T>>(
    plan: &Plan<'_, T, K, F>,
    state: &mut PrefixState<'_, T>,
    k: &[T],
    v: &[T],
    keys: Range<usize>,
    scratch: &mut [T],
) -> Result<()> {
    let (kernels, fm, shape, opts) = plan.parts();
    let (m, d, dv, block) = (fm.feature_dim(), shape.dim, shape.value_dim, opts.block);
    let mut buf = scratch;
    let feats = take(&mut buf, block * m);
    let logs = take(&mut buf, block);
    for start in keys.clone().step_by(block) {
        let rows = block.min(keys.end - start);
        fm.map_rows(
            kernels,
            &k[start * d..(start + rows) * d],
            rows,
            feats,
            logs,
        )?;
        prepare_keys(feats, m, &mut logs[..rows], opts.key_mask, start);
        // Blocks accumulate in the compensation (one rounding per block) and are settled
        // into the total every FOLD_ROWS keys: a pass over the state, cheap only when rare.
        let vb = &v[start * dv..(start + rows) * dv];
        state.push_rows(kernels, feats, logs, vb, rows);
        let done = start + rows - keys.start;
        if done % FOLD_ROWS < rows || start + rows == keys.end {
            state.settle(kernels);
        }
    }
    Ok(())
}

/// Answers queries `queries` of `q` (the whole head's rows) from `state` into `out` (their
/// rows only, `queries.len() × dv`), a block at a time (inputs already checked).
fn answer_rows<T: Float, K: Kernels<T>, F: FeatureMap<T>>(
    plan: &Plan<'_, T, K, F>,
    state: &PrefixState<'_, T>,
    q: &[T],
    queries: Range<usize>,
    out: &mut [T],
    scratch: &mut [T],
) -> Result<()> {
    let (kernels, fm, shape, opts) = plan.parts();
    let (m, d, dv, block) = (fm.feature_dim(), shape.dim, shape.value_dim, opts.block);
    let mut buf = scratch;
    let feats = take(&mut buf, block * m);
    let logs = take(&mut buf, block);
    let remap = take(&mut buf, 2 * m);
    for start in queries.clone().step_by(block) {
        let rows = block.min(queries.end - start);
        let qb = &q[start * d..(start + rows) * d];
        fm.map_rows(kernels, qb, rows, feats, logs)?;
        let o = &mut out[(start - queries.start) * dv..];
        let batch = Queries {
            feats,
            logs: &logs[..rows],
            normalized: opts.normalized,
            remap: Remap::new(fm, qb, &mut *remap),
        };
        state.query_rows(kernels, batch, o, dv);
    }
    Ok(())
}

/// Scratch elements [`PlanKind::CausalPrefix`] needs.
pub(crate) fn causal_prefix_scratch_len(
    features: usize,
    value_dim: usize,
    block: usize,
) -> Result<usize> {
    let blk = check::mul(check::nonzero("block", block)?, check::add(features, 1)?)?;
    let remap = check::mul(2, features)?;
    check::add(
        check::add(state_len(features, value_dim)?, check::mul(2, blk)?)?,
        remap,
    )
}

/// Causal FAVOR+ as the token-by-token prefix loop: for each token i, absorb (kᵢ, vᵢ) into
/// the state, then answer qᵢ. Features are computed a block at a time (GEMM-shaped), the
/// recurrence runs token by token. Output i depends on tokens ≤ i only, bit for bit.
pub(crate) fn causal_prefix<T: Float, K: Kernels<T>, F: FeatureMap<T>>(
    plan: &Plan<'_, T, K, F>,
    q: &[T],
    k: &[T],
    v: &[T],
    out: &mut [T],
    scratch: &mut [T],
) -> Result<()> {
    let (kernels, fm, shape, opts) = plan.parts();
    shape.check_inputs(fm, Qkv::new(q, k, v), out, opts.key_mask, 0)?;
    shape.check_causal()?;
    let (m, d, dv) = (fm.feature_dim(), shape.dim, shape.value_dim);
    let block = opts.block()?;
    check::room("scratch", scratch, causal_prefix_scratch_len(m, dv, block)?)?;
    let mut buf = &mut scratch[..];
    let mut state = PrefixState::new(m, dv, take(&mut buf, state_len(m, dv)?))?;
    let qf = take(&mut buf, block * m);
    let kf = take(&mut buf, block * m);
    let ql = take(&mut buf, block);
    let kl = take(&mut buf, block);
    let remap = take(&mut buf, 2 * m);

    for start in (0..shape.keys).step_by(block) {
        let rows = block.min(shape.keys - start);
        fm.map_rows(kernels, &q[start * d..(start + rows) * d], rows, qf, ql)?;
        fm.map_rows(kernels, &k[start * d..(start + rows) * d], rows, kf, kl)?;
        prepare_keys(kf, m, &mut kl[..rows], opts.key_mask, start);
        for t in 0..rows {
            let i = start + t;
            let (kft, qft) = (&mut kf[t * m..(t + 1) * m], &qf[t * m..(t + 1) * m]);
            let vi = &v[i * dv..(i + 1) * dv];
            let oi = &mut out[i * dv..(i + 1) * dv];
            let query = Queries {
                feats: qft,
                logs: &ql[t..=t],
                normalized: opts.normalized,
                remap: Remap::new(fm, &q[i * d..(i + 1) * d], &mut *remap),
            };
            state.step_row(kernels, kft, kl[t], vi, query, oi);
        }
    }
    Ok(())
}

/// Scratch elements one chunk of the chunked causal path needs, beyond the state:
/// Q' and K' panels (2·C·M), the chunk-local C×C score tile, 4·C row values, and two feature
/// rows for re-mapping a query whose denominator underflows (2·M).
pub(crate) fn chunk_scratch_len(features: usize, chunk: usize) -> Result<usize> {
    let c = check::nonzero("chunk", chunk)?;
    let panels = check::mul(check::mul(2, c)?, features)?;
    let rows = check::add(check::add(panels, check::mul(c, c)?)?, check::mul(4, c)?)?;
    check::add(rows, check::mul(2, features)?)
}

/// Scratch elements [`PlanKind::CausalChunked`] needs.
pub(crate) fn causal_chunked_scratch_len(
    features: usize,
    value_dim: usize,
    chunk: usize,
) -> Result<usize> {
    check::add(
        state_len(features, value_dim)?,
        chunk_scratch_len(features, chunk)?,
    )
}

/// Causal FAVOR+ in chunks of C = `opts.block` tokens, all GEMMs:
/// `out_c = [(Q'_c K'_cᵀ ∘ tril) V_c + Q'_c S] / [(Q'_c K'_cᵀ ∘ tril) 1 + Q'_c z]`, then
/// `S += K'_cᵀ V_c`.
///
/// Agrees with [`causal_prefix`] to rounding for every chunk size. Each query i in a chunk
/// is evaluated at the scale the token loop would use (the running max of key log-scales up
/// to i), so no later token — not even one in the same chunk — enters output i: with the
/// [`Scalar`](crate::Scalar) backend output i is bit-identical whatever tokens > i hold.
pub(crate) fn causal_chunked<T: Float, K: Kernels<T>, F: FeatureMap<T>>(
    plan: &Plan<'_, T, K, F>,
    q: &[T],
    k: &[T],
    v: &[T],
    out: &mut [T],
    scratch: &mut [T],
) -> Result<()> {
    let (_, fm, shape, opts) = plan.parts();
    let x = Qkv::new(q, k, v);
    shape.check_inputs(fm, x, out, opts.key_mask, 0)?;
    shape.check_causal()?;
    let (m, dv) = (fm.feature_dim(), shape.value_dim);
    let chunk = opts.block()?;
    check::room(
        "scratch",
        scratch,
        causal_chunked_scratch_len(m, dv, chunk)?,
    )?;
    let (state_buf, rest) = scratch.split_at_mut(state_len(m, dv)?);
    let mut state = PrefixState::new(m, dv, state_buf)?;
    chunked_into_state(plan, &mut state, x, out, rest)
}

/// The chunked causal recurrence of `plan` continuing from `state` (inputs already checked),
/// with [`chunk_scratch_len`] elements of `scratch`.
pub(crate) fn chunked_into_state<T: Float, K: Kernels<T>, F: FeatureMap<T>>(
    plan: &Plan<'_, T, K, F>,
    state: &mut PrefixState<'_, T>,
    Qkv { q, k, v }: Qkv<'_, T>,
    out: &mut [T],
    scratch: &mut [T],
) -> Result<()> {
    let (kernels, fm, shape, opts) = plan.parts();
    let (m, d, dv) = (fm.feature_dim(), shape.dim, shape.value_dim);
    let cmax = opts.block;
    let mut buf = scratch;
    let qf = take(&mut buf, cmax * m);
    let kf = take(&mut buf, cmax * m);
    let tile = take(&mut buf, cmax * cmax);
    let ql = take(&mut buf, cmax);
    let kl = take(&mut buf, cmax);
    let run = take(&mut buf, cmax);
    let den = take(&mut buf, cmax);
    let remap = take(&mut buf, 2 * m);
    // A stream's ring of recent keys goes into the total first; chunks never refill it.
    state.flush(kernels);

    for start in (0..shape.keys).step_by(cmax) {
        let c = cmax.min(shape.keys - start);
        let vc = &v[start * dv..(start + c) * dv];
        let oc = &mut out[start * dv..(start + c) * dv];
        fm.map_rows(kernels, &q[start * d..(start + c) * d], c, qf, ql)?;
        fm.map_rows(kernels, &k[start * d..(start + c) * d], c, kf, kl)?;
        prepare_keys(kf, m, &mut kl[..c], opts.key_mask, start);

        // run[i]: the scale the token loop would hold after token i.
        let mut r = state.log_scale();
        for i in 0..c {
            r = r.max(stabiliser(kl[i]));
            run[i] = r;
        }

        // Chunk-local scores, each key brought to its query's scale (≤ 1 factors). Only the
        // lower triangle is used, so the top-right quadrant is skipped (a quarter of the
        // tile's FLOPs): the left half of the columns for every row, then the right half for
        // the bottom rows. Split by columns, each key is packed for the GEMM once (split by
        // rows, the left half was packed twice, and the transposing pack costs about a third
        // as much as the arithmetic).
        let h = c / 2;
        {
            let (qm, km) = (MatRef::row_major(qf, c, m), MatRef::row_major(kf, c, m).t());
            let mut t = MatMut::new(tile, c, c, cmax);
            let left = km.block(0, 0, m, h);
            kernels.gemm(t.rb_mut().block(0, 0, c, h), Accum::Overwrite, qm, left);
            let (bottom, right) = (qm.block(h, 0, c - h, m), km.block(0, h, m, c - h));
            kernels.gemm(t.block(h, h, c - h, c - h), Accum::Overwrite, bottom, right);
        }
        for i in 0..c {
            let row = &mut tile[i * cmax..i * cmax + i + 1];
            if run[i] == T::neg_infinity() {
                row.fill(T::zero());
            } else {
                kernels.mul_exp(row, &kl[..=i], run[i]);
            }
            den[i] = row.iter().fold(T::zero(), |s, &a| s + a);
        }
        let (t, vm) = (MatRef::new(tile, c, c, cmax), MatRef::row_major(vc, c, dv));
        kernels.gemm_tril(MatMut::row_major(oc, c, dv), Accum::Overwrite, t, vm);

        // Contribution of everything before the chunk, at each query's scale, from the
        // total (one GEMM).
        if state.log_scale() != T::neg_infinity() {
            for i in 0..c {
                let f = rescale_factor(state.log_scale(), run[i]);
                kernels.scale(f, &mut qf[i * m..(i + 1) * m]);
            }
            let (qm, s) = (
                MatRef::row_major(qf, c, m),
                MatRef::row_major(state.s(), m, dv),
            );
            kernels.gemm(MatMut::row_major(oc, c, dv), Accum::Add, qm, s);
            for i in 0..c {
                den[i] = den[i] + kernels.dot(&qf[i * m..(i + 1) * m], state.z());
            }
        }

        for i in 0..c {
            let o = &mut oc[i * dv..(i + 1) * dv];
            if opts.normalized {
                if underflowed(den[i]) {
                    let row = ChunkRow {
                        x: &q[(start + i) * d..(start + i + 1) * d],
                        keys: &kf[..(i + 1) * m],
                        logs: &kl[..=i],
                        values: vc,
                        run: run[i],
                    };
                    if let Some(d2) = requery_chunk_row(kernels, fm, state, &row, remap, o) {
                        den[i] = d2;
                    }
                }
                kernels.scale(T::one() / guard(den[i]), o);
            } else if run[i] == T::neg_infinity() {
                o.fill(T::zero());
            } else {
                scale_by_exp(kernels, o, ql[i] + run[i]);
            }
        }
        state.push_rows(kernels, kf, kl, vc, c);
        state.settle(kernels);
    }
    Ok(())
}

/// One query row of a chunk, for [`requery_chunk_row`]: its input row, the chunk's key feature
/// rows up to it with their log-scales, the chunk's values, and the row's scale.
struct ChunkRow<'a, T> {
    x: &'a [T],
    keys: &'a [T],
    logs: &'a [T],
    values: &'a [T],
    run: T,
}

/// Answers a chunk's query row again with its features re-mapped
/// ([`FeatureMap::remap_row`]) against what it sees: the state's z brought to the row's scale
/// plus the chunk's keys up to it. Returns the new denominator, `None` if the map cannot
/// re-map (then `out` is untouched).
fn requery_chunk_row<T: Float, K: Kernels<T>, F: FeatureMap<T>>(
    kernels: &K,
    fm: &F,
    state: &PrefixState<'_, T>,
    row: &ChunkRow<'_, T>,
    scratch: &mut [T],
    out: &mut [T],
) -> Option<T> {
    let (m, dv) = (state.features(), state.value_dim());
    let (w, f) = scratch.split_at_mut(m);
    let before = state.log_scale() != T::neg_infinity();
    let f_state = if before {
        rescale_factor(state.log_scale(), row.run)
    } else {
        T::zero()
    };
    w.fill(T::zero());
    if before {
        kernels.axpy(f_state, state.z(), w);
    }
    for (kj, &lj) in row.keys.chunks_exact(m).zip(row.logs) {
        kernels.axpy((lj - row.run).libm_exp(), kj, w);
    }
    if !fm.remap_row(kernels, row.x, w, &mut f[..m]) {
        return None;
    }
    let f = &mut f[..m];
    let den = kernels.dot(f, w);
    // The chunk's keys, then the state's at the row's scale: f is scaled before the GEMM (as
    // the main path scales Q'), so no term exceeds |v| on the way.
    let o = &mut out[..dv];
    o.fill(T::zero());
    for ((kj, &lj), vj) in row
        .keys
        .chunks_exact(m)
        .zip(row.logs)
        .zip(row.values.chunks_exact(dv))
    {
        let score = kernels.dot(f, kj) * (lj - row.run).libm_exp();
        kernels.axpy(score, vj, o);
    }
    if before {
        kernels.scale(f_state, f);
        let (fm, s) = (
            MatRef::row_major(f, 1, m),
            MatRef::row_major(state.s(), m, dv),
        );
        kernels.gemm(MatMut::row_major(o, 1, dv), Accum::Add, fm, s);
    }
    Some(den)
}

/// Which FAVOR+ path a [`Plan`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanKind {
    /// Every query sees every key: `out = Q'(K'ᵀV) / Q'(K'ᵀ1)` in O((Lq + Lk)·M·(d + dv))
    /// time and scratch independent of L.
    Bidirectional,
    /// Causal, as the token-by-token prefix loop: output i depends on tokens ≤ i only, bit for
    /// bit.
    CausalPrefix,
    /// Causal, `opts.block` tokens at a time, all GEMMs; agrees with
    /// [`CausalPrefix`](Self::CausalPrefix) to rounding, and no later token enters an
    /// output.
    CausalChunked,
}

/// One head's attention call planned ahead: the path, the backend, the feature map, the
/// shape and the options, with every dimension checked and the scratch sized when the plan
/// is made. [`run`](Self::run) then needs only the data; it checks the slices' lengths and
/// the inputs' range, as the free functions do.
///
/// ```
/// use favor_core::*;
/// let (l, d, m) = (16, 8, 32);
/// let mut w = vec![0f32; m * d];
/// projection(ProjectionKind::default(), 2, m, d, &mut w).unwrap();
/// let phi = PositiveSoftmax::new(&w, m, d).unwrap();
/// let shape = Shape::new(l, d, d);
/// let plan = Plan::new(PlanKind::CausalChunked, Scalar, &phi, shape, Options::default()).unwrap();
/// let mut scratch = vec![0f32; plan.scratch_len()];
/// let x: Vec<f32> = (0..l * d).map(|i| (i as f32 * 0.37).sin() / 2.0).collect();
/// let mut out = vec![0f32; l * d];
/// plan.run(&x, &x, &x, &mut out, &mut scratch).unwrap();
/// // Causal: the first output is the first value.
/// assert!(out[..d].iter().zip(&x[..d]).all(|(o, v)| (o - v).abs() < 1e-5));
/// // A causal plan needs as many queries as keys.
/// let cross = Shape { queries: 3, ..shape };
/// assert!(Plan::new(PlanKind::CausalChunked, Scalar, &phi, cross, Options::default()).is_err());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Plan<'p, T, K, F> {
    path: PlanKind,
    kernels: K,
    fm: &'p F,
    shape: Shape,
    opts: Options<'p>,
    hybrid: Option<HybridShape>,
    scratch_len: usize,
    part_scratch_len: usize,
    _float: PhantomData<fn() -> T>,
}

impl<'p, T: Float, K: Kernels<T>, F: FeatureMap<T>> Plan<'p, T, K, F> {
    /// Plans `path` for `shape` with feature map `fm` on `kernels`. Errors if a dimension is
    /// zero, `shape.dim` is not the map's input dimension, a causal path has
    /// `queries != keys`, the key mask is not `keys` long, or the scratch size overflows.
    pub fn new(
        path: PlanKind,
        kernels: K,
        fm: &'p F,
        shape: Shape,
        opts: Options<'p>,
    ) -> Result<Self> {
        check::nonzero("queries", shape.queries)?;
        check::nonzero("keys", shape.keys)?;
        check::nonzero("dim", shape.dim)?;
        check::nonzero("value_dim", shape.value_dim)?;
        check::same_dim(
            "feature map input dim vs shape.dim",
            fm.input_dim(),
            shape.dim,
        )?;
        if path != PlanKind::Bidirectional {
            check::same_dim(
                "causal attention needs queries == keys",
                shape.keys,
                shape.queries,
            )?;
        }
        if let Some(mask) = opts.key_mask {
            check::exact("key_mask", mask, shape.keys)?;
        }
        let block = opts.block()?;
        let (m, dv) = (fm.feature_dim(), shape.value_dim);
        let scratch_len = match path {
            PlanKind::Bidirectional => bidirectional_scratch_len(m, dv, block)?,
            PlanKind::CausalPrefix => causal_prefix_scratch_len(m, dv, block)?,
            PlanKind::CausalChunked => causal_chunked_scratch_len(m, dv, block)?,
        };
        // Part of `scratch_len` (one state less), so it cannot overflow.
        let part_scratch_len = match path {
            PlanKind::CausalChunked => chunk_scratch_len(m, block)?,
            _ => part_scratch_len(m, block),
        };
        Ok(Self {
            path,
            kernels,
            fm,
            shape,
            opts,
            hybrid: None,
            scratch_len,
            part_scratch_len,
            _float: PhantomData,
        })
    }

    /// This plan as hybrid attention ([`HybridShape`]): each query weighs its exact set — the
    /// first `sinks` positions and its window (bidirectional: `|i − j| ≤ w`; causal:
    /// `i − w ≤ j ≤ i`) — by `exp(τ qᵢ·kⱼ)`, every other visible key by `φ(qᵢ)·φ(kⱼ)`, under
    /// one normaliser. A window covering the sequence is exact softmax attention.
    ///
    /// Errors unless the map estimates softmax, the output is normalised, queries and keys
    /// are the same tokens (`queries == keys`, for every kind), and the kind is
    /// [`Bidirectional`](PlanKind::Bidirectional) or [`CausalChunked`](PlanKind::CausalChunked)
    /// (token by token, use [`HybridStream`](crate::HybridStream)). Inputs must also keep
    /// every exact logit finite: entries at most `√(MAX/(4|τ|·d))`.
    ///
    /// ```
    /// use favor_core::*;
    /// let (l, d, m) = (24, 4, 16);
    /// let mut w = vec![0f64; m * d];
    /// projection(ProjectionKind::default(), 5, m, d, &mut w).unwrap();
    /// let phi = PositiveSoftmax::new(&w, m, d).unwrap();
    /// let x: Vec<f64> = (0..l * d).map(|i| (i as f64 * 0.37).sin()).collect();
    /// let shape = Shape::new(l, d, d);
    /// // A window covering the sequence: exact softmax attention.
    /// let hybrid = HybridShape { window: l, sinks: 1 };
    /// let plan = Plan::new(PlanKind::CausalChunked, Scalar, &phi, shape, Options::default())
    ///     .and_then(|p| p.with_hybrid(hybrid))
    ///     .unwrap();
    /// let mut scratch = vec![0f64; plan.scratch_len()];
    /// let mut out = vec![0f64; l * d];
    /// plan.run(&x, &x, &x, &mut out, &mut scratch).unwrap();
    /// let exact_opts = ExactOptions { causal: true, ..Default::default() };
    /// let mut exact = vec![0f64; l * d];
    /// softmax_attention(&Scalar, &x, &x, &x, shape, &exact_opts, &mut exact).unwrap();
    /// assert!(out.iter().zip(&exact).all(|(a, b)| (a - b).abs() < 1e-12));
    /// ```
    pub fn with_hybrid(mut self, hybrid: HybridShape) -> Result<Self> {
        crate::hybrid::temperature(self.fm)?;
        if !self.opts.normalized {
            return Err(crate::Error::InvalidParameter {
                what: "hybrid attention is always normalised (Options::normalized)",
            });
        }
        check::same_dim(
            "hybrid attention needs queries == keys",
            self.shape.keys,
            self.shape.queries,
        )?;
        let (m, dv, block) = (self.fm.feature_dim(), self.shape.value_dim, self.opts.block);
        self.scratch_len = match self.path {
            PlanKind::Bidirectional => {
                crate::hybrid::bidirectional_scratch_len(m, dv, block, hybrid)?
            }
            PlanKind::CausalChunked => {
                crate::hybrid::causal_chunked_scratch_len(m, dv, block, hybrid)?
            }
            PlanKind::CausalPrefix => {
                return Err(crate::Error::InvalidParameter {
                    what: "hybrid attention token by token is HybridStream; plan CausalChunked",
                });
            }
        };
        self.hybrid = Some(hybrid);
        Ok(self)
    }

    /// The hybrid shape, for a plan made with [`with_hybrid`](Self::with_hybrid).
    pub fn hybrid(&self) -> Option<HybridShape> {
        self.hybrid
    }

    /// Elements of scratch [`run`](Self::run) needs.
    pub fn scratch_len(&self) -> usize {
        self.scratch_len
    }

    /// The planned shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The planned kind.
    pub fn kind(&self) -> PlanKind {
        self.path
    }

    /// The feature map's dimension M: a [`PrefixState`] for
    /// [`absorb_keys`](Self::absorb_keys) holds `state_len(M, dv)` elements.
    pub fn feature_dim(&self) -> usize {
        self.fm.feature_dim()
    }

    /// Elements of scratch [`absorb_keys`](Self::absorb_keys),
    /// [`answer_queries`](Self::answer_queries) and [`causal_part`](Self::causal_part) need
    /// (the state's buffer apart): `block·(M + 1) + 2·M`, or a causal chunk's scratch for a
    /// [`CausalChunked`](PlanKind::CausalChunked) plan.
    pub fn part_scratch_len(&self) -> usize {
        self.part_scratch_len
    }

    /// Adds keys `keys` of `k` (keys×d) and `v` (keys×dv), the whole head's rows, to `state`:
    /// one part of a head split over threads. Bidirectional attention over `P` parts is then
    /// `P` states filled by `absorb_keys` (in parallel), [merged](PrefixState::merge) into one,
    /// and [`answer_queries`](Self::answer_queries) on any split of the queries (in parallel):
    /// equal to [`run`](Self::run) up to the rounding of the merges (each adds about one unit
    /// of roundoff relative to the sums). Split at multiples of the plan's block, the blocks
    /// are the same as `run`'s. The key mask, when planned, is read at the keys' own
    /// positions.
    ///
    /// Errors for a hybrid plan (its exact window needs the keys around each query), for
    /// `keys` outside `0..shape.keys`, a state of other dimensions, and as `run` does for
    /// lengths and for the range of the rows it reads. Queries and keys are checked in
    /// separate calls, so the bound their product obeys ([`check_range`](crate::check_range),
    /// crate docs) is the caller's to check once with the whole head's maxima before
    /// splitting.
    ///
    /// ```
    /// use favor_core::*;
    /// let (l, d, m) = (40, 4, 16);
    /// let mut w = vec![0f64; m * d];
    /// projection(ProjectionKind::default(), 3, m, d, &mut w).unwrap();
    /// let phi = PositiveSoftmax::new(&w, m, d).unwrap();
    /// let x: Vec<f64> = (0..l * d).map(|i| (i as f64 * 0.37).sin()).collect();
    /// let opts = Options { block: 8, ..Options::default() };
    /// let plan = Plan::new(PlanKind::Bidirectional, Scalar, &phi, Shape::new(l, d, d), opts).unwrap();
    ///
    /// // Two parts of the keys, each in a state of its own (as two threads would), merged.
    /// let (mut a, mut b) = (vec![0f64; state_len(m, d).unwrap()], vec![0f64; state_len(m, d).unwrap()]);
    /// let mut sa = PrefixState::new(m, d, &mut a).unwrap();
    /// let mut sb = PrefixState::new(m, d, &mut b).unwrap();
    /// let mut scratch = vec![0f64; plan.part_scratch_len()];
    /// plan.absorb_keys(0..24, &x, &x, &mut sa, &mut scratch).unwrap();
    /// plan.absorb_keys(24..l, &x, &x, &mut sb, &mut scratch).unwrap();
    /// sa.merge(&Scalar, &mut sb).unwrap();
    /// // The queries in two parts, each into its own rows of the output.
    /// let mut out = vec![0f64; l * d];
    /// let (top, bottom) = out.split_at_mut(16 * d);
    /// plan.answer_queries(0..16, &x, &sa, top, &mut scratch).unwrap();
    /// plan.answer_queries(16..l, &x, &sa, bottom, &mut scratch).unwrap();
    ///
    /// let mut whole = vec![0f64; l * d];
    /// let mut big = vec![0f64; plan.scratch_len()];
    /// plan.run(&x, &x, &x, &mut whole, &mut big).unwrap();
    /// assert!(out.iter().zip(&whole).all(|(a, b)| (a - b).abs() < 1e-13));
    /// ```
    pub fn absorb_keys(
        &self,
        keys: Range<usize>,
        k: &[T],
        v: &[T],
        state: &mut PrefixState<'_, T>,
        scratch: &mut [T],
    ) -> Result<()> {
        let (d, dv) = (self.shape.dim, self.shape.value_dim);
        self.check_part(None, keys.clone(), self.shape.keys, state, scratch)?;
        check::exact("k", k, self.shape.keys * d)?;
        check::exact("v", v, self.shape.keys * dv)?;
        let (k_rows, v_rows) = (
            &k[keys.start * d..keys.end * d],
            &v[keys.start * dv..keys.end * dv],
        );
        let total = self.shape.keys as u64;
        range::inputs(self.fm, Qkv::new(&[], k_rows, v_rows), (d, dv), total)
            .map_err(|e| offset_row(e, keys.start))?;
        absorb_rows(self, state, k, v, keys, scratch)
    }

    /// Answers queries `queries` of `q` (queries×d, the whole head's rows) from `state` (every
    /// key [absorbed](Self::absorb_keys)) into `out`, which holds those rows only
    /// (`queries.len() × dv`): the second half of a bidirectional head split over threads.
    /// Each query row is computed as [`run`](Self::run) computes it from the same state.
    ///
    /// Errors for a causal or hybrid plan, for `queries` outside `0..shape.queries`, a state
    /// of other dimensions, and as `run` does for lengths and for the range of the rows it
    /// reads (see [`absorb_keys`](Self::absorb_keys) for the bound that joins queries and
    /// keys).
    pub fn answer_queries(
        &self,
        queries: Range<usize>,
        q: &[T],
        state: &PrefixState<'_, T>,
        out: &mut [T],
        scratch: &mut [T],
    ) -> Result<()> {
        let kind = (
            PlanKind::Bidirectional,
            "answer_queries needs a bidirectional plan (causal queries see a prefix)",
        );
        let (d, dv) = (self.shape.dim, self.shape.value_dim);
        self.check_part(
            Some(kind),
            queries.clone(),
            self.shape.queries,
            state,
            scratch,
        )?;
        check::exact("q", q, self.shape.queries * d)?;
        check::room("out", out, check::mul(queries.len(), dv)?)?;
        let q_rows = &q[queries.start * d..queries.end * d];
        let keys = self.shape.keys as u64;
        range::inputs(self.fm, Qkv::new(q_rows, &[], &[]), (d, dv), keys)
            .map_err(|e| offset_row(e, queries.start))?;
        answer_rows(self, state, q, queries, out, scratch)
    }

    /// Causal attention for the tokens `rows` of `q`, `k` (tokens×d) and `v` (tokens×dv), the
    /// whole head's rows, into `out` (their rows only, `rows.len() × dv`), continuing from
    /// `state`, which must hold exactly the keys before `rows.start` (absorbed with
    /// [`absorb_keys`](Self::absorb_keys) and [merged](PrefixState::merge), or left by the
    /// previous part); on return it holds the keys up to `rows.end`. A causal head split over
    /// threads: the keys of every part but the last absorbed into states of their own (in
    /// parallel), merged in order into each part's starting state, then `causal_part` on
    /// every part (in parallel). Equal to [`run`](Self::run) up to the rounding of the merges;
    /// output i still depends on tokens ≤ i only.
    ///
    /// Errors for a plan other than [`CausalChunked`](PlanKind::CausalChunked), a hybrid
    /// plan, `rows` outside the plan, a state of other dimensions or holding more keys than
    /// precede `rows` (a count only: masked keys are not counted, so a wrong state with as
    /// many keys or fewer is not detected), and as `run` does for lengths and the range of the rows it reads (the
    /// bound joining all parts is the caller's to check once, as for `absorb_keys`).
    ///
    /// ```
    /// use favor_core::*;
    /// let (l, d, m) = (40, 4, 16);
    /// let mut w = vec![0f64; m * d];
    /// projection(ProjectionKind::default(), 3, m, d, &mut w).unwrap();
    /// let phi = PositiveSoftmax::new(&w, m, d).unwrap();
    /// let x: Vec<f64> = (0..l * d).map(|i| (i as f64 * 0.37).sin()).collect();
    /// let opts = Options { block: 8, ..Options::default() };
    /// let plan = Plan::new(PlanKind::CausalChunked, Scalar, &phi, Shape::new(l, d, d), opts).unwrap();
    /// let n = state_len(m, d).unwrap();
    /// let mut scratch = vec![0f64; plan.part_scratch_len()];
    ///
    /// // Part 2 (tokens 24..40) starts from the keys of part 1 (tokens 0..24), absorbed apart.
    /// let (mut a, mut b) = (vec![0f64; n], vec![0f64; n]);
    /// let mut before = PrefixState::new(m, d, &mut a).unwrap();
    /// plan.absorb_keys(0..24, &x, &x, &mut before, &mut scratch).unwrap();
    /// let mut start = PrefixState::new(m, d, &mut b).unwrap();
    /// let mut out = vec![0f64; l * d];
    /// let (first, second) = out.split_at_mut(24 * d);
    /// plan.causal_part(24..l, &x, &x, &x, &mut before, second, &mut scratch).unwrap();
    /// plan.causal_part(0..24, &x, &x, &x, &mut start, first, &mut scratch).unwrap();
    ///
    /// let mut whole = vec![0f64; l * d];
    /// let mut big = vec![0f64; plan.scratch_len()];
    /// plan.run(&x, &x, &x, &mut whole, &mut big).unwrap();
    /// assert!(out.iter().zip(&whole).all(|(a, b)| (a - b).abs() < 1e-13));
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn causal_part(
        &self,
        rows: Range<usize>,
        q: &[T],
        k: &[T],
        v: &[T],
        state: &mut PrefixState<'_, T>,
        out: &mut [T],
        scratch: &mut [T],
    ) -> Result<()> {
        let kind = (
            PlanKind::CausalChunked,
            "causal_part needs a CausalChunked plan",
        );
        let (d, dv) = (self.shape.dim, self.shape.value_dim);
        self.check_part(Some(kind), rows.clone(), self.shape.keys, state, scratch)?;
        if state.tokens() > rows.start as u64 {
            return Err(crate::Error::InvalidParameter {
                what: "causal_part's state holds more keys than precede its rows",
            });
        }
        check::exact("q", q, self.shape.queries * d)?;
        check::exact("k", k, self.shape.keys * d)?;
        check::exact("v", v, self.shape.keys * dv)?;
        check::room("out", out, check::mul(rows.len(), dv)?)?;
        if rows.is_empty() {
            return Ok(());
        }
        let (a, b) = (rows.start, rows.end);
        let x = Qkv::new(&q[a * d..b * d], &k[a * d..b * d], &v[a * dv..b * dv]);
        let total = self.shape.keys as u64;
        range::inputs(self.fm, x, (d, dv), total).map_err(|e| offset_row(e, a))?;
        let part = Plan {
            shape: Shape::new(b - a, d, dv),
            opts: Options {
                key_mask: self.opts.key_mask.map(|mask| &mask[a..b]),
                ..self.opts
            },
            ..*self
        };
        chunked_into_state(&part, state, x, out, scratch)
    }

    /// What the parts API checks alike: the plan's kind when `kind` names one (with the error
    /// text), no hybrid, `rows` within `0..len`, the state's dimensions, the scratch.
    fn check_part(
        &self,
        kind: Option<(PlanKind, &'static str)>,
        rows: Range<usize>,
        len: usize,
        state: &PrefixState<'_, T>,
        scratch: &[T],
    ) -> Result<()> {
        if let Some((path, what)) = kind
            && self.path != path
        {
            return Err(crate::Error::InvalidParameter { what });
        }
        if self.hybrid.is_some() {
            return Err(crate::Error::InvalidParameter {
                what: "a hybrid plan does not split: its window needs the rows around each query",
            });
        }
        if rows.start > rows.end || rows.end > len {
            return Err(crate::Error::InvalidParameter {
                what: "part rows must be a range within the plan's rows",
            });
        }
        check::same_dim("state features", self.fm.feature_dim(), state.features())?;
        check::same_dim("state value_dim", self.shape.value_dim, state.value_dim())?;
        check::room("scratch", scratch, self.part_scratch_len())
    }

    /// Attention of `q` (queries×d) over `k` (keys×d) and `v` (keys×dv) into `out`
    /// (queries×dv), with at least [`scratch_len`](Self::scratch_len) elements of `scratch`,
    /// whose contents on entry do not matter (it is written before it is read: one buffer
    /// can serve call after call, uncleared).
    /// Checks the slices' lengths and the inputs' supported range (crate docs) before it
    /// writes anything.
    pub fn run(&self, q: &[T], k: &[T], v: &[T], out: &mut [T], scratch: &mut [T]) -> Result<()> {
        if let Some(h) = self.hybrid {
            return match self.path {
                PlanKind::Bidirectional => {
                    crate::hybrid::bidirectional(self, h, Qkv::new(q, k, v), out, scratch)
                }
                _ => crate::hybrid::causal_chunked(self, h, Qkv::new(q, k, v), out, scratch),
            };
        }
        match self.path {
            PlanKind::Bidirectional => bidirectional(self, q, k, v, out, scratch),
            PlanKind::CausalPrefix => causal_prefix(self, q, k, v, out, scratch),
            PlanKind::CausalChunked => causal_chunked(self, q, k, v, out, scratch),
        }
    }

    /// What the paths read: the backend, the map, the shape and the options.
    pub(crate) fn parts(&self) -> (&K, &'p F, Shape, &Options<'p>) {
        (&self.kernels, self.fm, self.shape, &self.opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    const M: usize = 8;
    const DV: usize = 3;

    /// The sizing functions behind [`Plan::new`] and
    /// [`Stream::prefill_scratch_len`](crate::Stream::prefill_scratch_len), no longer public:
    /// their errors, as tests/errors.rs asserted them before. `Plan::new` refuses a zero block itself (as "block"), so the chunked path's
    /// "chunk" error is reachable only here; the rest is asserted through the public API in
    /// tests/errors.rs as well.
    #[test]
    fn sizing_reports_zero_dimensions_and_overflow() {
        let zd = |what| Err(Error::ZeroDimension { what });
        assert_eq!(bidirectional_scratch_len(M, DV, 0), zd("block"));
        assert_eq!(causal_prefix_scratch_len(M, DV, 0), zd("block"));
        assert_eq!(causal_chunked_scratch_len(M, DV, 0), zd("chunk"));
        assert_eq!(chunk_scratch_len(M, 0), zd("chunk"));

        let of = Err(Error::SizeOverflow);
        assert_eq!(bidirectional_scratch_len(usize::MAX, 1, 1), of);
        assert_eq!(causal_prefix_scratch_len(M, DV, usize::MAX / 4), of);
        assert_eq!(chunk_scratch_len(1, usize::MAX / 2 + 1), of);
        assert_eq!(causal_chunked_scratch_len(M, usize::MAX / 4, 1), of);
    }
}
