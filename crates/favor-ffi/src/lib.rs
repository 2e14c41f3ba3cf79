//! A C ABI for favor: FAVOR+ attention layers ([`FavorPerformer`]), their causal decoding
//! streams ([`FavorStream`]) with snapshots, in f32 and f16, for hosts in C, C++, Swift,
//! Kotlin (JNI) or JavaScript (wasm). The header is `include/favor.h`, generated from this
//! file by cbindgen (the test `header_is_current` fails when it is stale).
//!
//! Conventions, for every entry point:
//! - The return value is a [`FavorStatus`]; `FAVOR_OK` is 0. On any other status nothing
//!   changed: no stream state, no output element (outputs are computed aside and copied out
//!   only on success).
//! - [`favor_last_error`] describes the last call on this thread in one line (empty after
//!   a success); the pointer is valid until the next call on this thread.
//! - Null pointers give `FAVOR_ERR_NULL`; misaligned ones and sizes whose element counts
//!   overflow give `FAVOR_ERR_SHAPE`. Buffers must hold the elements their shape says
//!   (tensors are contiguous `[batch, heads, len, dim]`, row-major); the library cannot
//!   check a buffer's length from a pointer.
//! - A panic inside the library is caught and returned as `FAVOR_ERR_PANIC` (never
//!   unwinds into C); a stream it interrupted refuses further steps until reset or
//!   restored. Where panics abort (wasm32-unknown-unknown), a panic traps the module
//!   instead: a JavaScript host then discards the instance.
//! - A `FavorPerformer` may be used from several threads at once (`forward` takes it
//!   `const`); a `FavorStream` from one thread at a time. A stream owns what it needs: it
//!   keeps working after its performer is freed.
//! - Calls need little of the calling thread's stack: buffers live on the heap, and the
//!   GEMM's packed blocks on the stack take 56 KiB. A forward runs on a 128 KiB thread
//!   (musl's default; tested from C) in an optimised build.
//!
//! This crate is the one outside favor-simd with `unsafe`: a C ABI hands over raw pointers.
//! Each block says why it is sound; all of them are reads of caller buffers as slices, one
//! copy into a caller buffer, and the boxing of the two handle types.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use favor_tensor::{
    Compat, Element, Error, Kernel, Performer, Precision, Stream, TensorView, TensorViewMut, f16,
};

/// A FAVOR+ attention layer: its configuration and projection. Free with
/// [`favor_performer_free`].
pub struct FavorPerformer {
    inner: Performer,
}

/// A causal decoding stream over `batch` sequences: constant-size state per (batch, head),
/// fed a prefill block or one token at a time. Free with [`favor_stream_free`].
pub struct FavorStream {
    inner: Stream,
    /// (heads, kv_heads, head_dim, value_dim) of the performer it came from.
    dims: Dims,
    /// Set while a call changes the state: still set afterwards only if a panic interrupted
    /// it, when heads may have advanced unevenly. Such a stream refuses to go on
    /// (`FAVOR_ERR_PANIC`) until a reset or a restore.
    poisoned: bool,
}

impl FavorStream {
    /// Runs `f`, which changes the state, guarding against a panic half-way.
    fn changing<R>(
        &mut self,
        f: impl FnOnce(&mut Stream) -> favor_tensor::Result<R>,
    ) -> Result<R, Failure> {
        if self.poisoned {
            return Err(Failure::new(
                FAVOR_ERR_PANIC,
                "an earlier call on this stream panicked part-way: reset or restore it first",
            ));
        }
        self.poisoned = true;
        let r = f(&mut self.inner);
        self.poisoned = false;
        Ok(r?)
    }
}

/// What every call returns. `FAVOR_OK` (0) is success; on any other status nothing changed
/// and [`favor_last_error`] says what went wrong.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FavorStatus {
    /// Success.
    FAVOR_OK = 0,
    /// A required pointer was null.
    FAVOR_ERR_NULL,
    /// A size or shape does not fit (zero or overflowing dimensions, a short snapshot
    /// buffer, a misaligned pointer).
    FAVOR_ERR_SHAPE,
    /// An input holds NaN or an infinity.
    FAVOR_ERR_NONFINITE,
    /// Finite inputs outside the supported range (large enough to overflow a projection or
    /// a sum).
    FAVOR_ERR_RANGE,
    /// An invalid configuration (a zero or unknown field, an unsupported combination).
    FAVOR_ERR_CONFIG,
    /// Snapshot bytes that are corrupted, truncated, or written by another layer.
    FAVOR_ERR_SNAPSHOT,
    /// Memory for a buffer could not be allocated.
    FAVOR_ERR_ALLOC,
    /// The library panicked (a bug: please report it with favor_last_error's text).
    FAVOR_ERR_PANIC,
}
use FavorStatus::*;

/// `FavorConfig::kernel`: positive random features for softmax (FAVOR+; the default).
pub const FAVOR_KERNEL_SOFTMAX: u32 = 0;
/// `FavorConfig::kernel`: ReLU generalized attention.
pub const FAVOR_KERNEL_RELU: u32 = 1;
/// `FavorConfig::kernel`: ELU + 1 generalized attention.
pub const FAVOR_KERNEL_ELU_PLUS_ONE: u32 = 2;
/// `FavorConfig::kernel`: hyperbolic positive features for softmax.
pub const FAVOR_KERNEL_HYPERBOLIC: u32 = 3;

/// `FavorConfig::precision`: accumulate in f32 (the default).
pub const FAVOR_PRECISION_F32: u32 = 0;
/// `FavorConfig::precision`: accumulate in f64.
pub const FAVOR_PRECISION_F64: u32 = 1;

/// `FavorConfig::compat`: favor's own definition (the default).
pub const FAVOR_COMPAT_NONE: u32 = 0;
/// `FavorConfig::compat`: performer-pytorch's conventions (for weights trained with it).
pub const FAVOR_COMPAT_PERFORMER_PYTORCH: u32 = 1;
/// `FavorConfig::compat`: google-research JAX `fast_attention`'s conventions.
pub const FAVOR_COMPAT_GOOGLE_JAX: u32 = 2;

/// `FavorConfig::window` for no exact window (plain FAVOR+; the default).
pub const FAVOR_NO_WINDOW: i32 = -1;

/// A layer's configuration: fill it with [`favor_config_default`], then set what differs.
/// Later versions may add fields at the end: `struct_size` (set by `favor_config_default`)
/// tells the library how many bytes the caller's struct has, so a program built against an
/// older header keeps working (the fields it lacks take their defaults).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FavorConfig {
    /// Query/key dimension d per head (default 64).
    pub head_dim: u32,
    /// Query heads H (default 1).
    pub heads: u32,
    /// Random features m (default 256).
    pub features: u32,
    /// Seed of the random projection (default 0): the same seed gives the same layer.
    pub seed: u64,
    /// Non-zero: causal attention, query i sees keys 0..=i (default 0). Streams need it.
    pub causal: u32,
    /// `sizeof(FavorConfig)` as the caller compiled it: set by `favor_config_default`,
    /// leave it as it is.
    pub struct_size: u32,
    /// Key/value heads (grouped-query attention): 0 means `heads` (default 0).
    pub kv_heads: u32,
    /// Value dimension dv: 0 means `head_dim` (default 0).
    pub value_dim: u32,
    /// One of the `FAVOR_KERNEL_*` constants (default softmax).
    pub kernel: u32,
    /// Hybrid attention: keys within `window` positions of a query get exact softmax
    /// weights; `FAVOR_NO_WINDOW` (−1, the default) for none.
    pub window: i32,
    /// Hybrid attention: positions 0..sinks are exact for every query (default 0). Sinks with
    /// `FAVOR_NO_WINDOW` make the layer hybrid with window 0 (each query's own position
    /// and the sinks exact).
    pub sinks: u32,
    /// One of the `FAVOR_PRECISION_*` constants (default f32).
    pub precision: u32,
    /// One of the `FAVOR_COMPAT_*` constants (default none).
    pub compat: u32,
    /// Non-zero: heads run in parallel on a thread pool (default 1 where the library was
    /// built with one, its `parallel` feature; 0 otherwise, as for wasm).
    pub parallel: u32,
}

#[derive(Debug, Clone, Copy)]
struct Dims {
    heads: usize,
    kv_heads: usize,
    dim: usize,
    value_dim: usize,
}

impl Dims {
    fn of(p: &Performer) -> Self {
        Self {
            heads: p.heads(),
            kv_heads: p.kv_heads(),
            dim: p.dim(),
            value_dim: p.value_dim(),
        }
    }

    /// Element counts of q, k, v and the output for `batch` sequences of `len` tokens.
    fn counts(self, batch: usize, len: usize) -> Result<[usize; 4], Failure> {
        let n = |heads: usize, width: usize| {
            [batch, heads, len, width]
                .into_iter()
                .try_fold(1usize, usize::checked_mul)
                .ok_or_else(|| Failure::shape("the tensor sizes overflow size_t"))
        };
        Ok([
            n(self.heads, self.dim)?,
            n(self.kv_heads, self.dim)?,
            n(self.kv_heads, self.value_dim)?,
            n(self.heads, self.value_dim)?,
        ])
    }
}

/// A failed call: its status and one line for [`favor_last_error`].
struct Failure {
    status: FavorStatus,
    message: String,
}

impl Failure {
    fn new(status: FavorStatus, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    fn null(what: &str) -> Self {
        Self::new(FAVOR_ERR_NULL, format!("{what} is null"))
    }
    fn shape(message: impl Into<String>) -> Self {
        Self::new(FAVOR_ERR_SHAPE, message)
    }
    fn config(message: impl Into<String>) -> Self {
        Self::new(FAVOR_ERR_CONFIG, message)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Shape { .. } | Error::DataLength { .. } => FAVOR_ERR_SHAPE,
            Error::Config(_) | Error::Map(_) => FAVOR_ERR_CONFIG,
            Error::OutOfRange { .. } => FAVOR_ERR_RANGE,
            Error::Core { source, .. } => match source {
                favor_core::Error::NonFinite { .. } => FAVOR_ERR_NONFINITE,
                favor_core::Error::OutOfRange { .. } => FAVOR_ERR_RANGE,
                favor_core::Error::Snapshot(_) => FAVOR_ERR_SNAPSHOT,
                _ => FAVOR_ERR_SHAPE,
            },
            Error::Snapshot(_) => FAVOR_ERR_SNAPSHOT,
            Error::Alloc { .. } => FAVOR_ERR_ALLOC,
            _ => FAVOR_ERR_CONFIG,
        };
        Self::new(status, e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // An interior NUL would cut the C string short: replace it rather than lose the text.
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // During thread teardown the slot may be gone: the status still tells the caller.
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = text);
}

/// Runs `f` as an entry point: its failure or panic becomes a status and the thread's last
/// error; success clears it.
fn entry(f: impl FnOnce() -> Result<(), Failure>) -> FavorStatus {
    let outcome = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown payload".into());
        Err(Failure::new(
            FAVOR_ERR_PANIC,
            format!("favor panicked (a bug; please report it): {what}"),
        ))
    });
    match outcome {
        Ok(()) => {
            set_last_error("");
            FAVOR_OK
        }
        Err(f) => {
            set_last_error(&f.message);
            f.status
        }
    }
}

/// The caller's buffer of `len` elements at `ptr` as a slice.
///
/// # Safety
/// `ptr` must be null or point to `len` initialised elements that stay valid and unwritten
/// for `'a` (the entry points' contract).
unsafe fn input<'a, E>(ptr: *const E, len: usize, what: &str) -> Result<&'a [E], Failure> {
    check_buffer(ptr, len, what)?;
    // SAFETY: non-null, aligned and at most isize::MAX bytes (checked above); the caller
    // guarantees `len` initialised elements, unwritten for 'a.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Checks that a caller buffer of `len` elements at `ptr` can be a slice: non-null,
/// aligned, and not more than isize::MAX bytes.
fn check_buffer<E>(ptr: *const E, len: usize, what: &str) -> Result<(), Failure> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    if ptr.cast::<u8>().align_offset(align_of::<E>()) != 0 {
        return Err(Failure::shape(format!("{what} is misaligned")));
    }
    if len
        .checked_mul(size_of::<E>())
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(Failure::shape(format!(
            "{what}: {len} elements are too many"
        )));
    }
    Ok(())
}

/// Copies `src` into the caller's `out` (checked by [`check_buffer`] for `src.len()`
/// elements).
///
/// # Safety
/// `out` must point to `src.len()` writable elements (the entry points' contract). It may
/// alias the call's inputs: they are no longer read.
unsafe fn copy_out<E: Copy>(src: &[E], out: *mut E) {
    // SAFETY: `src` is this library's own allocation, so it cannot overlap `out`; `out` is
    // aligned (checked) and holds `src.len()` writable elements (caller contract).
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), out, src.len()) }
}

/// The element types of the ABI: f32, and f16 as its IEEE binary16 bits (`uint16_t`).
trait Abi: bytemuck::Pod {
    /// The same bits as favor-tensor's element.
    type Elem: Element;
}
impl Abi for f32 {
    type Elem = f32;
}
impl Abi for u16 {
    type Elem = f16;
}

/// q, k, v of one call, read from the caller's buffers with the element counts `n`.
///
/// # Safety
/// The pointers must satisfy [`input`]'s contract for their counts.
unsafe fn qkv<'a, A: Abi>(
    (q, k, v): (*const A, *const A, *const A),
    [nq, nk, nv]: [usize; 3],
) -> Result<[&'a [A::Elem]; 3], Failure> {
    // SAFETY: forwarded from the caller.
    let (q, k, v) = unsafe { (input(q, nq, "q")?, input(k, nk, "k")?, input(v, nv, "v")?) };
    Ok([q, k, v].map(bytemuck::cast_slice))
}

/// `[batch, heads, len, width]` views of one call's q, k, v.
fn views<E: Element>(
    d: Dims,
    batch: usize,
    len: usize,
    [q, k, v]: [&[E]; 3],
) -> Result<[TensorView<'_, E>; 3], Failure> {
    Ok([
        TensorView::new([batch, d.heads, len, d.dim], q)?,
        TensorView::new([batch, d.kv_heads, len, d.dim], k)?,
        TensorView::new([batch, d.kv_heads, len, d.value_dim], v)?,
    ])
}

/// Writes the defaults into `*cfg` (a head_dim-64 single-head softmax layer with m = 256,
/// seed 0, bidirectional, f32): start every configuration from it.
///
/// # Safety
/// `cfg` must be null (ignored) or point to a writable `FavorConfig`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn favor_config_default(cfg: *mut FavorConfig) {
    if cfg.is_null() {
        return;
    }
    // SAFETY: non-null, and the caller guarantees a writable FavorConfig (write, not
    // assignment: the memory may be uninitialised; unaligned: nothing checks it here).
    unsafe { cfg.write_unaligned(defaults()) }
}

/// `sizeof(FavorConfig)` of this library (for hosts that allocate it themselves, as
/// JavaScript does in a wasm module's memory).
#[unsafe(no_mangle)]
pub extern "C" fn favor_config_size() -> usize {
    size_of::<FavorConfig>()
}

/// The defaults [`favor_config_default`] writes.
fn defaults() -> FavorConfig {
    FavorConfig {
        head_dim: 64,
        heads: 1,
        features: favor_tensor::DEFAULT_FEATURES as u32,
        seed: 0,
        causal: 0,
        struct_size: size_of::<FavorConfig>() as u32,
        kv_heads: 0,
        value_dim: 0,
        kernel: FAVOR_KERNEL_SOFTMAX,
        window: FAVOR_NO_WINDOW,
        sinks: 0,
        precision: FAVOR_PRECISION_F32,
        compat: FAVOR_COMPAT_NONE,
        parallel: u32::from(cfg!(feature = "parallel")),
    }
}

/// Bytes of `FavorConfig` up to and including `struct_size`: every version has them.
const CONFIG_PREFIX: usize = std::mem::offset_of!(FavorConfig, struct_size) + 4;

/// The caller's configuration of `struct_size` bytes, over the defaults for any field its
/// version lacks.
///
/// # Safety
/// `cfg` must be non-null and point to `struct_size` readable bytes (at least the prefix).
unsafe fn read_config(cfg: *const FavorConfig) -> Result<FavorConfig, Failure> {
    let bytes = cfg.cast::<u8>();
    let mut size = [0u8; 4];
    // SAFETY: the prefix (through struct_size) is readable (caller contract); byte copies
    // need no alignment.
    unsafe {
        let at = std::mem::offset_of!(FavorConfig, struct_size);
        std::ptr::copy_nonoverlapping(bytes.add(at), size.as_mut_ptr(), 4);
    }
    let size = u32::from_ne_bytes(size) as usize;
    if size < CONFIG_PREFIX {
        return Err(Failure::config(format!(
            "struct_size {size}: start the FavorConfig with favor_config_default"
        )));
    }
    let mut out = defaults();
    let n = size.min(size_of::<FavorConfig>());
    // SAFETY: the caller's struct has `size` ≥ n readable bytes; `out` is a FavorConfig of
    // size_of::<FavorConfig>() ≥ n bytes; every bit pattern is a valid FavorConfig (all
    // fields are integers); byte copies need no alignment; distinct objects.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes, (&raw mut out).cast::<u8>(), n);
    }
    out.struct_size = size_of::<FavorConfig>() as u32;
    Ok(out)
}

/// Builds a layer from `*cfg` into `*out` (free it with [`favor_performer_free`]).
///
/// # Safety
/// `cfg` must point to a `FavorConfig` (from [`favor_config_default`]); `out` to a
/// writable `FavorPerformer *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn favor_performer_new(
    cfg: *const FavorConfig,
    out: *mut *mut FavorPerformer,
) -> FavorStatus {
    // SAFETY: forwarded from the caller.
    entry(|| unsafe { new_performer(cfg, out, |_, b| Ok(b)) })
}

/// [`favor_performer_new`] over a given projection W instead of a seeded draw: `rows ×
/// head_dim` floats, row-major, used exactly as given (no scaling) and copied, so `w` may be
/// freed after the call. For weights a model was trained with, e.g. a performer-pytorch
/// layer's `projection_matrix` (`favor import` writes it as `.npy`). `cfg->features` must
/// equal `rows` (FAVOR_ERR_CONFIG otherwise); `cfg->seed` is not used.
///
/// # Safety
/// As [`favor_performer_new`]; `w` must point to `rows × cfg->head_dim` readable floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn favor_performer_new_with_projection(
    cfg: *const FavorConfig,
    w: *const f32,
    rows: usize,
    out: *mut *mut FavorPerformer,
) -> FavorStatus {
    // SAFETY: forwarded from the caller.
    entry(|| unsafe {
        new_performer(cfg, out, |cfg, b| {
            let n = rows
                .checked_mul(cfg.head_dim as usize)
                .ok_or_else(|| Failure::shape("w: rows × head_dim overflows size_t"))?;
            // SAFETY: the caller guarantees `rows × head_dim` readable floats at `w`.
            let w = input(w, n, "w")?;
            Ok(b.projection_matrix(rows, w))
        })
    })
}

/// Reads `*cfg`, lets `with` add to its builder, builds and writes the handle to `*out`.
///
/// # Safety
/// As [`favor_performer_new`].
unsafe fn new_performer(
    cfg: *const FavorConfig,
    out: *mut *mut FavorPerformer,
    with: impl FnOnce(
        &FavorConfig,
        favor_tensor::PerformerBuilder,
    ) -> Result<favor_tensor::PerformerBuilder, Failure>,
) -> Result<(), Failure> {
    check_buffer(out.cast_const(), 1, "out")?;
    if cfg.is_null() {
        return Err(Failure::null("cfg"));
    }
    // SAFETY: non-null; the caller guarantees a FavorConfig of its struct_size.
    let cfg = unsafe { read_config(cfg)? };
    let inner = with(&cfg, builder(&cfg)?)?.build()?;
    let handle = Box::into_raw(Box::new(FavorPerformer { inner }));
    // SAFETY: `out` is non-null, aligned (checked) and writable (caller contract).
    unsafe { out.write(handle) };
    Ok(())
}

/// favor-tensor's builder for a C configuration, every field checked.
fn builder(cfg: &FavorConfig) -> Result<favor_tensor::PerformerBuilder, Failure> {
    let dim = cfg.head_dim as usize;
    let mut b = Performer::builder(dim)
        .heads(cfg.heads as usize)
        .features(cfg.features as usize)
        .seed(cfg.seed)
        .causal(cfg.causal != 0)
        .parallel(cfg.parallel != 0);
    if cfg.kv_heads != 0 {
        b = b.kv_heads(cfg.kv_heads as usize);
    }
    if cfg.value_dim != 0 {
        b = b.value_dim(cfg.value_dim as usize);
    }
    b = b.kernel(match cfg.kernel {
        FAVOR_KERNEL_SOFTMAX => Kernel::Softmax,
        FAVOR_KERNEL_RELU => Kernel::Relu,
        FAVOR_KERNEL_ELU_PLUS_ONE => Kernel::EluPlusOne,
        FAVOR_KERNEL_HYPERBOLIC => Kernel::Hyperbolic,
        k => {
            return Err(Failure::config(format!(
                "kernel {k}: not a FAVOR_KERNEL_* value"
            )));
        }
    });
    b = b.precision(match cfg.precision {
        FAVOR_PRECISION_F32 => Precision::F32,
        FAVOR_PRECISION_F64 => Precision::F64,
        p => {
            return Err(Failure::config(format!(
                "precision {p}: not a FAVOR_PRECISION_* value"
            )));
        }
    });
    b = b.compat(match cfg.compat {
        FAVOR_COMPAT_NONE => Compat::None,
        FAVOR_COMPAT_PERFORMER_PYTORCH => Compat::PerformerPytorch,
        FAVOR_COMPAT_GOOGLE_JAX => Compat::GoogleJax,
        c => {
            return Err(Failure::config(format!(
                "compat {c}: not a FAVOR_COMPAT_* value"
            )));
        }
    });
    match cfg.window {
        FAVOR_NO_WINDOW => {}
        w if w < 0 => {
            return Err(Failure::config(format!(
                "window {w}: expected ≥ 0, or FAVOR_NO_WINDOW (-1)"
            )));
        }
        w => b = b.window(w as usize),
    }
    if cfg.sinks != 0 {
        b = b.sinks(cfg.sinks as usize);
    }
    Ok(b)
}

/// Frees a layer (null is ignored). Streams made from it keep working.
///
/// # Safety
/// `p` must be null or a pointer from [`favor_performer_new`], not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn favor_performer_free(p: *mut FavorPerformer) {
    if !p.is_null() {
        // SAFETY: the caller passes a pointer from Box::into_raw in favor_performer_new,
        // freed once.
        drop(unsafe { Box::from_raw(p) });
    }
}

/// The layer for a non-null handle.
///
/// # Safety
/// `p` must be null or a live handle.
unsafe fn performer<'a>(p: *const FavorPerformer) -> Result<&'a Performer, Failure> {
    check_buffer(p, 1, "performer")?;
    // SAFETY: non-null; the caller guarantees a live handle from favor_performer_new.
    Ok(unsafe { &(*p).inner })
}

/// Attention of `batch` sequences of `len` tokens: q `[B, H, L, d]`, k `[B, Hkv, L, d]`,
/// v `[B, Hkv, L, dv]`, out `[B, H, L, dv]`, contiguous. `out` may alias an input.
///
/// # Safety
/// Every pointer must hold the elements its shape says; `p` must be a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn favor_forward_f32(
    p: *const FavorPerformer,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    batch: usize,
    len: usize,
    out: *mut f32,
) -> FavorStatus {
    // SAFETY: forwarded from the caller.
    entry(|| unsafe { forward(p, (q, k, v), batch, len, out) })
}

/// [`favor_forward_f32`] with IEEE binary16 inputs and output (`uint16_t` bits); attention
/// accumulates in the layer's precision, the output is rounded once.
///
/// # Safety
/// As [`favor_forward_f32`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn favor_forward_f16(
    p: *const FavorPerformer,
    q: *const u16,
    k: *const u16,
    v: *const u16,
    batch: usize,
    len: usize,
    out: *mut u16,
) -> FavorStatus {
    // SAFETY: forwarded from the caller.
    entry(|| unsafe { forward(p, (q, k, v), batch, len, out) })
}

/// # Safety
/// As [`favor_forward_f32`].
unsafe fn forward<A: Abi>(
    p: *const FavorPerformer,
    inputs: (*const A, *const A, *const A),
    batch: usize,
    len: usize,
    out: *mut A,
) -> Result<(), Failure> {
    // SAFETY: forwarded from the caller.
    let attn = unsafe { performer(p)? };
    let d = Dims::of(attn);
    let [nq, nk, nv, no] = d.counts(batch, len)?;
    check_buffer(out.cast_const(), no, "out")?;
    // SAFETY: forwarded from the caller.
    let x = unsafe { qkv(inputs, [nq, nk, nv])? };
    let [q, k, v] = views(d, batch, len, x)?;
    let mut result = try_vec::<A::Elem>(no)?;
    let shape = [batch, d.heads, len, d.value_dim];
    attn.forward_into(q, k, v, None, TensorViewMut::new(shape, &mut result)?)?;
    // SAFETY: `out` checked for `no` elements; the caller guarantees them writable.
    unsafe { copy_out(bytemuck::cast_slice::<A::Elem, A>(&result), out) };
    Ok(())
}

/// `n` zeros, or `FAVOR_ERR_ALLOC`.
fn try_vec<E: bytemuck::Zeroable + Clone>(n: usize) -> Result<Vec<E>, Failure> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        Failure::new(
            FAVOR_ERR_ALLOC,
            format!("could not allocate {n} output elements"),
        )
    })?;
    v.resize(n, E::zeroed());
    Ok(v)
}

/// A causal decoding stream for `batch` sequences over the layer's projection (the layer
/// must be causal), into `*out`; free it with [`favor_stream_free`]. It owns its state and
/// shares the projection: freeing the layer does not affect it.
///
/// # Safety
/// `p` must be a live handle; `out` a writable `FavorStream *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn favor_stream_new(
    p: *const FavorPerformer,
    batch: usize,
    out: *mut *mut FavorStream,
) -> FavorStatus {
    entry(|| {
        check_buffer(out.cast_const(), 1, "out")?;
        // SAFETY: forwarded from the caller.
        let attn = unsafe { performer(p)? };
        if !attn.is_causal() {
            return Err(Failure::config(
                "a stream decodes causal attention: build the layer with causal = 1",
            ));
        }
        if batch == 0 {
            return Err(Failure::shape("batch must be positive"));
        }
        let inner = attn.stream(batch)?;
        let handle = Box::into_raw(Box::new(FavorStream {
            inner,
            dims: Dims::of(attn),
            poisoned: false,
        }));
        // SAFETY: `out` is non-null, aligned (checked) and writable (caller contract).
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Frees a stream (null is ignored).
///
/// # Safety
/// `s` must be null or a pointer from [`favor_stream_new`], not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn favor_stream_free(s: *mut FavorStream) {
    if !s.is_null() {
        // SAFETY: the caller passes a pointer from Box::into_raw in favor_stream_new,
        // freed once.
        drop(unsafe { Box::from_raw(s) });
    }
}

/// The stream for a non-null handle.
///
/// # Safety
/// `s` must be null or a live handle, not used by another thread during the call.
unsafe fn stream<'a>(s: *const FavorStream) -> Result<&'a FavorStream, Failure> {
    check_buffer(s, 1, "stream")?;
    // SAFETY: non-null; the caller guarantees a live handle.
    Ok(unsafe { &*s })
}

/// The stream for a non-null handle, mutably.
///
/// # Safety
/// As [`stream`], with no other reference to it during the call.
unsafe fn stream_mut<'a>(s: *mut FavorStream) -> Result<&'a mut FavorStream, Failure> {
    check_buffer(s.cast_const(), 1, "stream")?;
    // SAFETY: non-null; the caller guarantees a live handle used by this call alone.
    Ok(unsafe { &mut *s })
}

/// Absorbs `len` tokens of every sequence at once (q `[B, H, len, d]`, k `[B, Hkv, len, d]`,
/// v `[B, Hkv, len, dv]`) and writes their outputs `[B, H, len, dv]`: the same as causal
/// [`favor_forward_f32`] on those tokens from an empty stream.
///
/// # Safety
/// Every pointer must hold the elements its shape says; `s` must be a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn favor_stream_prefill_f32(
    s: *mut FavorStream,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    len: usize,
    out: *mut f32,
) -> FavorStatus {
    // SAFETY: forwarded from the caller.
    entry(|| unsafe { prefill(s, (q, k, v), len, out) })
}

/// [`favor_stream_prefill_f32`] with binary16 inputs and output.
///
/// # Safety
/// As [`favor_stream_prefill_f32`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn favor_stream_prefill_f16(
    s: *mut FavorStream,
    q: *const u16,
    k: *const u16,
    v: *const u16,
    len: usize,
    out: *mut u16,
) -> FavorStatus {
    // SAFETY: forwarded from the caller.
    entry(|| unsafe { prefill(s, (q, k, v), len, out) })
}

/// # Safety
/// As [`favor_stream_prefill_f32`].
unsafe fn prefill<A: Abi>(
    s: *mut FavorStream,
    inputs: (*const A, *const A, *const A),
    len: usize,
    out: *mut A,
) -> Result<(), Failure> {
    // SAFETY: forwarded from the caller.
    let s = unsafe { stream_mut(s)? };
    let (d, batch) = (s.dims, s.inner.batch());
    let [nq, nk, nv, no] = d.counts(batch, len)?;
    check_buffer(out.cast_const(), no, "out")?;
    // SAFETY: forwarded from the caller.
    let x = unsafe { qkv(inputs, [nq, nk, nv])? };
    let [q, k, v] = views(d, batch, len, x)?;
    // Allocated before the state changes: running out of memory afterwards would leave the
    // stream advanced and the caller without its outputs. Written straight from the compute
    // precision, so an f64 layer's binary16 outputs are rounded once.
    let mut narrow = try_vec::<A::Elem>(no)?;
    s.changing(|st| st.prefill_into(q, k, v, &mut narrow))?;
    // SAFETY: `out` checked for `no` elements; the caller guarantees them writable.
    unsafe { copy_out(bytemuck::cast_slice::<A::Elem, A>(&narrow), out) };
    Ok(())
}

/// One decoding step of every sequence: token t's q `[B, H, 1, d]`, k `[B, Hkv, 1, d]`,
/// v `[B, Hkv, 1, dv]`; writes its output `[B, H, 1, dv]`.
///
/// # Safety
/// As [`favor_stream_prefill_f32`] with len = 1.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn favor_stream_step_f32(
    s: *mut FavorStream,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    out: *mut f32,
) -> FavorStatus {
    // SAFETY: forwarded from the caller.
    entry(|| unsafe { step(s, (q, k, v), out) })
}

/// [`favor_stream_step_f32`] with binary16 inputs and output.
///
/// # Safety
/// As [`favor_stream_step_f32`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn favor_stream_step_f16(
    s: *mut FavorStream,
    q: *const u16,
    k: *const u16,
    v: *const u16,
    out: *mut u16,
) -> FavorStatus {
    // SAFETY: forwarded from the caller.
    entry(|| unsafe { step(s, (q, k, v), out) })
}

/// # Safety
/// As [`favor_stream_step_f32`].
unsafe fn step<A: Abi>(
    s: *mut FavorStream,
    inputs: (*const A, *const A, *const A),
    out: *mut A,
) -> Result<(), Failure> {
    // SAFETY: forwarded from the caller.
    let s = unsafe { stream_mut(s)? };
    let (d, batch) = (s.dims, s.inner.batch());
    let [nq, nk, nv, no] = d.counts(batch, 1)?;
    check_buffer(out.cast_const(), no, "out")?;
    // SAFETY: forwarded from the caller.
    let x = unsafe { qkv(inputs, [nq, nk, nv])? };
    let [q, k, v] = views(d, batch, 1, x)?;
    let mut result = try_vec::<A::Elem>(no)?;
    s.changing(|st| st.step_into(q, k, v, &mut result))?;
    // SAFETY: `out` checked for `no` elements; the caller guarantees them writable.
    unsafe { copy_out(bytemuck::cast_slice::<A::Elem, A>(&result), out) };
    Ok(())
}

/// Tokens the stream has absorbed (0 for a null stream).
///
/// # Safety
/// `s` must be null or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn favor_stream_tokens(s: *const FavorStream) -> u64 {
    // SAFETY: forwarded from the caller.
    unsafe { stream(s) }.map_or(0, |s| s.inner.tokens())
}

/// Forgets every token.
///
/// # Safety
/// `s` must be a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn favor_stream_reset(s: *mut FavorStream) -> FavorStatus {
    entry(|| {
        // SAFETY: forwarded from the caller.
        let s = unsafe { stream_mut(s)? };
        s.inner.reset();
        s.poisoned = false;
        Ok(())
    })
}

/// Bytes [`favor_stream_snapshot`] writes now (0 for a null stream, or if the state cannot
/// be written: see [`favor_last_error`]).
///
/// # Safety
/// `s` must be null or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn favor_stream_snapshot_len(s: *const FavorStream) -> usize {
    let mut n = 0;
    entry(|| {
        // SAFETY: forwarded from the caller.
        n = unsafe { stream(s)? }.inner.snapshot()?.len();
        Ok(())
    });
    n
}

/// Writes the stream's state (a versioned, checksummed byte format) into the first
/// [`favor_stream_snapshot_len`] bytes of `buf`, which holds `len` ≥ that many.
///
/// # Safety
/// `s` must be a live handle; `buf` must hold `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn favor_stream_snapshot(
    s: *const FavorStream,
    buf: *mut u8,
    len: usize,
) -> FavorStatus {
    entry(|| {
        // SAFETY: forwarded from the caller.
        let s = unsafe { stream(s)? };
        check_buffer(buf.cast_const(), len, "buf")?;
        let bytes = s.inner.snapshot()?;
        if bytes.len() > len {
            return Err(Failure::shape(format!(
                "buf: the snapshot takes {} bytes, got {len}",
                bytes.len()
            )));
        }
        // SAFETY: `buf` checked and at least `bytes.len()` long; writable (caller contract).
        unsafe { copy_out(&bytes, buf) };
        Ok(())
    })
}

/// Replaces the stream's state with a snapshot of a stream of the same layer (projection,
/// kernel, dims, precision) and batch: `len` is the snapshot's exact length (its
/// [`favor_stream_snapshot_len`] when written). Corrupted, truncated, padded or foreign
/// bytes give `FAVOR_ERR_SNAPSHOT` and leave the state unchanged.
///
/// # Safety
/// `s` must be a live handle; `buf` must hold `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn favor_stream_restore(
    s: *mut FavorStream,
    buf: *const u8,
    len: usize,
) -> FavorStatus {
    entry(|| {
        // SAFETY: forwarded from the caller.
        let s = unsafe { stream_mut(s)? };
        // SAFETY: forwarded from the caller.
        let bytes = unsafe { input(buf, len, "buf")? };
        s.inner.restore(bytes)?;
        s.poisoned = false;
        Ok(())
    })
}

/// A zeroed buffer of `bytes` bytes, 16-byte aligned, for hosts that cannot allocate in the
/// library's memory themselves (JavaScript calling a wasm build: write q, k, v there, pass
/// the pointers). Null when `bytes` is 0 or the memory is not available. Free it with
/// [`favor_buffer_free`] and the same size.
#[unsafe(no_mangle)]
pub extern "C" fn favor_buffer_new(bytes: usize) -> *mut u8 {
    match std::alloc::Layout::from_size_align(bytes, 16) {
        // SAFETY: the layout has a non-zero size (checked).
        Ok(layout) if bytes > 0 => unsafe { std::alloc::alloc_zeroed(layout) },
        _ => std::ptr::null_mut(),
    }
}

/// Frees a buffer from [`favor_buffer_new`] (null is ignored).
///
/// # Safety
/// `ptr` must be null or a pointer from [`favor_buffer_new`] with this `bytes`, not freed
/// before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn favor_buffer_free(ptr: *mut u8, bytes: usize) {
    if let (false, Ok(layout)) = (
        ptr.is_null(),
        std::alloc::Layout::from_size_align(bytes, 16),
    ) {
        // SAFETY: allocated by favor_buffer_new with this layout (caller contract).
        unsafe { std::alloc::dealloc(ptr, layout) }
    }
}

/// One line describing the last call on this thread ("" after a success). Valid until the
/// next call on this thread; never null.
#[unsafe(no_mangle)]
pub extern "C" fn favor_last_error() -> *const c_char {
    // During thread teardown the slot may be gone: "" rather than an abort.
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// The library's version, e.g. "0.1.0" (static).
#[unsafe(no_mangle)]
pub extern "C" fn favor_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Panics inside the library and returns what every entry point returns then,
/// `FAVOR_ERR_PANIC`: lets a host test its handling of that status.
#[unsafe(no_mangle)]
pub extern "C" fn favor_selftest_panic() -> FavorStatus {
    entry(|| panic!("favor_selftest_panic was called"))
}
