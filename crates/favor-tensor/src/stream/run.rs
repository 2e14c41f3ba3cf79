//! One prefill or decoding step over every (batch, head) state.

use favor_core::{HybridShape, Kernels};

use super::{HeadState, HeadStates, Maps};
use crate::backend::{BackendOp, Real};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::exec::{Pieces, Sink, Source, concurrency, parallel_zip};

/// One prefill or step call's inputs, their element type erased ([`Source`]).
pub(crate) struct StepIo<'r, T> {
    pub(crate) q: &'r dyn Source<T>,
    pub(crate) k: &'r dyn Source<T>,
    pub(crate) v: &'r dyn Source<T>,
    pub(crate) len: usize,
    /// A decoding step (`Stream::step`) rather than a prefill.
    pub(crate) step: bool,
}

impl<T> StepIo<'_, T> {
    /// Head `i` (= batch · H + head)'s rows of q, k and v (its key/value head's) as `T`:
    /// zero-copy, or converted into `bufs`.
    fn head<'t>(
        &'t self,
        cfg: &Config,
        i: usize,
        [tq, tk, tv]: [&'t mut Vec<T>; 3],
    ) -> Result<[&'t [T]; 3]> {
        let (b, h) = (i / cfg.heads, i % cfg.heads);
        let kv = h / (cfg.heads / cfg.kv_heads);
        Ok([
            self.q.head(b, h, tq)?,
            self.k.head(b, kv, tk)?,
            self.v.head(b, kv, tv)?,
        ])
    }
}

/// One prefill or step over every head, with one backend.
pub(crate) struct Run<'s, 'w, 'r, 'o, T> {
    pub(crate) states: &'s mut HeadStates<'w, T>,
    pub(crate) cfg: &'s Config,
    pub(crate) io: &'s StepIo<'r, T>,
    pub(crate) out: Pieces<'o, T>,
}

impl<T: Real> BackendOp<T> for Run<'_, '_, '_, '_, T> {
    type Output = Result<()>;
    fn with_kernels<K: Kernels<T>>(self, kernels: &K) -> Result<()> {
        if let Some(peer) = self.states.peer {
            return self.peer(kernels, peer);
        }
        match (self.cfg.hybrid, self.io.step) {
            (Some(shape), _) => self.hybrid(kernels, shape),
            (None, true) if self.states.maps().shared() => self.step(kernels),
            (None, true) => self.step_per_head(kernels),
            (None, false) => self.prefill(kernels),
        }
    }
}

/// A step's rows of all `n` streams (stream i = batch · H + head), gathered in stream order:
/// its own query, its key/value head's key and value.
fn step_rows<'t, T>(
    io: &'t StepIo<'_, T>,
    cfg: &Config,
    n: usize,
    bufs: &'t mut [Vec<T>; 3],
) -> Result<[&'t [T]; 3]> {
    let (h, group) = (cfg.heads, cfg.heads / cfg.kv_heads);
    let [tq, tk, tv] = bufs;
    Ok([
        io.q.first_rows(tq, n, &|i| (i / h, i % h))?,
        io.k.first_rows(tk, n, &|i| (i / h, i % h / group))?,
        io.v.first_rows(tv, n, &|i| (i / h, i % h / group))?,
    ])
}

/// favor-core's error for stream `i` (= batch · H + head) as one naming the head.
fn core(heads: usize, i: usize, source: favor_core::Error) -> Error {
    Error::Core {
        batch: i / heads,
        head: i % heads,
        source,
    }
}

impl<T: Real> Run<'_, '_, '_, '_, T> {
    /// Every head shares the one projection: map all keys and queries in one GEMM (W read
    /// once per token, not once per head), then step each head's state. A step is a few
    /// microseconds per head: less than handing it to a pool.
    fn step<K: Kernels<T> + Sync + Copy>(self, kernels: &K) -> Result<()> {
        let (io, cfg) = (self.io, self.cfg);
        let (h, dv) = (cfg.heads, cfg.value_dim);
        let n = self.states.heads.len();
        let mut bufs = [Vec::new(), Vec::new(), Vec::new()];
        let [q, k, v] = step_rows(io, cfg, n, &mut bufs)?;
        let map = &self.states.map;
        let mapped = favor_core::MappedTokens::new(kernels, map, n, q, k, &mut self.states.mapped)
            .map_err(|e| match e {
                // Token i is stream i's row 0.
                favor_core::Error::NonFinite { what, row } => {
                    core(h, row, favor_core::Error::NonFinite { what, row: 0 })
                }
                // Unreachable: `check` ran favor-core's range check on every head's maxima
                // before anything ran.
                other => core(h, 0, other),
            })?;
        // Sized by the first head's `Sink::target`, before any state changes.
        let mut wide = Vec::new();
        let heads = self.states.heads.iter_mut();
        for (i, (st, o)) in heads.zip(self.out).enumerate() {
            let out_t = o.target(&mut wide)?;
            let mut s = st.attach(*kernels, map, dv).map_err(|e| core(h, i, e))?;
            s.step_mapped(&mapped, i, &v[i * dv..(i + 1) * dv], out_t)
                .map_err(|e| core(h, i, e))?;
            drop(s); // writes the head's token count and stabiliser back
            o.finish(&wide);
        }
        Ok(())
    }

    /// A step of a layer whose heads have their own maps (calibrated): each head maps its
    /// own query and (shifted) key.
    fn step_per_head<K: Kernels<T> + Sync + Copy>(self, kernels: &K) -> Result<()> {
        let (io, cfg) = (self.io, self.cfg);
        let (h, dv) = (cfg.heads, cfg.value_dim);
        let n = self.states.heads.len();
        let mut bufs = [Vec::new(), Vec::new(), Vec::new()];
        let [q, k, v] = step_rows(io, cfg, n, &mut bufs)?;
        let (d, maps) = (cfg.dim, Maps::new(&self.states.map, &self.states.head_maps));
        let (mut wide, mut shifted) = (Vec::new(), Vec::new());
        let heads = self.states.heads.iter_mut();
        for (i, (st, o)) in heads.zip(self.out).enumerate() {
            let out_t = o.target(&mut wide)?;
            let core = |e| core(h, i, e);
            let ki = maps.keys(i, &k[i * d..(i + 1) * d], &mut shifted, core)?;
            let mut s = st.attach(*kernels, maps.of(i), dv).map_err(core)?;
            s.step(&q[i * d..(i + 1) * d], ki, &v[i * dv..(i + 1) * dv], out_t)
                .map_err(core)?;
            drop(s); // writes the head's token count and stabiliser back
            o.finish(&wide);
        }
        Ok(())
    }

    /// Hybrid attention, a step or a prefill: each (batch, head) steps its own
    /// `HybridStream` through the call's tokens (a prefill is its tokens one by one: the
    /// stream is the token-by-token hybrid; favor-core's chunked hybrid plan has no state to
    /// hand over).
    fn hybrid<K: Kernels<T> + Sync + Copy>(self, kernels: &K, shape: HybridShape) -> Result<()> {
        let (d, dv, heads) = (self.cfg.dim, self.cfg.value_dim, self.cfg.heads);
        let maps = Maps::new(&self.states.map, &self.states.head_maps);
        let sizes = PrefillSizes::new(self.io, &self.out, (d, dv), !maps.shared(), 0);
        let states = &mut self.states.hybrid;
        token_by_token(self.io, self.cfg, self.out, states, &sizes, |i, h, rows| {
            let core = |e| core(heads, i, e);
            let k = maps.keys(i, rows.k, rows.shifted, core)?;
            let mut s = h.attach(*kernels, maps.of(i), dv, shape).map_err(core)?;
            for t in 0..rows.q.len() / d {
                let (r, rv) = (t * d..(t + 1) * d, t * dv..(t + 1) * dv);
                s.step(
                    &rows.q[r.clone()],
                    &k[r],
                    &rows.v[rv.clone()],
                    &mut rows.out[rv],
                )
                .map_err(core)?;
            }
            Ok(()) // dropping `s` writes the head's counts and far scale back
        })
    }

    /// A compat layer, a step or a prefill: each (batch, head) steps its own `PeerMemory`
    /// (the peer's causal attention with the key shift over the keys seen so far) through
    /// the call's tokens one by one.
    fn peer<K: Kernels<T> + Sync + Copy>(
        self,
        kernels: &K,
        peer: favor_core::PeerAttention<'_, T>,
    ) -> Result<()> {
        let (d, dv, heads) = (self.cfg.dim, self.cfg.value_dim, self.cfg.heads);
        let scratch = super::PeerHeadState::<T>::scratch_len(&peer);
        let sizes = PrefillSizes::new(self.io, &self.out, (d, dv), false, scratch);
        let states = &mut self.states.peers;
        token_by_token(self.io, self.cfg, self.out, states, &sizes, |i, h, rows| {
            for t in 0..rows.q.len() / d {
                let (r, rv) = (t * d..(t + 1) * d, t * dv..(t + 1) * dv);
                let (q, k, v) = (&rows.q[r.clone()], &rows.k[r], &rows.v[rv.clone()]);
                h.step(kernels, &peer, dv, q, k, v, &mut rows.out[rv], rows.scratch)
                    .map_err(|e| core(heads, i, e))?;
            }
            Ok(())
        })
    }

    fn prefill<K: Kernels<T> + Sync + Copy>(self, kernels: &K) -> Result<()> {
        let (io, cfg) = (self.io, self.cfg);
        let (dv, len) = (cfg.value_dim, io.len);
        let maps = Maps::new(&self.states.map, &self.states.head_maps);
        let map = maps.of(0);
        // Chunks longer than the call would only size scratch for absent rows.
        let chunk = cfg.chunk.min(len);
        let scratch = crate::alloc::len(
            "prefill scratch",
            favor_core::Stream::<T, _, K>::prefill_scratch_len_for(map, chunk),
        )?;
        let sizes = PrefillSizes::new(io, &self.out, (cfg.dim, dv), !maps.shared(), scratch);
        let one = |i: usize,
                   out: &mut dyn Sink<T>,
                   h: &mut HeadState<T>,
                   bufs: &mut PrefillBuffers<T>| {
            let [q, k, v] = io.head(cfg, i, [&mut bufs.q, &mut bufs.k, &mut bufs.v])?;
            let out_t = out.target(&mut bufs.out)?;
            let core = |e| core(cfg.heads, i, e);
            let k = maps.keys(i, k, &mut bufs.shifted, core)?;
            let mut s = h.attach(*kernels, maps.of(i), dv).map_err(core)?;
            s.prefill(q, k, v, len, chunk, out_t, &mut bufs.scratch)
                .map_err(core)?;
            drop(s); // writes the head's token count and stabiliser back
            out.finish(&bufs.out);
            Ok(())
        };
        let heads = &mut self.states.heads;
        let pool = BufferPool::new(&sizes, concurrency(cfg.parallel, heads.len()))?;
        let results = parallel_zip(cfg.parallel, self.out, heads, &|i, o, h| {
            pool.with(&sizes, |bufs| one(i, o, h, bufs))
        });
        results.into_iter().collect()
    }
}

/// One head's rows of a token-by-token call, in the compute type: its queries, its key/value
/// head's keys and values, its output, and its buffers for shifted keys and core scratch.
struct HeadRows<'b, T> {
    q: &'b [T],
    k: &'b [T],
    v: &'b [T],
    out: &'b mut [T],
    shifted: &'b mut Vec<T>,
    scratch: &'b mut [T],
}

/// Runs `each` on every (batch, head) state of a layer that steps its tokens one by one
/// (hybrid, compat) with that head's rows; heads run in parallel when the layer is.
fn token_by_token<T: Real, S: Send>(
    io: &StepIo<'_, T>,
    cfg: &Config,
    out: Pieces<'_, T>,
    states: &mut [S],
    sizes: &PrefillSizes,
    each: impl Fn(usize, &mut S, HeadRows<'_, T>) -> Result<()> + Sync,
) -> Result<()> {
    // As in `prefill`: every buffer is allocated before the first head changes.
    let pool = BufferPool::new(sizes, concurrency(cfg.parallel, states.len()))?;
    let results = parallel_zip(cfg.parallel, out, states, &|i, o, h| {
        pool.with(sizes, |bufs| {
            let [q, k, v] = io.head(cfg, i, [&mut bufs.q, &mut bufs.k, &mut bufs.v])?;
            let out_t = o.target(&mut bufs.out)?;
            let rows = HeadRows {
                q,
                k,
                v,
                out: out_t,
                shifted: &mut bufs.shifted,
                scratch: &mut bufs.scratch,
            };
            each(i, h, rows)?;
            o.finish(&bufs.out);
            Ok(())
        })
    });
    results.into_iter().collect()
}

/// One set of [`PrefillBuffers`] per head that can run at once, allocated before the first
/// head changes, so that running out of memory leaves the stream as it was.
struct BufferPool<T>(std::sync::Mutex<Vec<PrefillBuffers<T>>>);

impl<T: Real> BufferPool<T> {
    fn new(sizes: &PrefillSizes, workers: usize) -> Result<Self> {
        let mut pool = crate::alloc::try_with_capacity("prefill scratch", workers)?;
        for _ in 0..workers {
            pool.push(PrefillBuffers::new(sizes)?);
        }
        Ok(Self(std::sync::Mutex::new(pool)))
    }

    /// Runs `f` with a set from the pool (allocating one is only a fallback: the pool holds
    /// one per concurrent head) and puts it back.
    fn with(
        &self,
        sizes: &PrefillSizes,
        f: impl FnOnce(&mut PrefillBuffers<T>) -> Result<()>,
    ) -> Result<()> {
        let taken = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut bufs = match taken {
            Some(b) => b,
            None => PrefillBuffers::new(sizes)?,
        };
        let r = f(&mut bufs);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(bufs);
        r
    }
}

impl PrefillSizes {
    /// The buffers one head of a `len`-token call needs: input copies where the inputs are
    /// strided or of another type than `T`, a shifted copy of the keys for calibrated heads,
    /// an output in `T` where `out`'s pieces are not `T`, and `scratch` elements of
    /// favor-core scratch.
    fn new<T>(
        io: &StepIo<'_, T>,
        out: &Pieces<'_, T>,
        (d, dv): (usize, usize),
        shifts: bool,
        scratch: usize,
    ) -> Self {
        let len = io.len;
        let copies = io.q.copies() || io.k.copies() || io.v.copies();
        Self {
            input: if copies { len * d } else { 0 },
            values: if copies { len * dv } else { 0 },
            shifted: if shifts { len * d } else { 0 },
            out: if out.iter().any(|o| o.converts()) {
                len * dv
            } else {
                0
            },
            scratch,
        }
    }
}

/// Element counts of one head's prefill buffers (0 where no copy is needed).
struct PrefillSizes {
    /// A head's queries (or keys) gathered or converted to `T`: `len × d`.
    input: usize,
    /// A head's values gathered or converted to `T`: `len × dv`.
    values: usize,
    /// A calibrated head's keys shifted by μ: `len × d`.
    shifted: usize,
    /// A head's output in `T` before rounding to the output type: `len × dv`.
    out: usize,
    /// favor-core's chunk scratch.
    scratch: usize,
}

/// One head's prefill buffers: inputs in `T`, the output in `T` and favor-core's scratch.
struct PrefillBuffers<T> {
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    shifted: Vec<T>,
    out: Vec<T>,
    scratch: Vec<T>,
}

impl<T: Real> PrefillBuffers<T> {
    fn new(n: &PrefillSizes) -> Result<Self> {
        let what = "prefill scratch";
        let cap = |len| crate::alloc::try_with_capacity(what, len);
        Ok(Self {
            q: cap(n.input)?,
            k: cap(n.input)?,
            v: cap(n.values)?,
            shifted: cap(n.shifted)?,
            out: cap(n.out)?,
            scratch: crate::alloc::try_zeros(what, n.scratch)?,
        })
    }
}
