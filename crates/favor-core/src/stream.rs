//! Token-by-token causal decoding over a constant-size state, with byte snapshots.

use crate::attention::{
    Options, Plan, PlanKind, Shape, chunk_scratch_len, chunked_into_state, prepare_keys,
};
use crate::error::{Result, check};
use crate::inputs::Qkv;
use crate::state::{PrefixState, Queries, Remap, state_len};
use crate::{FeatureMap, Float, Kernels};
use crate::{range, snapshot};

/// A causal attention stream: the prefix state `(S, z, c)` of one head plus the feature map,
/// for decoding one token at a time in O(M·(d + dv)) per token and O(M·dv) memory, however
/// many tokens came before.
///
/// All memory comes from one caller buffer of [`Stream::buffer_len`] elements.
///
/// ```
/// use favor_core::*;
/// let (d, m) = (4, 8);
/// let mut w = [0f32; 32];
/// projection(ProjectionKind::default(), 3, m, d, &mut w).unwrap();
/// let phi = PositiveSoftmax::new(&w, m, d).unwrap();
/// let mut buf = [0f32; 320];
/// assert!(Stream::<f32, _, Scalar>::buffer_len(&phi, d).unwrap() <= buf.len());
/// let mut stream = Stream::new(Scalar, &phi, d, &mut buf).unwrap();
/// let mut out = [0f32; 4];
/// stream.step(&[0.1, 0.2, 0.3, 0.4], &[0.4, 0.3, 0.2, 0.1], &[1.0, 2.0, 3.0, 4.0], &mut out).unwrap();
/// // With a single token, attention returns its value.
/// assert!((out[2] - 3.0).abs() < 1e-5);
/// ```
#[derive(Debug)]
pub struct Stream<'a, T: Float, F: FeatureMap<T>, K: Kernels<T>> {
    kernels: K,
    fm: &'a F,
    state: PrefixState<'a, T>,
    /// Four feature rows: a step maps its key and query in one pass over W (the first two);
    /// the other two are the scratch of a re-mapped query.
    feats: &'a mut [T],
    /// The step's key and query, side by side, so they project as one 2-row GEMM.
    rows: &'a mut [T],
    log: [T; 2],
}

impl<'a, T: Float, F: FeatureMap<T>, K: Kernels<T>> Stream<'a, T, F, K> {
    /// Elements the stream's buffer needs: the state ([`state_len`](crate::state_len): the
    /// sums and their compensation, `2·(M·dv + M)`, and the ring of recent keys,
    /// `RING·(M + dv) + 1`) plus four feature rows (`4·M`: a step's key and query, and two for
    /// re-mapping a query whose denominator underflows) and two input rows (`2·d`).
    pub fn buffer_len(fm: &F, value_dim: usize) -> Result<usize> {
        let extra = check::add(
            check::mul(4, fm.feature_dim())?,
            check::mul(2, fm.input_dim())?,
        )?;
        check::add(state_len(fm.feature_dim(), value_dim)?, extra)
    }

    /// An empty stream for values of dimension `value_dim`.
    pub fn new(kernels: K, fm: &'a F, value_dim: usize, buf: &'a mut [T]) -> Result<Self> {
        let mut s = Self::resume(kernels, fm, value_dim, buf, 0, T::neg_infinity())?;
        s.reset();
        Ok(s)
    }

    /// Re-attaches to `buf` as left by an earlier stream over the same map and `value_dim`,
    /// continuing from that stream's [`tokens`](Self::tokens) and
    /// [`state().log_scale()`](PrefixState::log_scale). Nothing in `buf` is cleared.
    ///
    /// This lets an owner keep a stream's memory between calls without keeping the borrow
    /// alive; [`StreamMemory`](crate::StreamMemory) does it with the count and scale kept
    /// beside the buffer for you. Only the O(1) invariants are checked (`tokens == 0` exactly when `log_scale` is
    /// `-∞`, otherwise a finite scale): the buffer itself is trusted to be what a stream over
    /// the same map and `value_dim` left there — a different buffer gives wrong (if memory-safe)
    /// results. For bytes from elsewhere use [`restore`](Self::restore), which validates them.
    ///
    /// ```
    /// use favor_core::*;
    /// let (d, m) = (2, 4);
    /// let mut w = [0f64; 8];
    /// projection(ProjectionKind::default(), 1, m, d, &mut w).unwrap();
    /// let phi = PositiveSoftmax::new(&w, m, d).unwrap();
    /// let mut buf = vec![0f64; Stream::<f64, _, Scalar>::buffer_len(&phi, d).unwrap()];
    /// let (tokens, log_scale) = {
    ///     let mut s = Stream::new(Scalar, &phi, d, &mut buf).unwrap();
    ///     s.push(&[0.1, 0.2], &[1.0, 2.0]).unwrap();
    ///     (s.tokens(), s.state().log_scale())
    /// };
    /// let mut s = Stream::resume(Scalar, &phi, d, &mut buf, tokens, log_scale).unwrap();
    /// let mut out = [0.0; 2];
    /// s.query(&[0.3, 0.1], &mut out).unwrap();
    /// assert!((out[1] - 2.0).abs() < 1e-12); // one token seen: attention returns its value
    /// ```
    pub fn resume(
        kernels: K,
        fm: &'a F,
        value_dim: usize,
        buf: &'a mut [T],
        tokens: u64,
        log_scale: T,
    ) -> Result<Self> {
        let m = fm.feature_dim();
        check::room("stream buffer", buf, Self::buffer_len(fm, value_dim)?)?;
        let (st, rest) = buf.split_at_mut(state_len(m, value_dim)?);
        let (feats, rest) = rest.split_at_mut(4 * m);
        Ok(Self {
            kernels,
            fm,
            state: PrefixState::attach(m, value_dim, st, tokens, log_scale)?,
            feats,
            rows: &mut rest[..2 * fm.input_dim()],
            log: [T::zero(); 2],
        })
    }

    /// Tokens pushed so far.
    pub fn tokens(&self) -> u64 {
        self.state.tokens()
    }

    /// Keys the state will have summed after `n` more: what the range check bounds.
    fn next_keys(&self, n: u64) -> u64 {
        self.state.tokens().saturating_add(n)
    }

    /// The underlying prefix state.
    pub fn state(&self) -> &PrefixState<'a, T> {
        &self.state
    }

    /// Forgets all tokens.
    pub fn reset(&mut self) {
        self.state.reset();
    }

    /// Absorbs one key/value pair. A non-finite `k` or `v` is rejected and leaves the state
    /// unchanged.
    pub fn push(&mut self, k: &[T], v: &[T]) -> Result<()> {
        let (d, dv) = (self.fm.input_dim(), self.state.value_dim());
        check::exact("k", k, d)?;
        check::exact("v", v, dv)?;
        let ak = range::rows(self.fm, "k", k, d)?;
        range::sums(self.fm, ak, ak, v, dv, self.next_keys(1))?;
        self.fm
            .map_rows(&self.kernels, k, 1, self.feats, &mut self.log)?;
        prepare_keys(
            self.feats,
            self.fm.feature_dim(),
            &mut self.log[..1],
            None,
            0,
        );
        let m = self.fm.feature_dim();
        self.state
            .push_row(&self.kernels, &self.feats[..m], self.log[0], v);
        Ok(())
    }

    /// Attention output for query `q` over every token pushed so far (zeros before the first
    /// push). Does not change the state.
    pub fn query(&mut self, q: &[T], out: &mut [T]) -> Result<()> {
        let (d, dv) = (self.fm.input_dim(), self.state.value_dim());
        check::exact("q", q, d)?;
        check::room("out", out, dv)?;
        let aq = range::rows(self.fm, "q", q, d)?;
        range::sums(self.fm, aq, aq, &[], dv, self.tokens())?;
        let (f, scratch) = self.feats.split_at_mut(2 * self.fm.feature_dim());
        self.fm.map_rows(&self.kernels, q, 1, f, &mut self.log)?;
        let query = Queries {
            feats: f,
            logs: &self.log[..1],
            normalized: true,
            remap: Remap::new(self.fm, q, scratch),
        };
        self.state.query_rows(&self.kernels, query, out, dv);
        Ok(())
    }

    /// One decoding step: `push(k, v)` then `query(q, out)`, as in causal attention where a
    /// token attends to itself.
    /// Same results as the two calls (bit for bit with [`Scalar`](crate::Scalar)); faster,
    /// because the key and the query are projected in one pass over W (decoding is
    /// memory-bound).
    pub fn step(&mut self, q: &[T], k: &[T], v: &[T], out: &mut [T]) -> Result<()> {
        let (d, m, dv) = (
            self.fm.input_dim(),
            self.fm.feature_dim(),
            self.state.value_dim(),
        );
        check::exact("q", q, d)?;
        check::exact("k", k, d)?;
        check::exact("v", v, dv)?;
        check::room("out", out, dv)?;
        range::inputs(self.fm, Qkv::new(q, k, v), (d, dv), self.next_keys(1))?;
        let (pair, scratch) = self.feats.split_at_mut(2 * m);
        let buffers = PairBuffers {
            rows: self.rows,
            feats: pair,
            logs: &mut self.log,
        };
        map_pairs(&self.kernels, self.fm, 1, q, k, buffers)?;
        let (kf, qf) = pair.split_at(m);
        let query = Queries {
            feats: qf,
            logs: &self.log[1..2],
            normalized: true,
            remap: Remap::new(self.fm, q, scratch),
        };
        let lk = self.log[0];
        self.state.step_row(&self.kernels, kf, lk, v, query, out);
        Ok(())
    }

    /// One decoding step with token `i` of `mapped`, whose key and query were mapped together
    /// with the other streams' (see [`MappedTokens`]), and value `v`. The same as
    /// [`step`](Self::step) with that token's q and k up to rounding (bit for bit with
    /// [`Scalar`](crate::Scalar)).
    ///
    /// `mapped` must come from this stream's feature map (the same reference, or one with the
    /// same [`fingerprint`](FeatureMap::fingerprint)). A non-finite `v` is rejected and leaves
    /// the state unchanged.
    pub fn step_mapped(
        &mut self,
        mapped: &MappedTokens<'_, '_, T, F>,
        i: usize,
        v: &[T],
        out: &mut [T],
    ) -> Result<()> {
        let (m, dv) = (self.fm.feature_dim(), self.state.value_dim());
        if !(core::ptr::eq(self.fm, mapped.fm) || self.fm.fingerprint() == mapped.fm.fingerprint())
        {
            return Err(crate::Error::InvalidParameter {
                what: "mapped tokens come from another feature map",
            });
        }
        if i >= mapped.n {
            return Err(crate::Error::InvalidParameter {
                what: "mapped token index out of range",
            });
        }
        check::exact("v", v, dv)?;
        check::room("out", out, dv)?;
        // The token's own largest entries, as `step` would see them (checked finite and
        // within range when it was mapped).
        let d = self.fm.input_dim();
        let ak = check::max_abs("k", &mapped.rows[2 * i * d..(2 * i + 1) * d], d)?;
        let aq = check::max_abs("q", &mapped.rows[(2 * i + 1) * d..(2 * i + 2) * d], d)?;
        range::sums(self.fm, aq, ak, v, dv, self.next_keys(1))?;
        let kf = &mapped.feats[2 * i * m..(2 * i + 1) * m];
        let qf = &mapped.feats[(2 * i + 1) * m..2 * (i + 1) * m];
        let q = &mapped.rows[(2 * i + 1) * d..(2 * i + 2) * d];
        let query = Queries {
            feats: qf,
            logs: &mapped.logs[2 * i + 1..2 * i + 2],
            normalized: true,
            remap: Remap::new(self.fm, q, &mut self.feats[2 * m..]),
        };
        let lk = mapped.logs[2 * i];
        self.state.step_row(&self.kernels, kf, lk, v, query, out);
        Ok(())
    }

    /// Scratch elements [`Stream::prefill`] needs for chunks of `chunk` tokens.
    pub fn prefill_scratch_len(&self, chunk: usize) -> Result<usize> {
        Self::prefill_scratch_len_for(self.fm, chunk)
    }

    /// [`prefill_scratch_len`](Self::prefill_scratch_len) before the stream exists, from its
    /// feature map alone (as [`buffer_len`](Self::buffer_len) sizes the buffer): the Q' and
    /// K' panels of a chunk, its C×C score tile, 4·C row values and two feature rows for
    /// re-mapping a query whose denominator underflows, `2·C·M + C² + 4·C + 2·M` elements
    /// for chunks of C = `chunk` tokens. Errors if `chunk` is zero or the size overflows.
    pub fn prefill_scratch_len_for(fm: &F, chunk: usize) -> Result<usize> {
        chunk_scratch_len(fm.feature_dim(), chunk)
    }

    /// Processes `len` tokens at once with the chunked causal path, writing their outputs
    /// (len×dv) and continuing from the current state; equivalent to `len` calls of
    /// [`Stream::step`] up to rounding.
    // The allowance's reason: this is `Plan::run`'s call (q, k, v, out, scratch) plus the
    // token count and chunk size, which a stream cannot plan ahead of time.
    #[allow(clippy::too_many_arguments)]
    pub fn prefill(
        &mut self,
        q: &[T],
        k: &[T],
        v: &[T],
        len: usize,
        chunk: usize,
        out: &mut [T],
        scratch: &mut [T],
    ) -> Result<()> {
        let shape = Shape::new(len, self.fm.input_dim(), self.state.value_dim());
        let x = Qkv::new(q, k, v);
        shape.check_inputs(self.fm, x, out, None, self.tokens())?;
        check::room("scratch", scratch, self.prefill_scratch_len(chunk)?)?;
        let opts = Options {
            block: chunk,
            normalized: true,
            key_mask: None,
        };
        // Cannot fail: the checks above cover the plan's.
        let plan = Plan::new(PlanKind::CausalChunked, self.kernels, self.fm, shape, opts)?;
        chunked_into_state(&plan, &mut self.state, x, out, scratch)
    }

    /// Bytes [`Stream::snapshot`] writes.
    pub fn snapshot_len(&self) -> usize {
        snapshot::len(&self.state)
    }

    /// Writes the state as bytes (little-endian, versioned header, CRC-32 trailer; layout in
    /// ARCHITECTURE.md) and returns how many were written.
    pub fn snapshot(&self, out: &mut [u8]) -> Result<usize> {
        let n = self.snapshot_len();
        check::room("snapshot", out, n)?;
        snapshot::write(&self.state, self.fm, out);
        Ok(n)
    }

    /// Replaces the state with one written by [`Stream::snapshot`] (this version or version 1).
    /// The bytes must come from a stream with the same float type, dimensions and feature map,
    /// carry a valid checksum, and describe a state such a stream can reach; on any error the
    /// state is unchanged.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        snapshot::restore(&mut self.state, self.fm, bytes)
    }
}

/// Elements of scratch [`MappedTokens::new`] needs for `n` tokens: their keys and queries
/// (`2n·d`), feature rows (`2n·M`) and log-scales (`2n`).
pub fn mapped_tokens_len<T: Float, F: FeatureMap<T>>(fm: &F, n: usize) -> Result<usize> {
    let per = check::add(check::add(fm.input_dim(), fm.feature_dim())?, 1)?;
    check::mul(check::mul(2, n)?, per)
}

/// The keys and queries of one decoding step of `n` streams that share a feature map — the
/// heads of a layer with one projection, as in the paper's Performer — mapped in one GEMM of
/// `2n` rows, so W is read once per token instead of once per head (decoding is
/// memory-bound: W is as large as a head's state). Apply token `i` to its stream with
/// [`Stream::step_mapped`].
///
/// ```
/// use favor_core::*;
/// let (d, m, heads) = (4, 8, 3);
/// let mut w = [0f32; 32];
/// projection(ProjectionKind::default(), 3, m, d, &mut w).unwrap();
/// let phi = PositiveSoftmax::new(&w, m, d).unwrap();
/// let len = Stream::<f32, _, Scalar>::buffer_len(&phi, d).unwrap();
/// let mut bufs = vec![vec![0f32; len]; heads];
/// let mut streams: Vec<_> =
///     bufs.iter_mut().map(|b| Stream::new(Scalar, &phi, d, b).unwrap()).collect();
/// let q: Vec<f32> = (0..heads * d).map(|i| (i as f32 * 0.3).sin()).collect();
/// let k: Vec<f32> = (0..heads * d).map(|i| (i as f32 * 0.7).cos()).collect();
/// let v: Vec<f32> = (0..heads * d).map(|i| i as f32).collect();
/// let mut scratch = vec![0f32; mapped_tokens_len(&phi, heads).unwrap()];
/// let mapped = MappedTokens::new(&Scalar, &phi, heads, &q, &k, &mut scratch).unwrap();
/// let mut out = vec![0f32; heads * d];
/// for (h, s) in streams.iter_mut().enumerate() {
///     s.step_mapped(&mapped, h, &v[h * d..(h + 1) * d], &mut out[h * d..(h + 1) * d]).unwrap();
/// }
/// // One token per head so far: each head returns its own value.
/// assert!((out[5] - 5.0).abs() < 1e-4);
/// ```
#[derive(Debug)]
pub struct MappedTokens<'a, 'f, T, F> {
    fm: &'f F,
    n: usize,
    /// 2n rows of M: token i's key row, then its query row.
    feats: &'a [T],
    /// 2n log-scales, in the same order.
    logs: &'a [T],
    /// 2n input rows in the same order: each step's range check uses its token's.
    rows: &'a [T],
}

impl<'a, 'f, T: Float, F: FeatureMap<T>> MappedTokens<'a, 'f, T, F> {
    /// Maps `n` queries `q` and keys `k` (each n×d, row i for stream i) with `fm`, using
    /// [`mapped_tokens_len`] elements of `scratch`. Every input is checked (finite, and
    /// features representable) before this returns, so no stream is touched by a bad token.
    pub fn new<K: Kernels<T>>(
        kernels: &K,
        fm: &'f F,
        n: usize,
        q: &[T],
        k: &[T],
        scratch: &'a mut [T],
    ) -> Result<Self> {
        let (d, m) = (fm.input_dim(), fm.feature_dim());
        let n = check::nonzero("tokens", n)?;
        check::exact("q", q, check::mul(n, d)?)?;
        check::exact("k", k, check::mul(n, d)?)?;
        check::room("scratch", scratch, mapped_tokens_len(fm, n)?)?;
        range::rows(fm, "k", k, d)?;
        range::rows(fm, "q", q, d)?;
        let (rows, rest) = scratch.split_at_mut(2 * n * d);
        let (feats, rest) = rest.split_at_mut(2 * n * m);
        let logs = &mut rest[..2 * n];
        let buffers = PairBuffers {
            rows: &mut *rows,
            feats: &mut *feats,
            logs: &mut *logs,
        };
        map_pairs(kernels, fm, n, q, k, buffers)?;
        Ok(Self {
            fm,
            n,
            feats,
            logs,
            rows,
        })
    }

    /// Tokens mapped.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always false: at least one token is mapped.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Where [`map_pairs`] puts n (key, query) pairs: `rows` (2n·d) holds key i then query i,
/// `feats` (2n·M) and `logs` (2n) receive their features in that order.
struct PairBuffers<'b, T> {
    rows: &'b mut [T],
    feats: &'b mut [T],
    logs: &'b mut [T],
}

/// Maps `n` (key, query) pairs (rows of `k` and `q`, checked finite) as
/// one GEMM of `2n` rows into `buffers`. Keys whose log-scale is NaN become absent (see
/// `prepare_keys`).
fn map_pairs<T: Float, K: Kernels<T>, F: FeatureMap<T>>(
    kernels: &K,
    fm: &F,
    n: usize,
    q: &[T],
    k: &[T],
    buffers: PairBuffers<'_, T>,
) -> Result<()> {
    let PairBuffers { rows, feats, logs } = buffers;
    let (d, m) = (fm.input_dim(), fm.feature_dim());
    for i in 0..n {
        rows[2 * i * d..(2 * i + 1) * d].copy_from_slice(&k[i * d..(i + 1) * d]);
        rows[(2 * i + 1) * d..(2 * i + 2) * d].copy_from_slice(&q[i * d..(i + 1) * d]);
    }
    fm.map_rows(kernels, &rows[..2 * n * d], 2 * n, feats, logs)?;
    for i in 0..n {
        prepare_keys(
            &mut feats[2 * i * m..(2 * i + 1) * m],
            m,
            &mut logs[2 * i..2 * i + 1],
            None,
            0,
        );
    }
    Ok(())
}
