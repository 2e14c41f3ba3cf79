//! One forward call: shapes checked, heads run in parallel, inputs widened and outputs
//! narrowed a head at a time.

use std::any::TypeId;

use favor_core::{
    AnyFeatureMap, Compat, DataAwareSoftmax, FeatureMap, Float, GerfSoftmax, Kernels, Options,
    PeerAttention, Shape,
};

use crate::alloc::{self, try_resize, try_zeros};
use crate::backend::{BackendOp, Real};
use crate::config::{Config, Kernel, Precision};
use crate::error::{Error, Result, setup};
use crate::prepared::LayerMaps;
use crate::range::Maxima;
use crate::tensor::{Element, TensorView, TensorViewMut};
use crate::weights::Weights;

/// Rows per block of bidirectional attention: a block's features stay in L2.
const BIDIRECTIONAL_BLOCK: usize = 256;
/// Queries per block of bidirectional hybrid attention: each block weighs a band of
/// `block + 2w` keys exactly and takes its far part through φ-tiles of `block + 2w` or
/// (wide windows) `2·block` keys, so its cost per query grows with the block; 32 keeps the
/// band near 2w at the usual windows while the tiles still fill GEMMs.
const HYBRID_BLOCK: usize = 32;
/// Rows per part, at most, when one bidirectional FAVOR+ head is split (keys into states
/// merged in order, queries into row ranges): parts of a long head run on several threads
/// even when there are fewer heads than threads. The parts depend on the shape alone, never
/// on the thread count, so outputs are the same bits with or without the pool. A part's
/// state and merge cost under 1% of its GEMMs from a few hundred rows on (one thread: the
/// split and unsplit paths measured alike, `long_head` in favor-benches).
const SPLIT_ROWS: usize = 1024;
/// Parts of one head, at most: enough for 8 threads on one head (more heads than that keep
/// the pool busy anyway); each part allocates its state and scratch (about 0.4 MiB at m =
/// 256, f32), so fewer, longer parts fault fewer pages in.
const MAX_PARTS: usize = 8;

/// The inputs of one forward call, with their checked shape.
pub(crate) struct Io<'a, E> {
    q: TensorView<'a, E>,
    k: TensorView<'a, E>,
    v: TensorView<'a, E>,
    mask: Option<&'a [bool]>,
    batch: usize,
    /// Query heads per key/value head.
    group: usize,
    shape: Shape,
}

/// Checks that `t` is `[batch, heads, len, dim]` where each `Some` must match.
pub(crate) fn check_shape<E>(
    tensor: &'static str,
    t: &TensorView<'_, E>,
    want: [Option<usize>; 4],
) -> Result<()>
where
    E: Element,
{
    let got = t.shape();
    let ok = want.iter().zip(got).all(|(w, g)| w.is_none_or(|w| w == g));
    let nonempty = got.iter().all(|&n| n > 0);
    if ok && nonempty {
        return Ok(());
    }
    let name = ["batch", "heads", "seq", "dim"];
    let parts: Vec<String> = want
        .iter()
        .zip(name)
        .map(|(w, n)| w.map_or_else(|| n.to_string(), |w| w.to_string()))
        .collect();
    let mut expected = format!("[{}]", parts.join(", "));
    if ok {
        expected.push_str(" with no empty dimension");
    }
    Err(Error::Shape {
        tensor,
        expected,
        got: got.to_vec(),
    })
}

impl<'a, E: Element> Io<'a, E> {
    /// Checks the shapes of one call: q `[B, H, Lq, d]`, k `[B, Hkv, Lk, d]`, v
    /// `[B, Hkv, Lk, dv]`, a mask of `B × Lk` flags.
    pub(crate) fn check(
        cfg: &Config,
        q: TensorView<'a, E>,
        k: TensorView<'a, E>,
        v: TensorView<'a, E>,
        mask: Option<&'a [bool]>,
    ) -> Result<Self> {
        let (h, hkv) = (Some(cfg.heads), Some(cfg.kv_heads));
        let (d, dv) = (Some(cfg.dim), Some(cfg.value_dim));
        check_shape("q", &q, [None, h, None, d])?;
        let [b, _, lq, _] = q.shape();
        let lk = if cfg.causal { Some(lq) } else { None };
        check_shape("k", &k, [Some(b), hkv, lk, d])?;
        let lk = k.shape()[2];
        check_shape("v", &v, [Some(b), hkv, Some(lk), dv])?;
        if let Some(m) = mask
            && Some(m.len()) != b.checked_mul(lk)
        {
            return Err(Error::Shape {
                tensor: "key_mask",
                expected: format!("[{b}, {lk}] (batch × keys)"),
                got: vec![m.len()],
            });
        }
        Ok(Self {
            q,
            k,
            v,
            mask,
            batch: b,
            group: cfg.heads / cfg.kv_heads,
            shape: Shape {
                queries: lq,
                keys: lk,
                dim: cfg.dim,
                value_dim: cfg.value_dim,
            },
        })
    }

    /// `[B, H, Lq, dv]`.
    pub(crate) fn out_shape(&self) -> [usize; 4] {
        let s = self.shape;
        [self.batch, self.q.shape()[1], s.queries, s.value_dim]
    }

    /// The supported range (see [`crate::range`]) for this call over `weights`.
    pub(crate) fn check_range(&self, cfg: &Config, weights: &Weights) -> Result<Maxima> {
        let keys = self.shape.keys as u64;
        let m = cfg.feature_dim();
        let w = cfg
            .data_aware
            .as_ref()
            .map_or(weights.row_norm, |d| d.row_norm());
        crate::range::check(cfg, w, m, &self.q, &self.k, &self.v, keys)
    }

    /// Runs every (batch, head) pair into `out` (`[B, H, Lq, dv]`, already checked): the
    /// inputs and the output, their element types erased, go to the engine compiled for the
    /// call's precision ([`Real::forward`]).
    pub(crate) fn run<O: Element>(
        &self,
        cfg: &Config,
        weights: &Weights,
        maps: &LayerMaps<'_>,
        out: TensorViewMut<'_, O>,
    ) -> Result<()> {
        let per_head = self.shape.queries * self.shape.value_dim;
        row_major_into(out, |out| match cfg.precision {
            Precision::F32 => with_pieces(out, per_head, |out| {
                f32::forward(&self.call(), cfg, (weights, maps.f32), out)
            }),
            Precision::F64 => with_pieces(out, per_head, |out| {
                f64::forward(&self.call(), cfg, (weights, maps.f64), out)
            }),
        })
    }

    /// This call's inputs as the engine reads them in `T`.
    fn call<T: Float>(&self) -> Call<'_, T> {
        Call {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            mask: self.mask,
            batch: self.batch,
            group: self.group,
            shape: self.shape,
        }
    }
}

/// One checked forward call's inputs, their element type erased ([`Source`]).
pub(crate) struct Call<'r, T> {
    q: &'r dyn Source<T>,
    k: &'r dyn Source<T>,
    v: &'r dyn Source<T>,
    mask: Option<&'r [bool]>,
    batch: usize,
    /// Query heads per key/value head.
    group: usize,
    shape: Shape,
}

/// The engine of one forward call in precision `T`: every (batch, head) pair into its piece
/// of `out`. Instantiated only through [`Real::forward`], so it is compiled here, once per
/// precision.
pub(crate) fn forward<T: Real>(
    call: &Call<'_, T>,
    cfg: &Config,
    (weights, built): (&Weights, Option<AnyFeatureMap<'_, T>>),
    out: Pieces<'_, T>,
) -> Result<()> {
    if let Some(data_aware) = &cfg.data_aware {
        // One map per head; each also shifts its head's keys.
        let mut maps = alloc::try_with_capacity("feature maps", cfg.heads)?;
        for h in 0..cfg.heads {
            maps.push(data_aware.head_map::<T>(h, cfg.normalizer).map_err(setup)?);
        }
        return call.run_maps(cfg, &maps, Some(&maps), None, out);
    }
    if cfg.compat != Compat::None {
        return call.run_peer(cfg, weights, out);
    }
    if cfg.kernel.is_fitted() {
        // Each head fits its own map over W (`HeadIo::attend_fitted`); the layer's is unused.
        let none: &[AnyFeatureMap<'_, T>] = &[];
        return call.run_maps(cfg, none, None, Some(T::weights(weights)), out);
    }
    // The layer's map, built with its projection ([`crate::prepared`]).
    let map = match built {
        Some(map) => map,
        None => cfg.map::<T>(weights)?,
    };
    call.run_maps(cfg, std::slice::from_ref(&map), None, None, out)
}

impl<T: Real> Call<'_, T> {
    /// Runs every head as `cfg.compat`'s peer computes it (favor-core's `PeerAttention`).
    fn run_peer(&self, cfg: &Config, weights: &Weights, out: Pieces<'_, T>) -> Result<()> {
        if self.mask.is_some() {
            return Err(Error::Config(
                "compat reproduces a peer's attention, which takes no key mask".into(),
            ));
        }
        let peer = cfg.peer::<T>(weights)?;
        cfg.with_backend(PeerHeads {
            call: self,
            cfg,
            peer: &peer,
            out,
        })
    }

    /// Runs every head with `maps[h]` (or `maps[0]` for all, when there is one), shifting
    /// head h's keys by `shifts[h]`'s μ when given, or, for the fitted kernels, with a map
    /// fitted to the head over `fitted` (W, Wᵀ).
    fn run_maps<F: FeatureMap<T> + Sync>(
        &self,
        cfg: &Config,
        maps: &[F],
        shifts: Option<&[DataAwareSoftmax<'_, T>]>,
        fitted: Option<(&[T], &[T])>,
        out: Pieces<'_, T>,
    ) -> Result<()> {
        cfg.with_backend(Heads {
            call: self,
            cfg,
            maps,
            shifts,
            fitted,
            out,
        })
    }

    /// Head `i` (= batch · H + head)'s inputs.
    fn head(&self, cfg: &Config, i: usize) -> HeadIo<'_, T> {
        let (b, h) = (i / cfg.heads, i % cfg.heads);
        HeadIo {
            q: self.q,
            k: self.k,
            v: self.v,
            batch: b,
            head: h,
            kv_head: h / self.group,
            mask: self
                .mask
                .map(|m| &m[b * self.shape.keys..(b + 1) * self.shape.keys]),
            shape: self.shape,
            pairs: self.batch * cfg.heads,
        }
    }
}

/// Runs `fill` on `out`'s data when it is contiguous (`[B, H, L, dv]` row-major), else on a
/// row-major buffer whose rows are then placed into `out`: heads of a strided output
/// interleave, so each head computes into rows of its own first.
fn row_major_into<O: Element>(
    mut out: TensorViewMut<'_, O>,
    fill: impl FnOnce(&mut [O]) -> Result<()>,
) -> Result<()> {
    if out.is_contiguous() {
        return fill(out.data_mut());
    }
    let shape = out.shape();
    let n = crate::tensor::element_count("out", shape)?;
    let mut tmp: Vec<O> = alloc::try_filled("output", n, O::zeroed())?;
    fill(&mut tmp)?;
    let [_, h, l, dv] = shape;
    for (r, row) in tmp.chunks_exact(dv.max(1)).enumerate() {
        out.row_mut(r / (h * l), r / l % h, r % l)
            .copy_from_slice(row);
    }
    Ok(())
}

/// Every (batch, head) pair of one forward call, run with one backend.
struct Heads<'r, 'w, 'o, T, F> {
    call: &'r Call<'r, T>,
    cfg: &'r Config,
    /// One map for every head, or one per head.
    maps: &'r [F],
    /// Per head, the data-aware map whose μ shifts the head's keys.
    shifts: Option<&'r [DataAwareSoftmax<'w, T>]>,
    /// W and Wᵀ, when each head's map is fitted to it ([`Kernel::is_fitted`]).
    fitted: Option<(&'r [T], &'r [T])>,
    out: Pieces<'o, T>,
}

impl<T: Real, F: FeatureMap<T> + Sync> BackendOp<T> for Heads<'_, '_, '_, T, F> {
    type Output = Result<()>;
    fn with_kernels<K: Kernels<T>>(self, kernels: &K) -> Result<()> {
        let (call, cfg, maps, shifts, fitted) =
            (self.call, self.cfg, self.maps, self.shifts, self.fitted);
        let pool = ScratchPool::default();
        let one = |i: usize, out: &mut dyn Sink<T>| -> Result<()> {
            let head = call.head(cfg, i);
            let core = |source| Error::Core {
                batch: head.batch,
                head: head.head,
                source,
            };
            if let Some(w) = fitted {
                return head.attend_fitted(kernels, w, cfg, (out, &pool), core);
            }
            let map = &maps[if maps.len() == 1 { 0 } else { head.head }];
            let shift = shifts.map(|s| &s[head.head]);
            head.attend(kernels, map, shift, cfg, (out, &pool), core)
        };
        let results: Vec<Result<()>> = parallel_map(cfg.parallel, self.out, &one);
        results.into_iter().collect()
    }
}

/// Every (batch, head) pair of one compat call ([`Call::run_peer`]).
struct PeerHeads<'r, 'w, 'o, T> {
    call: &'r Call<'r, T>,
    cfg: &'r Config,
    peer: &'r PeerAttention<'w, T>,
    out: Pieces<'o, T>,
}

impl<T: Real> BackendOp<T> for PeerHeads<'_, '_, '_, T> {
    type Output = Result<()>;
    fn with_kernels<K: Kernels<T>>(self, kernels: &K) -> Result<()> {
        let (call, cfg, peer) = (self.call, self.cfg, self.peer);
        let shape = call.shape;
        let scratch_len = peer.scratch_len(shape).map_err(|_| Error::Alloc {
            what: "attention scratch",
            bytes: None,
        })?;
        let one = |i: usize, out: &mut dyn Sink<T>| -> Result<()> {
            let head = call.head(cfg, i);
            let mut bufs = [Vec::new(), Vec::new(), Vec::new()];
            let [q, k, v] = head.widened(&mut bufs)?;
            let mut scratch = try_zeros("attention scratch", scratch_len)?;
            let mut wide = Vec::new();
            let out_t = out.target(&mut wide)?;
            peer.run(kernels, shape, None, q, k, v, out_t, &mut scratch)
                .map_err(|source| Error::Core {
                    batch: head.batch,
                    head: head.head,
                    source,
                })?;
            out.finish(&wide);
            Ok(())
        };
        let results: Vec<Result<()>> = parallel_map(cfg.parallel, self.out, &one);
        results.into_iter().collect()
    }
}

/// One input of a call (q, k or v) as the engine reads it, a head at a time in the compute
/// type `T`, whatever its element type and strides.
///
/// Why erased: below a call's entry point ([`Io::run`], the streams' `absorb`) everything is
/// compiled once per precision, in this crate ([`Real::forward`], [`Real::stream`]). Generic
/// over the caller's element types, the whole engine (favor-core's plans over every SIMD
/// backend, the threading) was compiled again in each crate that called `forward` or a
/// stream, once per element type used there: 85% of favor-ffi's LLVM IR.
pub(crate) trait Source<T>: Sync {
    /// The rows of (`batch`, `head`) as one `T` slice: zero-copy when they are contiguous
    /// `T`, else gathered (and converted) into `tmp`.
    fn head<'t>(&'t self, batch: usize, head: usize, tmp: &'t mut Vec<T>) -> Result<&'t [T]>;
    /// Row 0 of the heads `at(i)` = (batch, head) for `i` in `0..n`, as `n` rows of `T`:
    /// zero-copy when the view is already those rows in order (contiguous, one row per head,
    /// no head repeated) and of type `T`, else gathered (and converted) into `tmp`.
    fn first_rows<'t>(
        &'t self,
        tmp: &'t mut Vec<T>,
        n: usize,
        at: &dyn Fn(usize) -> (usize, usize),
    ) -> Result<&'t [T]>;
    /// Whether [`head`](Self::head) copies: the rows are strided or not of type `T`.
    fn copies(&self) -> bool;
}

impl<E: Element, T: Float> Source<T> for TensorView<'_, E> {
    fn head<'t>(&'t self, batch: usize, head: usize, tmp: &'t mut Vec<T>) -> Result<&'t [T]> {
        if let Some(rows) = self.try_head(batch, head) {
            return widen(rows, tmp);
        }
        let [_, _, l, d] = self.shape();
        try_resize("converted inputs", tmp, l * d, T::zero())?;
        for (i, dst) in tmp.chunks_exact_mut(d.max(1)).enumerate() {
            convert(self.row(batch, head, i), dst);
        }
        Ok(tmp)
    }

    fn first_rows<'t>(
        &'t self,
        tmp: &'t mut Vec<T>,
        n: usize,
        at: &dyn Fn(usize) -> (usize, usize),
    ) -> Result<&'t [T]> {
        let [b, h, _, d] = self.shape();
        if self.is_contiguous() && b * h == n {
            return widen(self.data(), tmp);
        }
        try_resize("converted inputs", tmp, n * d, T::zero())?;
        for (i, dst) in tmp.chunks_exact_mut(d.max(1)).enumerate() {
            let (b, h) = at(i);
            convert(self.row(b, h, 0), dst);
        }
        Ok(tmp)
    }

    fn copies(&self) -> bool {
        converts::<E, T>() || !self.is_contiguous()
    }
}

/// One piece of a call's output (one (batch, head)'s rows) as the engine writes it, in the
/// compute type `T`, whatever its element type (see [`Source`] for why erased).
pub(crate) trait Sink<T>: Send {
    /// Where to compute the piece in `T`: the piece itself when its elements are `T`, else
    /// `wide` (sized here).
    fn target<'s>(&'s mut self, wide: &'s mut Vec<T>) -> Result<&'s mut [T]>;
    /// Rounds `wide` into the piece, once (nothing to do when it was computed in place).
    fn finish(&mut self, wide: &[T]);
    /// Whether [`target`](Self::target) needs `wide`: the piece is not of type `T`.
    fn converts(&self) -> bool;
}

impl<O: Element, T: Float> Sink<T> for &mut [O] {
    fn target<'s>(&'s mut self, wide: &'s mut Vec<T>) -> Result<&'s mut [T]> {
        narrow_target(self, wide)
    }
    fn finish(&mut self, wide: &[T]) {
        narrow_back(wide, self);
    }
    fn converts(&self) -> bool {
        converts::<O, T>()
    }
}

/// A call's output in pieces of one (batch, head) each, in order.
pub(crate) type Pieces<'p, T> = Vec<&'p mut (dyn Sink<T> + 'p)>;

/// Runs `f` on `out` cut into pieces of `per_head` elements, as [`Sink`]s of `T`.
pub(crate) fn with_pieces<O: Element, T: Float>(
    out: &mut [O],
    per_head: usize,
    f: impl FnOnce(Pieces<'_, T>) -> Result<()>,
) -> Result<()> {
    let per_head = per_head.max(1);
    let n = out.len().div_ceil(per_head);
    let mut slices = alloc::try_with_capacity("output pieces", n)?;
    slices.extend(out.chunks_mut(per_head));
    let mut sinks: Pieces<'_, T> = alloc::try_with_capacity("output pieces", n)?;
    sinks.extend(slices.iter_mut().map(|s| s as &mut dyn Sink<T>));
    f(sinks)
}

/// The work on one piece of an output, given its index. A trait object (as in [`spread`]),
/// so the threading machinery is instantiated once per compute and result type, not once
/// per calling closure.
type PieceFn<'f, T, R> = dyn Fn(usize, &mut dyn Sink<T>) -> R + Sync + 'f;

/// Applies `f` to each piece of `out` with its index, on rayon's pool when `parallel` (and
/// the feature) is on; results in index order either way.
pub(crate) fn parallel_map<T, R: Send>(
    parallel: bool,
    out: Pieces<'_, T>,
    f: &PieceFn<'_, T, R>,
) -> Vec<R> {
    #[cfg(feature = "parallel")]
    if parallel {
        use rayon::prelude::*;
        return out
            .into_par_iter()
            .enumerate()
            .map(|(i, o)| f(i, o))
            .collect();
    }
    let _ = parallel;
    out.into_iter().enumerate().map(|(i, o)| f(i, o)).collect()
}

/// Applies `f` to each piece of `out` with its index and its element of `states` (one per
/// piece), on rayon's pool when `parallel` (and the feature) is on; results in index order
/// either way.
pub(crate) fn parallel_zip<T, S: Send, R: Send>(
    parallel: bool,
    out: Pieces<'_, T>,
    states: &mut [S],
    f: &(dyn Fn(usize, &mut dyn Sink<T>, &mut S) -> R + Sync),
) -> Vec<R> {
    #[cfg(feature = "parallel")]
    if parallel {
        use rayon::prelude::*;
        return out
            .into_par_iter()
            .zip(states.par_iter_mut())
            .enumerate()
            .map(|(i, (o, s))| f(i, o, s))
            .collect();
    }
    let _ = parallel;
    let pieces = out.into_iter().zip(states.iter_mut());
    pieces.enumerate().map(|(i, (o, s))| f(i, o, s)).collect()
}

/// How many calls of `f` [`parallel_map`] can run at once over `tasks` pieces: buffers for
/// that many can be allocated before any of them starts.
pub(crate) fn concurrency(parallel: bool, tasks: usize) -> usize {
    #[cfg(feature = "parallel")]
    if parallel {
        return rayon::current_num_threads().clamp(1, tasks.max(1));
    }
    let _ = (parallel, tasks);
    1
}

/// Whether [`widen`] from `E` to `T` (or [`narrow_target`] for `E` = f32) needs a buffer.
fn converts<E: 'static, T: 'static>() -> bool {
    TypeId::of::<E>() != TypeId::of::<T>()
}

/// One head's inputs.
struct HeadIo<'r, T> {
    q: &'r dyn Source<T>,
    k: &'r dyn Source<T>,
    v: &'r dyn Source<T>,
    batch: usize,
    head: usize,
    /// The key/value head this query head reads.
    kv_head: usize,
    mask: Option<&'r [bool]>,
    shape: Shape,
    /// (batch, head) pairs in the call: a long head's parts run in parallel only when they
    /// are few.
    pairs: usize,
}

impl<'r, T: Real> HeadIo<'r, T> {
    /// The head's q, k and v as `T` rows: zero-copy, or converted into `bufs`.
    fn widened<'t>(&self, bufs: &'t mut [Vec<T>; 3]) -> Result<[&'t [T]; 3]>
    where
        'r: 't,
    {
        let [tq, tk, tv] = bufs;
        let (b, h, kv) = (self.batch, self.head, self.kv_head);
        let (q, k, v) = (self.q, self.k, self.v);
        Ok([q.head(b, h, tq)?, k.head(b, kv, tk)?, v.head(b, kv, tv)?])
    }

    /// One head's attention into `out`; favor-core's errors go through `core` (which
    /// names the head).
    fn attend<K: Kernels<T>, F: FeatureMap<T> + Sync>(
        &self,
        kernels: &K,
        map: &F,
        shift: Option<&DataAwareSoftmax<'_, T>>,
        cfg: &Config,
        out: (&mut dyn Sink<T>, &ScratchPool<T>),
        core: impl Fn(favor_core::Error) -> Error + Sync,
    ) -> Result<()> {
        let mut bufs = [Vec::new(), Vec::new(), Vec::new()];
        let [q, k, v] = self.widened(&mut bufs)?;
        // Keys shifted by the data-aware map's μ, in a copy (never the caller's input).
        let mut shifted = Vec::new();
        let k = match shift {
            Some(phi) => crate::data_aware::shifted_keys(phi, k, &mut shifted, &core)?,
            None => k,
        };
        self.run_plan(kernels, map, (q, k, v), cfg, out, core)
    }

    /// One head's attention with a [`Kernel::Gerf`] or [`Kernel::Saderf`] map fitted to this
    /// call's queries and the keys they see (the unmasked ones; with none visible the output
    /// is zero whatever the map, and A = 0, ψ = 1 are used), over W and Wᵀ `w`. SADERF
    /// rescales copies of the queries by ψ and of the keys by 1/ψ.
    fn attend_fitted<K: Kernels<T>>(
        &self,
        kernels: &K,
        (w, wt): (&[T], &[T]),
        cfg: &Config,
        out: (&mut dyn Sink<T>, &ScratchPool<T>),
        core: impl Fn(favor_core::Error) -> Error + Sync,
    ) -> Result<()> {
        let mut bufs = [Vec::new(), Vec::new(), Vec::new()];
        let [q, k, v] = self.widened(&mut bufs)?;
        let d = self.shape.dim;
        let mut visible = Vec::new();
        let seen = match self.mask {
            Some(mask) => {
                let n = mask.iter().filter(|&&on| on).count();
                try_resize("visible keys", &mut visible, n * d, T::zero())?;
                let rows = k.chunks_exact(d).zip(mask).filter(|(_, on)| **on);
                for (dst, (row, _)) in visible.chunks_exact_mut(d).zip(rows) {
                    dst.copy_from_slice(row);
                }
                &visible[..]
            }
            None => k,
        };
        let (mut qs, mut ks, mut psi) = (Vec::new(), Vec::new(), Vec::new());
        let (a, q, k) = match (cfg.kernel, seen.is_empty()) {
            (_, true) => (0.0, q, k),
            (Kernel::Saderf, false) => {
                try_resize("SADERF scales", &mut psi, d, T::zero())?;
                let fit =
                    favor_core::saderf_fit(q, seen, d, cfg.normalizer, &mut psi).map_err(&core)?;
                let qs = crate::alloc::try_copy("rescaled queries", &mut qs, q)?;
                fit.apply_queries(qs).map_err(&core)?;
                let ks = crate::alloc::try_copy("rescaled keys", &mut ks, k)?;
                fit.apply_keys(ks).map_err(&core)?;
                (fit.a(), &qs[..], &ks[..])
            }
            _ => {
                let rho = favor_core::gerf_rho(q, seen, d, cfg.normalizer).map_err(&core)?;
                (favor_core::gerf_optimal_a(rho), q, k)
            }
        };
        let mut norms = Vec::new();
        try_resize("projection norms", &mut norms, cfg.features, T::zero())?;
        let map = GerfSoftmax::new(w, cfg.features, d, a, &mut norms)
            .and_then(|g| g.with_transposed_projection(wt))
            .map(|g| AnyFeatureMap::Gerf(g.with_data_normalizer(cfg.normalizer)))
            .map_err(&core)?;
        self.run_plan(kernels, &map, (q, k, v), cfg, out, core)
    }

    /// Plans and runs one head's attention over rows ready for `map`.
    fn run_plan<K: Kernels<T>, F: FeatureMap<T> + Sync>(
        &self,
        kernels: &K,
        map: &F,
        (q, k, v): (&[T], &[T], &[T]),
        cfg: &Config,
        (out, pool): (&mut dyn Sink<T>, &ScratchPool<T>),
        core: impl Fn(favor_core::Error) -> Error + Sync,
    ) -> Result<()> {
        let opts = Options {
            // A block longer than the sequence would only size scratch for rows that never
            // exist (and could fail to allocate); the partition into blocks is the same.
            block: match (cfg.causal, cfg.hybrid) {
                (true, _) => cfg.chunk,
                (false, None) => BIDIRECTIONAL_BLOCK,
                (false, Some(_)) => HYBRID_BLOCK,
            }
            .min(self.shape.queries.max(self.shape.keys)),
            normalized: true,
            key_mask: self.mask,
        };
        let mut wide = Vec::new();
        let out_t = out.target(&mut wide)?;
        let (key_part, query_part) = (
            part_len(self.shape.keys, opts.block),
            part_len(self.shape.queries, opts.block),
        );
        // Causal heads are not split: a part needs the sums of the keys before it, so every
        // key but the last part's is mapped and summed twice (measured 1.4-1.5x the work of
        // the unsplit path at L = 4096 and 16384), which two threads only win back. Whether a
        // head splits depends on its own shape only, so its outputs do not depend on the
        // batch it came in.
        let split = !cfg.causal
            && cfg.hybrid.is_none()
            && (key_part < self.shape.keys || query_part < self.shape.queries);
        let kind = if cfg.causal {
            favor_core::PlanKind::CausalChunked
        } else {
            favor_core::PlanKind::Bidirectional
        };
        let plan = favor_core::Plan::new(kind, *kernels, map, self.shape, opts)
            .and_then(|p| match cfg.hybrid {
                Some(h) => p.with_hybrid(h),
                None => Ok(p),
            })
            .map_err(|e| match e {
                // Only the scratch size can overflow: a size beyond memory.
                favor_core::Error::SizeOverflow => Error::Alloc {
                    what: "attention scratch",
                    bytes: None,
                },
                other => core(other),
            })?;
        if split {
            let parts = Parts {
                keys: key_part,
                queries: query_part,
                // With MAX_PARTS or more (batch, head) pairs the pool is busy with whole
                // heads: the parts run one after the other (the same bits either way).
                parallel: cfg.parallel && self.pairs < MAX_PARTS,
            };
            parts.run(kernels, &plan, (q, k, v), out_t, &core)?;
        } else {
            let mut scratch = pool.take(plan.scratch_len())?;
            let run = plan.run(q, k, v, out_t, &mut scratch[..plan.scratch_len()]);
            pool.give(scratch);
            run.map_err(core)?;
        }
        out.finish(&wide);
        Ok(())
    }
}

/// Rows per part for `rows` rows in blocks of `block`: `⌈rows / SPLIT_ROWS⌉` parts (at most
/// [`MAX_PARTS`]) of equal length rounded up to whole blocks (so the parts' blocks are the
/// unsplit path's), `rows` itself when one part holds them.
fn part_len(rows: usize, block: usize) -> usize {
    let parts = rows.div_ceil(SPLIT_ROWS).min(MAX_PARTS);
    if parts <= 1 {
        return rows;
    }
    rows.div_ceil(parts).div_ceil(block) * block
}

/// One bidirectional head in parts ([`SPLIT_ROWS`]), in parallel when `parallel`: `keys` keys
/// at a time into states of their own, merged in order into the first; then `queries`
/// queries at a time from it, each part into its rows of the output.
struct Parts {
    keys: usize,
    queries: usize,
    parallel: bool,
}

impl Parts {
    fn run<T: Real, K: Kernels<T>, F: FeatureMap<T> + Sync>(
        &self,
        kernels: &K,
        plan: &favor_core::Plan<'_, T, K, F>,
        (q, k, v): (&[T], &[T], &[T]),
        out: &mut [T],
        core: &(impl Fn(favor_core::Error) -> Error + Sync),
    ) -> Result<()> {
        let (shape, features) = (plan.shape(), plan.feature_dim());
        let dv = shape.value_dim;
        let state_len = favor_core::state_len(features, dv).map_err(core)?;
        let scratch_len = plan.part_scratch_len();
        let mut bufs: Vec<Vec<T>> = (0..shape.keys.div_ceil(self.keys))
            .map(|_| try_zeros("attention state", state_len))
            .collect::<Result<_>>()?;
        let absorbed = spread(self.parallel, bufs.iter_mut().collect(), &|i, buf| {
            let keys = i * self.keys..((i + 1) * self.keys).min(shape.keys);
            let mut scratch = try_zeros("attention scratch", scratch_len)?;
            let mut state = favor_core::PrefixState::new(features, dv, buf).map_err(core)?;
            plan.absorb_keys(keys, k, v, &mut state, &mut scratch)
                .map_err(core)?;
            Ok(state)
        });
        let mut states = absorbed.into_iter();
        let Some(first) = states.next() else {
            return Ok(());
        };
        let mut total = first?;
        for state in states {
            total.merge(kernels, &mut state?).map_err(core)?;
        }
        let total = &total;
        let pieces = out.chunks_mut(self.queries * dv).collect();
        let answered = spread(self.parallel, pieces, &|i, o: &mut [T]| {
            let queries = i * self.queries..((i + 1) * self.queries).min(shape.queries);
            let mut scratch = try_zeros("attention scratch", scratch_len)?;
            plan.answer_queries(queries, q, total, o, &mut scratch)
                .map_err(core)
        });
        answered.into_iter().collect()
    }
}

/// Items of [`spread`] with their indices: one thread's share.
#[cfg(feature = "parallel")]
type Share<I> = Vec<(usize, I)>;

/// Applies `f` to each of `items` with its index; results in index order. When `parallel`
/// (and the feature) is on, the items are shared out in order over up to
/// `rayon::current_num_threads()` scoped threads, the calling thread taking the first share
/// (a thread that cannot be started leaves its share to the caller).
///
/// Why not rayon's pool here, for the parts of one long head: on the project's 2-core Linux
/// VM, a pool call made right after the caller's own single-threaded work often had both
/// woken workers placed on the CPU the caller had just used, sharing it for the whole phase
/// while the other CPU idled (per-part CPU logging; such calls took the one-thread time, the
/// others 1.7× less). Threads started for the call are placed on idle CPUs, as the
/// `long_head` example's control (two heads on two scoped threads) shows. A start costs tens
/// of microseconds; a part is at least 1024 rows (over a millisecond).
fn spread<I: Send, R: Send>(
    parallel: bool,
    items: Vec<I>,
    f: &(dyn Fn(usize, I) -> R + Sync),
) -> Vec<R> {
    #[cfg(feature = "parallel")]
    if parallel && items.len() > 1 {
        let per = items.len().div_ceil(rayon::current_num_threads().max(1));
        let shares = items.len().div_ceil(per);
        let mut indexed = items.into_iter().enumerate();
        let first: Share<I> = indexed.by_ref().take(per).collect();
        // Each other share waits in a cell its thread takes it from; a thread the OS refuses
        // leaves it there for the caller.
        let cells: Vec<std::sync::Mutex<Option<Share<I>>>> = (1..shares)
            .map(|_| std::sync::Mutex::new(Some(indexed.by_ref().take(per).collect())))
            .collect();
        let take = |cell: &std::sync::Mutex<Option<Share<I>>>| {
            cell.lock()
                .ok()
                .and_then(|mut c| c.take())
                .unwrap_or_default()
        };
        let run = |share: Share<I>| -> Vec<R> { share.into_iter().map(|(i, x)| f(i, x)).collect() };
        return std::thread::scope(|scope| {
            let started: Vec<_> = cells
                .iter()
                .map(|cell| {
                    let spawned = std::thread::Builder::new()
                        .name("favor-part".into())
                        .spawn_scoped(scope, || run(take(cell)));
                    (spawned, cell)
                })
                .collect();
            let mut out = run(first);
            for (spawned, cell) in started {
                match spawned {
                    Ok(handle) => match handle.join() {
                        Ok(rs) => out.extend(rs),
                        Err(panic) => std::panic::resume_unwind(panic),
                    },
                    Err(_) => out.extend(run(take(cell))),
                }
            }
            out
        });
    }
    let _ = parallel;
    items
        .into_iter()
        .enumerate()
        .map(|(i, x)| f(i, x))
        .collect()
}

/// `src` as `T`: zero-copy when `E` is `T`, else converted into `tmp`.
fn widen<'a, E: Element, T: Float>(src: &'a [E], tmp: &'a mut Vec<T>) -> Result<&'a [T]> {
    if TypeId::of::<E>() == TypeId::of::<T>() {
        return Ok(bytemuck::cast_slice(src));
    }
    try_resize("converted inputs", tmp, src.len(), T::zero())?;
    convert(src, tmp);
    Ok(tmp)
}

/// Converts `src` into `dst` (same length) as the compute type `T` sees it.
fn convert<E: Element, T: Float>(src: &[E], dst: &mut [T]) {
    if TypeId::of::<E>() == TypeId::of::<T>() {
        dst.copy_from_slice(bytemuck::cast_slice(src));
    } else if TypeId::of::<T>() == TypeId::of::<f32>() {
        // To f32: one vectorised slice conversion (exact for f16/bf16, rounding for f64).
        E::to_f32_slice(src, bytemuck::cast_slice_mut(dst));
    } else {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = T::from_f64(s.to_f64());
        }
    }
}

/// Where to compute an output of element type `O` in `T`: `out` itself when `O` is `T`, else
/// `wide` (sized here).
fn narrow_target<'a, T: Float, O: Element>(
    out: &'a mut [O],
    wide: &'a mut Vec<T>,
) -> Result<&'a mut [T]> {
    if TypeId::of::<T>() == TypeId::of::<O>() {
        Ok(bytemuck::cast_slice_mut(out))
    } else {
        try_resize("wide output", wide, out.len(), T::zero())?;
        Ok(wide)
    }
}

/// Rounds `wide` into `out`, once (nothing to do when the output was computed in place).
fn narrow_back<T: Float, O: Element>(wide: &[T], out: &mut [O]) {
    for (o, &w) in out.iter_mut().zip(wide) {
        *o = O::from_f64(w.to_f64());
    }
}

/// Scratch buffers shared by the heads of one call: a head takes one (allocating it the first
/// time) and gives it back, so a call allocates and zeroes a buffer per thread at work, not
/// per head (favor-core's `Plan::run` ignores what its scratch holds). Zeroing a fresh
/// buffer per head was a quarter of a one-token call's time over 8 heads (m = 256, dv = 64).
#[derive(Default)]
struct ScratchPool<T>(std::sync::Mutex<Vec<Vec<T>>>);

impl<T: Float> ScratchPool<T> {
    /// A buffer of at least `len` elements.
    fn take(&self, len: usize) -> Result<Vec<T>> {
        let spare = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut buf = spare.unwrap_or_default();
        if buf.len() < len {
            try_resize("attention scratch", &mut buf, len, T::zero())?;
        }
        Ok(buf)
    }

    fn give(&self, buf: Vec<T>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(buf);
    }
}
