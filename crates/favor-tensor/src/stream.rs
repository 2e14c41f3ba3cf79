//! Causal decoding over tensors: one constant-size prefix state per (batch, head).

use favor_core::{FeatureMap, Kernels};

use crate::error::{Error, Result};
use crate::performer::{
    BackendOp, Performer, Precision, Real, check_shape, concurrency, converts, narrow_back,
    narrow_target, parallel_map, widen,
};
use crate::tensor::{Element, Tensor, TensorView};
use favor_core::AnyFeatureMap;

const MAGIC: [u8; 4] = *b"FAVT";
/// Version of the byte format [`Stream::snapshot`] writes.
pub const STREAM_SNAPSHOT_VERSION: u32 = 2;
const HEADER: usize = 48;
/// Each version-2 head record starts with its batch and head index (u32 each).
const RECORD: usize = 8;
const TRAILER: usize = 4;

/// Causal attention over `batch` sequences, one token (or one prefill block) at a time.
///
/// Each (batch, head) pair keeps favor-core's prefix state `(S, z)` plus its stabiliser, held
/// as a compensated total and a ring of recent keys so that long streams keep their precision:
/// about `heads × (2·(m·dv + m) + 16·(m + dv))` floats per sequence (m = feature count;
/// [`memory_bytes`](Self::memory_bytes) is exact), whatever the number of tokens seen.
/// Outputs equal [`Performer::forward`] with causal attention up to rounding.
///
/// ```
/// use favor_tensor::{Performer, TensorView};
/// let (h, d) = (2, 8);
/// let attn = Performer::builder(d).heads(h).features(32).causal(true).build().unwrap();
/// let mut stream = attn.stream(1).unwrap();
/// let prompt = vec![0.1f32; h * 5 * d];
/// let p = TensorView::new([1, h, 5, d], &prompt).unwrap();
/// let out = stream.prefill(p, p, p).unwrap();
/// assert_eq!(out.shape(), [1, h, 5, d]);
/// let tok = vec![0.2f32; h * d];
/// let t = TensorView::new([1, h, 1, d], &tok).unwrap();
/// let next = stream.step(t, t, t).unwrap();
/// assert_eq!(stream.tokens(), 6);
/// let bytes = stream.snapshot().unwrap();
/// stream.reset();
/// stream.restore(&bytes).unwrap();
/// assert_eq!(stream.tokens(), 6);
/// # let _ = next;
/// ```
#[derive(Debug)]
pub struct Stream<'p> {
    performer: &'p Performer,
    batch: usize,
    /// Tokens fed so far. favor-core's per-head counts can be lower: a key whose squared
    /// norm overflows is absent from the state (its feature's limit is 0) and not counted.
    position: u64,
    states: States<'p>,
}

#[derive(Debug)]
enum States<'p> {
    F32(HeadStates<'p, f32>),
    F64(HeadStates<'p, f64>),
}

/// The feature map and every head's state, in one precision.
#[derive(Debug, Clone)]
struct HeadStates<'p, T> {
    map: AnyFeatureMap<'p, T>,
    heads: Vec<HeadState<T>>,
    /// Scratch of a step: every (batch, head)'s key and query, mapped in one GEMM
    /// ([`favor_core::MappedTokens`]); kept so a step allocates nothing.
    mapped: Vec<T>,
}

/// A favor-core stream's memory between calls.
#[derive(Debug, Clone)]
struct HeadState<T> {
    buf: Vec<T>,
    tokens: u64,
    log_scale: T,
}

macro_rules! states {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            States::F32($s) => $e,
            States::F64($s) => $e,
        }
    };
}

impl<'p> Stream<'p> {
    pub(crate) fn new(performer: &'p Performer, batch: usize) -> Result<Self> {
        if batch == 0 {
            return Err(Error::Config("a stream needs batch > 0".into()));
        }
        let n = batch
            .checked_mul(performer.heads())
            .ok_or_else(|| Error::Config(format!("a stream of batch {batch} is too large")))?;
        let states = match performer.cfg.precision {
            Precision::F32 => States::F32(HeadStates::new(performer, n)?),
            Precision::F64 => States::F64(HeadStates::new(performer, n)?),
        };
        Ok(Self {
            performer,
            batch,
            position: 0,
            states,
        })
    }

    /// Sequences in the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Tokens fed so far (the same for every sequence).
    pub fn tokens(&self) -> u64 {
        self.position
    }

    /// Bytes of state, whatever the number of tokens seen: per (batch, head) favor-core's
    /// stream buffer (`Stream::buffer_len`: the compensated sums `2·(m·dv + m)`, the ring
    /// `RING·(m + dv) + 1`, four feature and two input rows), and the step's scratch for
    /// mapping every head's key and query at once (`2·(m + d + 1)` per head).
    pub fn memory_bytes(&self) -> usize {
        states!(&self.states, s => {
            s.heads.iter().map(|h| size_of_val(&h.buf[..])).sum::<usize>()
                + size_of_val(&s.mapped[..])
        })
    }

    /// Forgets every token.
    pub fn reset(&mut self) {
        self.position = 0;
        states!(&mut self.states, s => s.heads.iter_mut().for_each(HeadState::reset))
    }

    /// Absorbs `len` tokens at once through the chunked causal path (`[B, H, len, d]`
    /// queries and keys, `[B, H, len, dv]` values) and returns their outputs
    /// `[B, H, len, dv]`: the same bits as causal [`Performer::forward`] on those tokens from
    /// an empty stream. On error the state is unchanged.
    pub fn prefill<E: Element>(
        &mut self,
        q: TensorView<'_, E>,
        k: TensorView<'_, E>,
        v: TensorView<'_, E>,
    ) -> Result<Tensor> {
        let len = self.check(q, k, v, None)?;
        let shape = [
            self.batch,
            self.performer.heads(),
            len,
            self.performer.value_dim(),
        ];
        let mut out = Tensor::zeros(shape)?;
        let io = StepIo {
            q,
            k,
            v,
            len,
            step: false,
        };
        states!(&mut self.states, s => s.run(self.performer, &io, out.data_mut()))?;
        self.position += len as u64;
        Ok(out)
    }

    /// One decoding step: token `t`'s `[B, H, 1, d]` query and key and `[B, H, 1, dv]`
    /// value; returns its `[B, H, 1, dv]` output. On error the state is unchanged.
    pub fn step<E: Element>(
        &mut self,
        q: TensorView<'_, E>,
        k: TensorView<'_, E>,
        v: TensorView<'_, E>,
    ) -> Result<Tensor> {
        let shape = [
            self.batch,
            self.performer.heads(),
            1,
            self.performer.value_dim(),
        ];
        let mut out = Tensor::zeros(shape)?;
        self.step_into(q, k, v, out.data_mut())?;
        Ok(out)
    }

    /// [`step`](Self::step) into a caller buffer of `B·H·dv` elements, allocating nothing
    /// for f32 inputs and precision.
    pub fn step_into<E: Element>(
        &mut self,
        q: TensorView<'_, E>,
        k: TensorView<'_, E>,
        v: TensorView<'_, E>,
        out: &mut [f32],
    ) -> Result<()> {
        self.check(q, k, v, Some(1))?;
        let want = self.batch * self.performer.heads() * self.performer.value_dim();
        if out.len() != want {
            return Err(Error::Shape {
                tensor: "out",
                expected: format!("[{want}] (batch × heads × value_dim)"),
                got: vec![out.len()],
            });
        }
        let io = StepIo {
            q,
            k,
            v,
            len: 1,
            step: true,
        };
        states!(&mut self.states, s => s.run(self.performer, &io, out))?;
        self.position += 1;
        Ok(())
    }

    /// Checks shapes and finiteness before anything changes; returns the token count.
    fn check<E: Element>(
        &self,
        q: TensorView<'_, E>,
        k: TensorView<'_, E>,
        v: TensorView<'_, E>,
        len: Option<usize>,
    ) -> Result<usize> {
        let cfg = &self.performer.cfg;
        let (b, h) = (Some(self.batch), Some(cfg.heads));
        check_shape("q", &q, [b, h, len, Some(cfg.dim)])?;
        let len = Some(q.shape()[2]);
        check_shape("k", &k, [b, h, len, Some(cfg.dim)])?;
        check_shape("v", &v, [b, h, len, Some(cfg.value_dim)])?;
        // favor-core checks each head, but a NaN in the last head must not leave the first
        // ones updated: check everything first, as the precision will see it, together with
        // the supported range (see `Performer`) for every key absorbed so far.
        let len = q.shape()[2];
        let keys = self
            .position
            .checked_add(len as u64)
            .filter(|&n| n < u64::MAX)
            .ok_or_else(|| Error::Config("the stream's token count would overflow".into()))?;
        let p = self.performer;
        let maxima =
            crate::range::check(cfg, p.weights.row_norm, cfg.feature_dim(), &q, &k, &v, keys)?;
        // And favor-core's own range, for every head at once: a head that refused its part
        // after others ran would leave the stream half-updated.
        states!(&self.states, s => s.core_range(maxima, keys))?;
        Ok(q.shape()[2])
    }

    /// The state as bytes: a versioned little-endian header (magic `FAVT`, version,
    /// precision, batch, heads, bytes per head, tokens fed), then for every (batch, head) its
    /// indices and favor-core's snapshot of its state (which carries the feature map's
    /// fingerprint and its own checksum), then a CRC-32 of everything before it.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        states!(&self.states, s => s.snapshot(self.performer, self.batch, self.position))
    }

    /// Replaces the state with one [`snapshot`](Self::snapshot) wrote (this version or
    /// version 1) for a stream of the same layer (projection, kernel, dims, precision) and
    /// batch. Corrupted (checksum), malformed, reordered or mismatched bytes give
    /// [`Error::Snapshot`] and leave the state unchanged.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let (p, b) = (self.performer, self.batch);
        self.position = states!(&mut self.states, s => s.restore(p, b, bytes))?;
        Ok(())
    }
}

impl<T: Real> HeadState<T> {
    fn reset(&mut self) {
        self.buf.fill(T::zero());
        self.tokens = 0;
        self.log_scale = T::neg_infinity();
    }
}

/// One prefill or step call's inputs.
struct StepIo<'a, E> {
    q: TensorView<'a, E>,
    k: TensorView<'a, E>,
    v: TensorView<'a, E>,
    len: usize,
    /// A decoding step (`Stream::step`) rather than a prefill.
    step: bool,
}

impl<'p, T: Real> HeadStates<'p, T> {
    fn new(performer: &'p Performer, n: usize) -> Result<Self> {
        let map = performer.cfg.map::<T>(&performer.weights)?;
        let len = favor_core::Stream::<T, AnyFeatureMap<'p, T>, favor_core::Scalar>::buffer_len(
            &map,
            performer.value_dim(),
        )
        .map_err(crate::error::setup)?;
        // `n` is the caller's batch × heads: whichever allocation fails, report the whole
        // state's size, the number the caller can act on.
        let mapped_len = crate::alloc::len("stream state", favor_core::mapped_tokens_len(&map, n))?;
        let head_bytes =
            crate::alloc::bytes_of::<T>(len).and_then(|b| b.checked_add(size_of::<HeadState<T>>()));
        let total = (head_bytes.and_then(|b| b.checked_mul(n)))
            .zip(crate::alloc::bytes_of::<T>(mapped_len))
            .and_then(|(a, b)| a.checked_add(b));
        let fail = |_: Error| Error::Alloc {
            what: "stream state",
            bytes: total,
        };
        // Many small blocks: ask for their total once, or each would succeed until the
        // system runs out (see `alloc::available`).
        if !total.is_some_and(crate::alloc::available) {
            return Err(Error::Alloc {
                what: "stream state",
                bytes: total,
            });
        }
        let mut heads = crate::alloc::try_with_capacity("stream state", n).map_err(fail)?;
        for _ in 0..n {
            heads.push(HeadState {
                buf: crate::alloc::try_zeros("stream state", len).map_err(fail)?,
                tokens: 0,
                log_scale: T::neg_infinity(),
            });
        }
        let mapped = crate::alloc::try_zeros("stream state", mapped_len).map_err(fail)?;
        Ok(Self { map, heads, mapped })
    }

    fn run<E: Element>(
        &mut self,
        p: &Performer,
        io: &StepIo<'_, E>,
        out: &mut [f32],
    ) -> Result<()> {
        p.cfg.with_backend(Run {
            states: self,
            p,
            io,
            out,
        })
    }

    /// favor-core's supported range ([`favor_core::check_range`]) for inputs of these maxima
    /// and `keys` keys in all.
    fn core_range(&self, m: crate::range::Maxima, keys: u64) -> Result<()> {
        let t = |x: f64| <T as favor_core::Float>::from_f64(x);
        favor_core::check_range(&self.map, t(m.q), t(m.k), t(m.v), keys).map_err(|e| {
            let tensor = match e {
                favor_core::Error::OutOfRange { what, .. } => what,
                _ => "input",
            };
            Error::OutOfRange {
                tensor,
                reason: format!("{e}"),
            }
        })
    }

    fn snapshot(&self, p: &Performer, batch: usize, position: u64) -> Result<Vec<u8>> {
        struct Snap<'s, 'p, T> {
            states: &'s HeadStates<'p, T>,
            value_dim: usize,
        }
        impl<T: Real> BackendOp<T> for Snap<'_, '_, T> {
            type Output = Result<Vec<Vec<u8>>>;
            fn run<K: Kernels<T> + Sync + Copy>(self, kernels: &K) -> Result<Vec<Vec<u8>>> {
                let map = &self.states.map;
                self.states
                    .heads
                    .iter()
                    .map(|h| {
                        let mut buf = h.buf.clone();
                        let s = favor_core::Stream::resume(
                            *kernels,
                            map,
                            self.value_dim,
                            &mut buf,
                            h.tokens,
                            h.log_scale,
                        )
                        .map_err(|e| Error::Snapshot(format!("state does not re-attach: {e}")))?;
                        let mut bytes = vec![0u8; s.snapshot_len()];
                        let n = s
                            .snapshot(&mut bytes)
                            .map_err(|e| Error::Snapshot(e.to_string()))?;
                        bytes.truncate(n);
                        Ok(bytes)
                    })
                    .collect()
            }
        }
        let per_head = p.cfg.with_backend(Snap {
            states: self,
            value_dim: p.value_dim(),
        })?;
        let each = per_head.first().map_or(0, Vec::len);
        let mut out = Vec::with_capacity(HEADER + (RECORD + each) * per_head.len() + TRAILER);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&STREAM_SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&(size_of::<T>() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(batch as u64).to_le_bytes());
        out.extend_from_slice(&(p.heads() as u64).to_le_bytes());
        out.extend_from_slice(&(each as u64).to_le_bytes());
        out.extend_from_slice(&position.to_le_bytes());
        for (i, h) in per_head.iter().enumerate() {
            // Indices as u32: a stream of more than 2³² heads could not be allocated.
            out.extend_from_slice(&((i / p.heads()) as u32).to_le_bytes());
            out.extend_from_slice(&((i % p.heads()) as u32).to_le_bytes());
            out.extend_from_slice(h);
        }
        let crc = favor_core::crc32(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Restores every head; returns the tokens fed.
    fn restore(&mut self, p: &Performer, batch: usize, bytes: &[u8]) -> Result<u64> {
        let bad = |s: &str| Err(Error::Snapshot(s.to_string()));
        let Some(header) = bytes.get(..HEADER) else {
            return bad("shorter than its header");
        };
        let u32_at =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[i..i + 8]);
            u64::from_le_bytes(b)
        };
        if header[..4] != MAGIC {
            return bad("not a favor-tensor stream snapshot");
        }
        let version = u32_at(4);
        if version != 1 && version != STREAM_SNAPSHOT_VERSION {
            return Err(Error::Snapshot(format!(
                "unsupported format version {version} (this build reads 1 and {STREAM_SNAPSHOT_VERSION})"
            )));
        }
        let (record, trailer) = if version == 1 {
            (0, 0)
        } else {
            (RECORD, TRAILER)
        };
        let each = usize::try_from(u64_at(32)).unwrap_or(usize::MAX);
        let n = usize::try_from(u64_at(16))
            .ok()
            .zip(usize::try_from(u64_at(24)).ok())
            .and_then(|(b, h)| b.checked_mul(h));
        let implied = each
            .checked_add(record)
            .zip(n)
            .and_then(|(r, n)| r.checked_mul(n))
            .and_then(|x| x.checked_add(HEADER + trailer));
        if implied != Some(bytes.len()) || each == 0 {
            return bad("length disagrees with its header (truncated or padded)");
        }
        if version != 1 {
            let body = bytes.len() - TRAILER;
            let stored = u32::from_le_bytes(bytes[body..].try_into().unwrap_or([0; 4]));
            if favor_core::crc32(&bytes[..body]) != stored {
                return bad("checksum mismatch: the bytes are corrupted");
            }
        }
        if u32_at(8) != size_of::<T>() as u32 {
            return bad("written with another precision");
        }
        if u32_at(12) != 0 {
            return bad("reserved header field is not zero");
        }
        if u64_at(16) != batch as u64 || u64_at(24) != p.heads() as u64 {
            return Err(Error::Snapshot(format!(
                "written for batch {} × {} heads, this stream has {batch} × {}",
                u64_at(16),
                u64_at(24),
                p.heads()
            )));
        }
        let end = bytes.len() - trailer;
        let records: Vec<&[u8]> = bytes[HEADER..end].chunks_exact(record + each).collect();
        for (i, r) in records.iter().enumerate() {
            if version == 1 {
                break;
            }
            let (b, h) = (
                u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as usize,
                u32::from_le_bytes([r[4], r[5], r[6], r[7]]) as usize,
            );
            if (b, h) != (i / p.heads(), i % p.heads()) {
                return Err(Error::Snapshot(format!(
                    "record {i} holds batch {b}, head {h}, not batch {}, head {}: heads reordered",
                    i / p.heads(),
                    i % p.heads()
                )));
            }
        }
        let body: Vec<&[u8]> = records.iter().map(|r| &r[record..]).collect();
        struct Load<'s, 'p, 'b, T> {
            states: &'s HeadStates<'p, T>,
            value_dim: usize,
            body: Vec<&'b [u8]>,
            heads: usize,
        }
        impl<T: Real> BackendOp<T> for Load<'_, '_, '_, T> {
            type Output = Result<Vec<HeadState<T>>>;
            fn run<K: Kernels<T> + Sync + Copy>(self, kernels: &K) -> Result<Vec<HeadState<T>>> {
                let map = &self.states.map;
                self.body
                    .iter()
                    .enumerate()
                    .map(|(i, chunk)| {
                        let mut buf = vec![T::zero(); self.states.heads[i].buf.len()];
                        let mut s =
                            favor_core::Stream::new(*kernels, map, self.value_dim, &mut buf)
                                .map_err(crate::error::setup)?;
                        s.restore(chunk).map_err(|e| {
                            Error::Snapshot(format!(
                                "batch {}, head {}: {e}",
                                i / self.heads,
                                i % self.heads
                            ))
                        })?;
                        // Outputs are f32: a (valid f64) state whose answers can exceed
                        // f32 cannot come from values this layer accepts. With a positive map
                        // any output is a convex combination of the ratios Sᵢⱼ/zᵢ; other maps
                        // (trigonometric: z may be ≤ 0) give no such bound to check.
                        let st = s.state();
                        let limit = f64::from(f32::MAX);
                        let dv = self.value_dim;
                        let positive = favor_core::FeatureMap::is_positive(map);
                        // z may underflow (to 0) where S does not: allow one subnormal of z.
                        let sub = f64::from(f32::MIN_POSITIVE) * f64::from(f32::EPSILON);
                        let at = |i, j| st.entry(i, j).unwrap_or(0.0);
                        let too_big = positive
                            && (0..st.features()).any(|i| {
                                let z = at(i, None);
                                (0..dv).any(|j| at(i, Some(j)).abs() > (z + sub) * limit)
                            });
                        if too_big {
                            return Err(Error::Snapshot(format!(
                                "batch {}, head {}: state values beyond the f32 output range",
                                i / self.heads,
                                i % self.heads
                            )));
                        }
                        let (tokens, log_scale) = (s.tokens(), st.log_scale());
                        Ok(HeadState {
                            buf,
                            tokens,
                            log_scale,
                        })
                    })
                    .collect()
            }
        }
        let loaded = p.cfg.with_backend(Load {
            states: self,
            value_dim: p.value_dim(),
            body,
            heads: p.heads(),
        })?;
        // Absent keys make a head's own count lower than the tokens fed, never higher.
        let position = u64_at(40);
        if position == u64::MAX || loaded.iter().any(|h| h.tokens > position) {
            return bad("token count disagrees with the heads' states");
        }
        self.heads = loaded;
        Ok(position)
    }
}

/// One prefill or step over every head, with one backend.
struct Run<'s, 'p, 'a, 'o, E, T> {
    states: &'s mut HeadStates<'p, T>,
    p: &'s Performer,
    io: &'s StepIo<'a, E>,
    out: &'o mut [f32],
}

impl<E: Element, T: Real> BackendOp<T> for Run<'_, '_, '_, '_, E, T> {
    type Output = Result<()>;
    fn run<K: Kernels<T> + Sync + Copy>(self, kernels: &K) -> Result<()> {
        let (io, cfg) = (self.io, &self.p.cfg);
        let (dv, len) = (cfg.value_dim, io.len);
        let map = &self.states.map;
        let m = map.feature_dim();
        let heads = &mut self.states.heads;
        let core = |i: usize, source| Error::Core {
            batch: i / cfg.heads,
            head: i % cfg.heads,
            source,
        };
        if io.step {
            // Every head shares the one projection: map all keys and queries in one GEMM (W
            // read once per token, not once per head), then step each head's state. A step
            // is a few microseconds per head: less than handing it to a pool.
            let n = heads.len();
            let (mut tq, mut tk, mut tv) = (Vec::new(), Vec::new(), Vec::new());
            let q = widen(io.q.data(), &mut tq)?;
            let k = widen(io.k.data(), &mut tk)?;
            let v = widen(io.v.data(), &mut tv)?;
            // Sized by the first head's `narrow_target`, before any state changes.
            let mut wide = Vec::new();
            let mapped =
                favor_core::MappedTokens::new(kernels, map, n, q, k, &mut self.states.mapped)
                    .map_err(|e| match e {
                        // Token i is (batch, head) = (i / H, i % H), its row 0.
                        favor_core::Error::NonFinite { what, row } => {
                            core(row, favor_core::Error::NonFinite { what, row: 0 })
                        }
                        // Unreachable: `check` ran favor-core's range check on every
                        // head's maxima before anything ran.
                        other => core(0, other),
                    })?;
            for (i, (h, o)) in heads.iter_mut().zip(self.out.chunks_mut(dv)).enumerate() {
                let out_t = narrow_target(o, &mut wide)?;
                let (tokens, log_scale) = favor_core::Stream::resume(
                    *kernels,
                    map,
                    dv,
                    &mut h.buf,
                    h.tokens,
                    h.log_scale,
                )
                .and_then(|mut s| {
                    s.step_mapped(&mapped, i, &v[i * dv..(i + 1) * dv], out_t)?;
                    Ok((s.tokens(), s.state().log_scale()))
                })
                .map_err(|e| core(i, e))?;
                h.tokens = tokens;
                h.log_scale = log_scale;
                narrow_back(&wide, o);
            }
            return Ok(());
        }
        // A prefill. Chunks longer than the call would only size scratch for absent rows.
        let chunk = cfg.chunk.min(len);
        let sizes = PrefillSizes {
            input: len * cfg.dim,
            values: len * dv,
            scratch: crate::alloc::len("prefill scratch", favor_core::chunk_scratch_len(m, chunk))?,
        };
        let one = |i: usize,
                   h: &mut HeadState<T>,
                   out: &mut [f32],
                   bufs: &mut PrefillBuffers<T>| {
            let (b, hd) = (i / cfg.heads, i % cfg.heads);
            let q = widen(io.q.head(b, hd), &mut bufs.q)?;
            let k = widen(io.k.head(b, hd), &mut bufs.k)?;
            let v = widen(io.v.head(b, hd), &mut bufs.v)?;
            let out_t = narrow_target(out, &mut bufs.out)?;
            let scratch = &mut bufs.scratch;
            let mut s =
                favor_core::Stream::resume(*kernels, map, dv, &mut h.buf, h.tokens, h.log_scale)
                    .map_err(|e| core(i, e))?;
            s.prefill(q, k, v, len, chunk, out_t, scratch)
                .map_err(|e| core(i, e))?;
            let (tokens, log_scale) = (s.tokens(), s.state().log_scale());
            h.tokens = tokens;
            h.log_scale = log_scale;
            narrow_back(&bufs.out, out);
            Ok(())
        };
        // Every buffer the heads need is allocated before the first head changes, so that
        // running out of memory leaves the stream as it was: one set per head that can run
        // at once.
        let workers = concurrency(cfg.parallel, heads.len());
        let mut pool = crate::alloc::try_with_capacity("prefill scratch", workers)?;
        for _ in 0..workers {
            pool.push(PrefillBuffers::new::<E>(&sizes)?);
        }
        let pool = std::sync::Mutex::new(pool);
        let cells: Vec<std::sync::Mutex<&mut HeadState<T>>> =
            crate::alloc::try_collect("stream state", heads.iter_mut().map(std::sync::Mutex::new))?;
        let results = parallel_map(cfg.parallel, self.out, len * dv, |(i, o)| {
            let taken = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            // The pool holds one set per concurrent head; allocating here is only a fallback.
            let mut bufs = match taken {
                Some(b) => b,
                None => PrefillBuffers::new::<E>(&sizes)?,
            };
            let mut h = cells[i].lock().unwrap_or_else(|e| e.into_inner());
            let r = one(i, &mut h, o, &mut bufs);
            pool.lock().unwrap_or_else(|e| e.into_inner()).push(bufs);
            r
        });
        results.into_iter().collect()
    }
}

/// Element counts of one head's prefill buffers.
struct PrefillSizes {
    /// A head's queries (or keys): `len × d`.
    input: usize,
    /// A head's values or outputs: `len × dv`.
    values: usize,
    /// favor-core's chunk scratch.
    scratch: usize,
}

/// One head's prefill buffers: inputs converted to `T` (empty when they already are `T`),
/// the output in `T` (empty for f32) and favor-core's scratch.
struct PrefillBuffers<T> {
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    out: Vec<T>,
    scratch: Vec<T>,
}

impl<T: Real> PrefillBuffers<T> {
    fn new<E: Element>(n: &PrefillSizes) -> Result<Self> {
        let what = "prefill scratch";
        let converted = |len: usize| {
            let len = if converts::<E, T>() { len } else { 0 };
            crate::alloc::try_with_capacity(what, len)
        };
        let out = if converts::<f32, T>() { n.values } else { 0 };
        Ok(Self {
            q: converted(n.input)?,
            k: converted(n.input)?,
            v: converted(n.values)?,
            out: crate::alloc::try_with_capacity(what, out)?,
            scratch: crate::alloc::try_zeros(what, n.scratch)?,
        })
    }
}
