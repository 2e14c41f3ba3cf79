//! A hybrid stream's memory between calls, kept whole.

use core::ops::{Deref, DerefMut};

use crate::error::Result;
use crate::{Error, FeatureMap, Float, Kernels};

use super::{HybridShape, HybridStream};

/// What a [`HybridMemory`] was first attached with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    features: usize,
    input_dim: usize,
    value_dim: usize,
    shape: HybridShape,
}

/// A [`HybridStream`]'s memory between calls, as [`StreamMemory`](crate::StreamMemory) is a
/// [`Stream`](crate::Stream)'s: the buffer together with the token counts and the far
/// state's log-scale, so a host keeps this (not a borrowed stream) and
/// [`attach`](Self::attach)es a stream for each call; the guard writes them back on drop.
///
/// ```
/// use favor_core::*;
/// let (d, m) = (2, 4);
/// let mut w = [0f64; 8];
/// projection(ProjectionKind::default(), 1, m, d, &mut w).unwrap();
/// let phi = PositiveSoftmax::new(&w, m, d).unwrap();
/// let shape = HybridShape { window: 1, sinks: 1 };
/// let len = HybridStream::<f64, _, Scalar>::buffer_len(&phi, d, shape).unwrap();
/// let mut memory = HybridMemory::new(vec![0f64; len]);
/// let mut out = [0.0; 2];
/// for t in 0..5 {
///     let x = [0.1 * t as f64, -0.2];
///     memory.attach(Scalar, &phi, d, shape).unwrap().step(&x, &x, &x, &mut out).unwrap();
/// }
/// assert_eq!(memory.tokens(), 5);
/// // Another shape cannot reuse this state.
/// assert!(memory.attach(Scalar, &phi, d, HybridShape { window: 2, sinks: 1 }).is_err());
/// ```
#[derive(Debug, Clone)]
pub struct HybridMemory<T, B> {
    buf: B,
    tokens: u64,
    far_tokens: u64,
    far_log_scale: T,
    /// `None` until the first attach, which initialises the buffer.
    layout: Option<Layout>,
}

impl<T: Float, B: AsMut<[T]>> HybridMemory<T, B> {
    /// Memory for an empty stream in `buf` (of at least [`HybridStream::buffer_len`]
    /// elements; the first [`attach`](Self::attach) initialises it).
    pub fn new(buf: B) -> Self {
        Self {
            buf,
            tokens: 0,
            far_tokens: 0,
            far_log_scale: T::neg_infinity(),
            layout: None,
        }
    }

    /// A stream over this memory for `fm`, values of dimension `value_dim` and `shape`. The
    /// first attach starts an empty stream; later ones continue it and must use a map of the
    /// same feature and input dimensions, the same `value_dim` and shape
    /// ([`Error::InvalidParameter`] otherwise).
    pub fn attach<'s, F: FeatureMap<T>, K: Kernels<T>>(
        &'s mut self,
        kernels: K,
        fm: &'s F,
        value_dim: usize,
        shape: HybridShape,
    ) -> Result<AttachedHybrid<'s, T, F, K>> {
        let layout = Layout {
            features: fm.feature_dim(),
            input_dim: fm.input_dim(),
            value_dim,
            shape,
        };
        let Self {
            buf,
            tokens,
            far_tokens,
            far_log_scale,
            layout: held,
        } = self;
        let stream = match *held {
            None => HybridStream::new(kernels, fm, value_dim, shape, buf.as_mut())?,
            Some(l) if l == layout => {
                let state = (*tokens, *far_tokens, *far_log_scale);
                HybridStream::resume(kernels, fm, value_dim, shape, buf.as_mut(), state)?
            }
            Some(_) => {
                return Err(Error::InvalidParameter {
                    what: "hybrid memory attached with other dimensions or shape than it holds",
                });
            }
        };
        *held = Some(layout);
        Ok(AttachedHybrid {
            stream,
            tokens,
            far_tokens,
            far_log_scale,
        })
    }

    /// Forgets every token: the next attach starts an empty stream (of any layout).
    pub fn reset(&mut self) {
        self.tokens = 0;
        self.far_tokens = 0;
        self.far_log_scale = T::neg_infinity();
        self.layout = None;
    }

    /// Tokens the held state has stepped.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// The buffer, e.g. to count its bytes.
    pub fn buffer(&self) -> &B {
        &self.buf
    }
}

/// A [`HybridStream`] attached to a [`HybridMemory`]: derefs to the stream, and writes its
/// counts and far log-scale back into the memory when dropped.
pub struct AttachedHybrid<'s, T: Float, F: FeatureMap<T>, K: Kernels<T>> {
    stream: HybridStream<'s, T, F, K>,
    tokens: &'s mut u64,
    far_tokens: &'s mut u64,
    far_log_scale: &'s mut T,
}

impl<'s, T: Float, F: FeatureMap<T>, K: Kernels<T>> Deref for AttachedHybrid<'s, T, F, K> {
    type Target = HybridStream<'s, T, F, K>;
    fn deref(&self) -> &Self::Target {
        &self.stream
    }
}

impl<T: Float, F: FeatureMap<T>, K: Kernels<T>> DerefMut for AttachedHybrid<'_, T, F, K> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.stream
    }
}

impl<T: Float, F: FeatureMap<T>, K: Kernels<T>> Drop for AttachedHybrid<'_, T, F, K> {
    fn drop(&mut self) {
        *self.tokens = self.stream.tokens();
        *self.far_tokens = self.stream.far_state().tokens();
        *self.far_log_scale = self.stream.far_state().log_scale();
    }
}
