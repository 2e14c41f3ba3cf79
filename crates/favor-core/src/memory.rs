//! A stream's memory between calls, kept whole.

use core::ops::{Deref, DerefMut};

use crate::error::Result;
use crate::stream::Stream;
use crate::{Error, FeatureMap, Float, Kernels};

/// The shape a [`StreamMemory`] was first attached with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dims {
    features: usize,
    input_dim: usize,
    value_dim: usize,
}

/// A [`Stream`]'s memory between calls: its buffer together with the token count and
/// log-scale of the state the buffer holds and the dimensions it was made for. A host keeps
/// this (not a borrowed `Stream`) in its own structures and [`attach`](Self::attach)es a
/// stream for each call; when that stream is dropped its count and scale are written back,
/// so they can never be paired with another buffer (as the loose arguments of
/// [`Stream::resume`] can). `B` is any buffer: `&mut [T]` on a microcontroller, `Vec<T>`
/// above.
///
/// ```
/// use favor_core::*;
/// let (d, m) = (2, 4);
/// let mut w = [0f64; 8];
/// projection(ProjectionKind::default(), 1, m, d, &mut w).unwrap();
/// let phi = PositiveSoftmax::new(&w, m, d).unwrap();
/// let len = Stream::<f64, _, Scalar>::buffer_len(&phi, d).unwrap();
/// let mut memory = StreamMemory::new(vec![0f64; len]);
/// memory.attach(Scalar, &phi, d).unwrap().push(&[0.1, 0.2], &[1.0, 2.0]).unwrap();
/// assert_eq!(memory.tokens(), 1);
/// let mut out = [0.0; 2];
/// memory.attach(Scalar, &phi, d).unwrap().query(&[0.3, 0.1], &mut out).unwrap();
/// assert!((out[1] - 2.0).abs() < 1e-12); // one token seen: attention returns its value
/// // Another value dimension cannot reuse this state.
/// assert!(memory.attach(Scalar, &phi, 1).is_err());
/// ```
#[derive(Debug, Clone)]
pub struct StreamMemory<T, B> {
    buf: B,
    tokens: u64,
    log_scale: T,
    /// `None` until the first attach, which initialises the buffer.
    dims: Option<Dims>,
}

impl<T: Float, B: AsMut<[T]>> StreamMemory<T, B> {
    /// Memory for an empty stream in `buf` (of at least [`Stream::buffer_len`] elements;
    /// its contents are initialised by the first [`attach`](Self::attach)).
    pub fn new(buf: B) -> Self {
        Self {
            buf,
            tokens: 0,
            log_scale: T::neg_infinity(),
            dims: None,
        }
    }

    /// A stream over this memory for `fm` and values of dimension `value_dim`. The first
    /// attach starts an empty stream; later ones continue it and must use a map of the same
    /// feature and input dimensions and the same `value_dim`
    /// ([`Error::InvalidParameter`] otherwise). The stream's token count and log-scale are
    /// written back when the returned guard is dropped.
    pub fn attach<'s, F: FeatureMap<T>, K: Kernels<T>>(
        &'s mut self,
        kernels: K,
        fm: &'s F,
        value_dim: usize,
    ) -> Result<Attached<'s, T, F, K>> {
        let dims = Dims {
            features: fm.feature_dim(),
            input_dim: fm.input_dim(),
            value_dim,
        };
        let Self {
            buf,
            tokens,
            log_scale,
            dims: held,
        } = self;
        let stream = match *held {
            None => Stream::new(kernels, fm, value_dim, buf.as_mut())?,
            Some(d) if d == dims => {
                Stream::resume(kernels, fm, value_dim, buf.as_mut(), *tokens, *log_scale)?
            }
            Some(_) => {
                return Err(Error::InvalidParameter {
                    what: "stream memory attached with other dimensions than it holds",
                });
            }
        };
        *held = Some(dims);
        Ok(Attached {
            stream,
            tokens,
            log_scale,
        })
    }

    /// Forgets every token: the next attach starts an empty stream (of any dimensions).
    pub fn reset(&mut self) {
        self.tokens = 0;
        self.log_scale = T::neg_infinity();
        self.dims = None;
    }

    /// Tokens the held state has absorbed.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// The held state's stabiliser (`-∞` when empty).
    pub fn log_scale(&self) -> T {
        self.log_scale
    }

    /// The buffer, e.g. to count its bytes.
    pub fn buffer(&self) -> &B {
        &self.buf
    }

    /// The buffer back.
    pub fn into_buffer(self) -> B {
        self.buf
    }
}

/// A [`Stream`] attached to a [`StreamMemory`]: derefs to the stream, and writes its token
/// count and log-scale back into the memory when dropped.
#[derive(Debug)]
pub struct Attached<'s, T: Float, F: FeatureMap<T>, K: Kernels<T>> {
    stream: Stream<'s, T, F, K>,
    tokens: &'s mut u64,
    log_scale: &'s mut T,
}

impl<'s, T: Float, F: FeatureMap<T>, K: Kernels<T>> Deref for Attached<'s, T, F, K> {
    type Target = Stream<'s, T, F, K>;
    fn deref(&self) -> &Self::Target {
        &self.stream
    }
}

impl<T: Float, F: FeatureMap<T>, K: Kernels<T>> DerefMut for Attached<'_, T, F, K> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.stream
    }
}

impl<T: Float, F: FeatureMap<T>, K: Kernels<T>> Drop for Attached<'_, T, F, K> {
    fn drop(&mut self) {
        *self.tokens = self.stream.tokens();
        *self.log_scale = self.stream.state().log_scale();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PositiveSoftmax, ProjectionKind, Scalar, projection};

    const D: usize = 4;
    const M: usize = 8;

    fn token(t: usize, salt: usize) -> [f32; D] {
        core::array::from_fn(|j| ((t * 7 + j * 3 + salt) % 11) as f32 / 10.0 - 0.5)
    }

    #[test]
    fn attaching_per_call_equals_one_stream_bit_for_bit() {
        let mut w = [0f32; M * D];
        projection(ProjectionKind::default(), 5, M, D, &mut w).unwrap();
        let phi = PositiveSoftmax::new(&w, M, D).unwrap();
        let len = Stream::<f32, _, Scalar>::buffer_len(&phi, D).unwrap();
        let (mut a, mut b) = ([0f32; 512], [0f32; 512]);
        assert!(len <= a.len());
        // One stream kept alive, against memory (a borrowed slice) re-attached every token.
        let mut whole = Stream::new(Scalar, &phi, D, &mut a[..len]).unwrap();
        let mut memory = StreamMemory::new(&mut b[..len]);
        for t in 0..40 {
            let (q, k, v) = (token(t, 0), token(t, 1), token(t, 2));
            let (mut x, mut y) = ([0f32; D], [0f32; D]);
            whole.step(&q, &k, &v, &mut x).unwrap();
            memory
                .attach(Scalar, &phi, D)
                .unwrap()
                .step(&q, &k, &v, &mut y)
                .unwrap();
            assert_eq!(x, y, "token {t}");
            assert_eq!(memory.tokens(), whole.tokens());
            assert_eq!(memory.log_scale(), whole.state().log_scale());
        }
        // Other dimensions are refused and change nothing; a reset starts afresh.
        assert!(matches!(
            memory.attach(Scalar, &phi, D - 1),
            Err(Error::InvalidParameter { .. })
        ));
        assert_eq!(memory.tokens(), 40);
        memory.reset();
        assert_eq!(
            (memory.tokens(), memory.log_scale()),
            (0, f32::NEG_INFINITY)
        );
        let mut out = [1f32; D];
        memory
            .attach(Scalar, &phi, D)
            .unwrap()
            .query(&token(0, 0), &mut out)
            .unwrap();
        assert_eq!(out, [0.0; D], "an empty state answers zeros");
    }
}
