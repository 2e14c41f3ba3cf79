//! An owned causal decoding state over candle tensors.

use candle_core::{Device, Result, Storage, Tensor, bail};
use favor_tensor::{Performer, Stream};

use crate::attention::on_cpu;
use crate::dtype::{Float, OnSlices, dispatch, zeros};
use crate::view::Input;

/// Causal attention one token at a time in constant memory: the stream of a causal
/// [`Performer`] (FAVOR+'s prefix state `(S, z)`, or hybrid attention's window and sinks
/// of raw keys plus the prefix state of the keys that left the window) for `batch`
/// sequences, owning its state (`'static + Send`: it outlives the performer and its later
/// redraws). Memory does not grow with the number of tokens ([`memory_bytes`](Self::memory_bytes)).
///
/// Each [`step`](Self::step) gives the same output as causal attention over every token so
/// far (up to f32 rounding in the order of sums).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use favor_candle::{PerformerAttention, Performer};
/// # fn main() -> candle_core::Result<()> {
/// let (h, d) = (4, 16);
/// let p = Performer::builder(d).heads(h).features(32).causal(true).window(8).sinks(1);
/// let attn = PerformerAttention::new(p.build().map_err(candle_core::Error::wrap)?);
/// let mut state = attn.decode_state(1)?;
/// for _ in 0..20 {
///     let x = Tensor::randn(0f32, 0.5, (1, 1, h, d), &Device::Cpu)?; // [B, 1, H, D]
///     let out = state.step(&x, &x, &x)?;
///     assert_eq!(out.dims(), &[1, 1, h, d]);
/// }
/// assert_eq!(state.tokens(), 20);
/// # Ok(())
/// # }
/// ```
pub struct DecodeState {
    stream: Stream,
}

impl std::fmt::Debug for DecodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeState")
            .field("batch", &self.stream.batch())
            .field("tokens", &self.stream.tokens())
            .field("memory_bytes", &self.stream.memory_bytes())
            .finish()
    }
}

impl DecodeState {
    /// An empty state for `batch` sequences of `performer`'s causal attention.
    pub fn new(performer: &Performer, batch: usize) -> Result<Self> {
        if !performer.is_causal() {
            bail!(
                "favor attention: a decode state needs a causal performer (builder .causal(true))"
            );
        }
        Ok(Self {
            stream: performer.stream(batch).map_err(crate::wrap)?,
        })
    }

    /// One token: q `[B, 1, H, D]`, k `[B, 1, Hkv, D]`, v `[B, 1, Hkv, Dv]` (one dtype of
    /// f32, f64, f16, bf16, on the CPU) give its output `[B, 1, H, Dv]` in that dtype. On
    /// error the state is unchanged.
    pub fn step(&mut self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        on_cpu(q, k, v)?;
        let [b, s, h, _] = dims4("q", q)?;
        if s != 1 {
            bail!("favor attention: a step takes one token, q is [{b}, {s}, {h}, _]; use prefill");
        }
        let dv = self.value_dim(v)?;
        let (sq, lq) = q.storage_and_layout();
        let (sk, lk) = k.storage_and_layout();
        let (sv, lv) = v.storage_and_layout();
        let (Storage::Cpu(cq), Storage::Cpu(ck), Storage::Cpu(cv)) = (&*sq, &*sk, &*sv) else {
            bail!("favor attention: q, k and v must be CPU tensors");
        };
        let step = Step {
            stream: &mut self.stream,
            layouts: [lq, lk, lv],
            out: [b, 1, h, dv],
        };
        dispatch(step, cq, ck, cv)
    }

    /// Absorbs `S` tokens at once (q `[B, S, H, D]`, k and v likewise) through the chunked
    /// causal path and returns their outputs `[B, S, H, Dv]`, as causal attention over them
    /// from this state. On error the state is unchanged.
    pub fn prefill(&mut self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        on_cpu(q, k, v)?;
        let [b, s, h, _] = dims4("q", q)?;
        let dv = self.value_dim(v)?;
        let (sq, lq) = q.storage_and_layout();
        let (sk, lk) = k.storage_and_layout();
        let (sv, lv) = v.storage_and_layout();
        let (Storage::Cpu(cq), Storage::Cpu(ck), Storage::Cpu(cv)) = (&*sq, &*sk, &*sv) else {
            bail!("favor attention: q, k and v must be CPU tensors");
        };
        let prefill = Prefill {
            stream: &mut self.stream,
            layouts: [lq, lk, lv],
            out: [b, h, s, dv],
        };
        // favor's output is [B, H, S, Dv] in q's dtype (rounded once from the compute
        // precision): back to candle's [B, S, H, Dv].
        dispatch(prefill, cq, ck, cv)?.transpose(1, 2)?.contiguous()
    }

    /// Tokens absorbed since the state was made or reset.
    pub fn tokens(&self) -> u64 {
        self.stream.tokens()
    }

    /// The state's memory in bytes: fixed when the state is made, whatever the number of tokens.
    pub fn memory_bytes(&self) -> usize {
        self.stream.memory_bytes()
    }

    /// Forgets every token (the projection stays).
    pub fn reset(&mut self) {
        self.stream.reset();
    }

    /// The state as bytes (favor-tensor's checked stream snapshot format).
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        self.stream.snapshot().map_err(crate::wrap)
    }

    /// Restores a [`snapshot`](Self::snapshot) of a state of the same configuration; a
    /// malformed or foreign one is an error and leaves this state unchanged.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.restore(bytes).map_err(crate::wrap)
    }

    /// The favor-tensor stream underneath.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    fn value_dim(&self, v: &Tensor) -> Result<usize> {
        Ok(dims4("v", v)?[3])
    }
}

fn dims4(name: &str, t: &Tensor) -> Result<[usize; 4]> {
    match *t.dims() {
        [b, s, h, d] => Ok([b, s, h, d]),
        ref dims => bail!("favor attention: {name} must be [batch, seq, heads, dim], got {dims:?}"),
    }
}

struct Step<'s, 'l> {
    stream: &'s mut Stream,
    layouts: [&'l candle_core::Layout; 3],
    out: [usize; 4],
}

impl OnSlices for Step<'_, '_> {
    type Output = Tensor;

    fn run<E: Float>(self, q: &[E], k: &[E], v: &[E]) -> Result<Self::Output> {
        let [lq, lk, lv] = self.layouts;
        let (q, k, v) = (
            Input::new("q", q, lq)?,
            Input::new("k", k, lk)?,
            Input::new("v", v, lv)?,
        );
        let mut out = zeros::<E>(self.out.iter().product())?;
        // [B, H, 1, Dv] and [B, 1, H, Dv] are the same memory.
        self.stream
            .step_into(q.view()?, k.view()?, v.view()?, &mut out)
            .map_err(crate::wrap)?;
        Tensor::from_vec(out, self.out.to_vec(), &Device::Cpu)
    }
}

struct Prefill<'s, 'l> {
    stream: &'s mut Stream,
    layouts: [&'l candle_core::Layout; 3],
    /// The output's shape in favor's order, `[B, H, S, Dv]`.
    out: [usize; 4],
}

impl OnSlices for Prefill<'_, '_> {
    type Output = Tensor;

    fn run<E: Float>(self, q: &[E], k: &[E], v: &[E]) -> Result<Tensor> {
        let [lq, lk, lv] = self.layouts;
        let (q, k, v) = (
            Input::new("q", q, lq)?,
            Input::new("k", k, lk)?,
            Input::new("v", v, lv)?,
        );
        let mut out = zeros::<E>(self.out.iter().product())?;
        self.stream
            .prefill_into(q.view()?, k.view()?, v.view()?, &mut out)
            .map_err(crate::wrap)?;
        Tensor::from_vec(out, self.out.to_vec(), &Device::Cpu)
    }
}
