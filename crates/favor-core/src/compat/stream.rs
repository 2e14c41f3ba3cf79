//! The causal-safe streaming variant of a peer's causal attention: [`PeerMemory`] (the state
//! between calls, which a host keeps per head) and [`PeerStream`] (a stream over borrowed
//! memory).

use super::{PeerAttention, absorb, divide};
use crate::attention::Shape;
use crate::error::{Result, check};
use crate::inputs::Qkv;
use crate::{Accum, Float, Kernels, MatMut, MatRef};

/// The state of a [`PeerStream`] between calls, in a buffer the caller owns (`B = Vec<T>` for
/// a host that keeps one per head, `&mut [T]` for a stack or static buffer): `S_e` (M × dv),
/// `z_e` (M), the values' sum (dv), the running key shift and the token count.
///
/// The first [`step`](Self::step) initialises the buffer for its peer's feature dimension and
/// the given value dimension; later steps must use the same two (a peer of other dimensions
/// is refused) and should use the same peer: as with favor's own
/// [`StreamMemory`](crate::StreamMemory), only the dimensions are checked per step, while a
/// [`restore`](Self::restore) checks the peer's fingerprint too.
///
/// ```
/// use favor_core::*;
/// let (d, m, dv) = (4, 8, 4);
/// let mut w = vec![0f32; m * d];
/// projection(ProjectionKind::default(), 7, m, d, &mut w).unwrap();
/// let peer = PeerAttention::softmax(Compat::GoogleJax, &w, m, d).unwrap().causal(true);
/// let mut memory = PeerMemory::new(vec![0.0; PeerMemory::<f32, Vec<f32>>::buffer_len(m, dv).unwrap()]);
/// let mut scratch = vec![0.0; PeerMemory::<f32, Vec<f32>>::scratch_len(&peer)];
/// let mut out = [0.0; 4];
/// for t in 0..3 {
///     let x = [0.1 * t as f32, -0.2, 0.3, 0.05];
///     memory.step(&Scalar, &peer, dv, &x, &x, &x, &mut out, &mut scratch).unwrap();
/// }
/// assert_eq!(memory.tokens(), 3);
/// let mut bytes = vec![0u8; memory.snapshot_len(&peer, dv).unwrap()];
/// memory.snapshot(&peer, dv, &mut bytes).unwrap();
/// let mut copy = PeerMemory::new(vec![0.0; bytes.len()]);
/// copy.restore(&peer, dv, &bytes).unwrap();
/// assert_eq!(copy.tokens(), 3);
/// ```
#[derive(Debug, Clone)]
pub struct PeerMemory<T, B> {
    buf: B,
    /// The running key shift M (`-∞` before the first softmax key, and always for
    /// generalized kernels, which have none).
    shift: T,
    tokens: u64,
    /// (M, dv) once the first step (or a restore) initialised the buffer.
    dims: Option<(usize, usize)>,
}

impl<T: Float, B: AsMut<[T]> + AsRef<[T]>> PeerMemory<T, B> {
    /// Elements of the buffer for `features` (the peer's M) and `value_dim`:
    /// `M·dv + M + dv`.
    pub fn buffer_len(features: usize, value_dim: usize) -> Result<usize> {
        let (m, dv) = (
            check::nonzero("features", features)?,
            check::nonzero("value_dim", value_dim)?,
        );
        check::add(check::add(check::mul(m, dv)?, m)?, dv)
    }

    /// Scratch elements [`step`](Self::step) needs for `peer`: `2·M + 2`.
    pub fn scratch_len(peer: &PeerAttention<'_, T>) -> usize {
        2 * peer.m + 2
    }

    /// Memory for an empty stream in `buf` (of at least [`buffer_len`](Self::buffer_len)
    /// elements; initialised by the first step).
    pub fn new(buf: B) -> Self {
        Self {
            buf,
            shift: T::neg_infinity(),
            tokens: 0,
            dims: None,
        }
    }

    /// Forgets every token (the buffer is initialised again by the next step).
    pub fn reset(&mut self) {
        self.shift = T::neg_infinity();
        self.tokens = 0;
        self.dims = None;
    }

    /// Tokens absorbed so far.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// The running key shift M: the largest key projection `w·k'` seen so far (`-∞` before
    /// the first key, and for generalized kernels).
    pub fn shift(&self) -> T {
        self.shift
    }

    /// The buffer.
    pub fn buffer(&self) -> &B {
        &self.buf
    }

    /// Checks that `peer` and `value_dim` fit this memory: the buffer's room, and the
    /// dimensions it started with. Returns the buffer length.
    pub(super) fn fit(&self, peer: &PeerAttention<'_, T>, value_dim: usize) -> Result<usize> {
        let n = Self::buffer_len(peer.m, value_dim)?;
        check::room("buffer", self.buf.as_ref(), n)?;
        match self.dims {
            Some(dims) if dims != (peer.m, value_dim) => Err(crate::Error::InvalidParameter {
                what: "a peer stream's memory goes on with the feature and value dimensions it started with",
            }),
            _ => Ok(n),
        }
    }

    /// The state's elements (`S_e`, `z_e`, the values' sum) once a step or restore has
    /// initialised the buffer.
    pub(super) fn initialised(&self) -> Option<&[T]> {
        let (m, dv) = self.dims?;
        let n = Self::buffer_len(m, dv).ok()?;
        self.buf.as_ref().get(..n)
    }

    /// Sets the whole state (checked by the caller: [`restore`](Self::restore)).
    pub(super) fn set_raw(
        &mut self,
        shift: T,
        tokens: u64,
        dims: (usize, usize),
        values: impl Iterator<Item = T>,
    ) {
        for (x, v) in self.buf.as_mut().iter_mut().zip(values) {
            *x = v;
        }
        (self.shift, self.tokens, self.dims) = (shift, tokens, Some(dims));
    }

    /// One token of `peer`'s causal-safe attention (see [`PeerStream`]): absorbs key `k` (d)
    /// and value `v` (`value_dim`), then answers query `q` (d) into `out` (`value_dim`).
    /// On error nothing changes.
    #[allow(clippy::too_many_arguments)]
    pub fn step<K: Kernels<T>>(
        &mut self,
        kernels: &K,
        peer: &PeerAttention<'_, T>,
        value_dim: usize,
        q: &[T],
        k: &[T],
        v: &[T],
        out: &mut [T],
        scratch: &mut [T],
    ) -> Result<()> {
        let n = self.fit(peer, value_dim)?;
        let (p, m, dv) = (peer, peer.m, value_dim);
        let shape = Shape::new(1, p.d, dv);
        p.reference
            .check_inputs(shape, Qkv::new(q, k, v), out, self.tokens)?;
        check::room("scratch", scratch, Self::scratch_len(p))?;
        if self.tokens == u64::MAX {
            return Err(crate::Error::InvalidParameter {
                what: "the stream's token count would overflow",
            });
        }
        let (kf, rest) = scratch.split_at_mut(m);
        let (qf, rest) = rest.split_at_mut(m);
        let (ks, qs) = rest.split_at_mut(1);
        let qs = &mut qs[..1];
        // Softmax keys: the shift is the running max of the projections, taken from this
        // key's own projection (computed once) before its features are finished. The ε part
        // is kept apart (its weight does not depend on M); generalized features have no
        // shift, so their ε stays inside the stored features.
        let softmax = p.needs_key_max();
        let key_shift = if softmax {
            p.project(kernels, (k, 1), kf, ks)?;
            let shift = self.shift.max(ks[0]);
            p.softmax_from_projections(kernels, (k, 1), (Some(shift), T::zero()), kf, ks);
            Some(shift)
        } else {
            p.features(kernels, (k, 1), (None, p.eps), kf, ks)?;
            None
        };
        p.features(kernels, (q, 1), (None, p.eps), qf, qs)?;
        let buf = &mut self.buf.as_mut()[..n];
        if self.dims.is_none() {
            buf.fill(T::zero());
            self.dims = Some((m, dv));
        }
        let (s, rest) = buf.split_at_mut(m * dv);
        let (z, vsum) = rest.split_at_mut(m);
        if let Some(new) = key_shift
            && new > self.shift
        {
            if self.shift != T::neg_infinity() {
                let f = (self.shift - new).libm_exp();
                kernels.scale(f, s);
                kernels.scale(f, z);
            }
            self.shift = new;
        }
        absorb(kernels, (&mut *s, &mut *z), kf, v, 1);
        kernels.axpy(T::one(), v, vsum);
        self.tokens += 1;
        // Answer: q'ᵀ(S_e + c·1 vsumᵀ) / q'·(z_e + c·n), c = m^{-1/2}·ε for softmax.
        let c = if softmax {
            p.eps / T::from_usize(m).libm_sqrt()
        } else {
            T::zero()
        };
        let qsum = qs[0];
        let o = &mut out[..dv];
        kernels.gemm(
            MatMut::row_major(o, 1, dv),
            Accum::Overwrite,
            MatRef::row_major(qf, 1, m),
            MatRef::row_major(s, m, dv),
        );
        kernels.axpy(c * qsum, vsum, o);
        let r = kernels.dot(qf, z) + c * qsum * T::from_f64(self.tokens as f64);
        let rule = p.compat.denominator(true, softmax);
        divide(kernels, rule, (&[r], &[qsum]), o);
        Ok(())
    }
}

/// A causal-safe, token-by-token variant of a peer's causal attention: the peer's formulas
/// with the key shift M taken over the keys seen so far (a running max) instead of the whole
/// sequence, so no future token changes a past output and the state is O(1) per token.
///
/// Output t equals the peer's whole-sequence causal output for the sequence cut after token
/// t ([`PeerAttention`] with `causal(true)` over tokens `0..=t`): the same as the peer's on
/// the full sequence wherever the running max has reached the final one (from the token
/// holding the largest key projection on), and different before it, where the peer's larger
/// M gives the ε term more weight. The deviation measured on the README's inputs is in the
/// README ("Serving models trained elsewhere"; `cargo run --release -p favor-core --example
/// peer_stream`). Generalized kernels have no shift: for them the stream equals the peer's
/// causal attention.
///
/// The state holds the exponential part of S and z at the running shift (`S_e`, m × dv, and
/// `z_e`, m; rescaled by `exp(M_old − M_new)` when the max moves) and the ε part apart: the
/// keys' value sum and count, which the ε term multiplies by `m^{-1/2}·ε` whatever M is.
/// A host that keeps the state between calls (one per head) keeps a [`PeerMemory`], which
/// also writes and restores snapshots.
///
/// ```
/// use favor_core::*;
/// let (d, m, dv) = (4, 8, 4);
/// let mut w = vec![0f64; m * d];
/// projection(ProjectionKind::default(), 7, m, d, &mut w).unwrap();
/// let peer = PeerAttention::softmax(Compat::PerformerPytorch, &w, m, d).unwrap().causal(true);
/// let mut buf = vec![0.0; PeerStream::<f64>::buffer_len(m, dv).unwrap()];
/// let mut stream = PeerStream::new(peer, dv, &mut buf).unwrap();
/// let mut scratch = vec![0.0; stream.scratch_len()];
/// let (x, mut out) = ([0.3, -0.1, 0.7, 0.2], [0.0; 4]);
/// stream.step(&Scalar, &x, &x, &x, &mut out, &mut scratch).unwrap();
/// // One token attends to itself: its value, but for the peer's 1e-6 in the denominator.
/// assert!(out.iter().zip(&x).all(|(o, v)| (o - v).abs() < 1e-3 && o != v));
/// ```
#[derive(Debug)]
pub struct PeerStream<'a, T> {
    peer: PeerAttention<'a, T>,
    memory: PeerMemory<T, &'a mut [T]>,
    value_dim: usize,
}

impl<'a, T: Float> PeerStream<'a, T> {
    /// Elements of a stream's buffer for `features` and `value_dim`.
    pub fn buffer_len(features: usize, value_dim: usize) -> Result<usize> {
        PeerMemory::<T, &mut [T]>::buffer_len(features, value_dim)
    }

    /// An empty stream of `peer`'s attention (whose causal flag is implied) over the first
    /// [`buffer_len`](Self::buffer_len) elements of `buf`.
    pub fn new(peer: PeerAttention<'a, T>, value_dim: usize, buf: &'a mut [T]) -> Result<Self> {
        let n = Self::buffer_len(peer.m, value_dim)?;
        check::room("buffer", buf, n)?;
        Ok(Self {
            peer: peer.causal(true),
            memory: PeerMemory::new(&mut buf[..n]),
            value_dim,
        })
    }

    /// Scratch elements [`step`](Self::step) needs.
    pub fn scratch_len(&self) -> usize {
        PeerMemory::<T, &mut [T]>::scratch_len(&self.peer)
    }

    /// Tokens absorbed so far.
    pub fn tokens(&self) -> u64 {
        self.memory.tokens()
    }

    /// One token: absorbs key `k` (d) and value `v` (dv), then answers query `q` (d) into
    /// `out` (dv). On error nothing changes.
    pub fn step<K: Kernels<T>>(
        &mut self,
        kernels: &K,
        q: &[T],
        k: &[T],
        v: &[T],
        out: &mut [T],
        scratch: &mut [T],
    ) -> Result<()> {
        (self.memory).step(kernels, &self.peer, self.value_dim, q, k, v, out, scratch)
    }
}
