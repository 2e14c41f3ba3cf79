//! The projection W, drawn or given once and shared (by `Arc`) by every call and stream.

use crate::alloc::{self, try_zeros};
use crate::config::Projection;
use crate::error::{Result, setup};
use favor_core::ProjectionKind;

/// A layer's projection W (`rows × dim`, row-major) in both precisions, with transposes;
/// empty without a projection. Immutable once built: a [`Performer`](crate::Performer) and
/// every [`Stream`](crate::Stream) made from it share one by `Arc`, and a redraw makes a new
/// one rather than changing this.
///
/// ```
/// use favor_tensor::Performer;
/// let p = Performer::builder(16).features(32).seed(3).build().unwrap();
/// let w = p.weights();
/// assert_eq!((w.rows(), w.dim()), (32, 16));
/// assert_eq!(w.f32().len(), 32 * 16);
/// assert_eq!(w.f32()[5], w.f64()[5] as f32); // the f32 copy is the f64 one rounded
/// ```
#[derive(Debug, Clone, Default)]
pub struct Weights {
    w32: Vec<f32>,
    wt32: Vec<f32>,
    w64: Vec<f64>,
    wt64: Vec<f64>,
    rows: usize,
    dim: usize,
    /// Largest row norm of W (1 without a projection: φ then sees x itself).
    pub(crate) row_norm: f64,
    /// A drawn SORF W's structured form (favor-core's `sorf_signs`, 3·d' per block of d'
    /// rows; drawn with every SORF W, 768 values at m = 256, d = 64), which the softmax maps
    /// project with instead of W when the layer has `structured_projection`; empty otherwise.
    signs64: Vec<f64>,
    signs32: Vec<f32>,
}

impl Weights {
    /// Projection rows m (0 without a projection).
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns: the head dimension d (0 without a projection).
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// W in f32, what [`Precision::F32`](crate::Precision::F32) uses.
    pub fn f32(&self) -> &[f32] {
        &self.w32
    }
    /// W in f64, what [`Precision::F64`](crate::Precision::F64) uses.
    pub fn f64(&self) -> &[f64] {
        &self.w64
    }
    /// Wᵀ (`dim × rows`) in f32.
    pub(crate) fn f32_t(&self) -> &[f32] {
        &self.wt32
    }
    /// Wᵀ in f64.
    pub(crate) fn f64_t(&self) -> &[f64] {
        &self.wt64
    }
    /// The structured form of a drawn SORF W in f32 (empty for any other W).
    pub(crate) fn signs32(&self) -> &[f32] {
        &self.signs32
    }
    /// The structured form of a drawn SORF W in f64 (empty for any other W).
    pub(crate) fn signs64(&self) -> &[f64] {
        &self.signs64
    }
}

impl Weights {
    /// All four buffers of an `n`-element projection, zeroed: allocated before anything is
    /// computed, so a size beyond the memory available fails at once (drawing a large
    /// orthogonal W takes minutes).
    fn alloc(n: usize) -> Result<Self> {
        // The f64 buffers first: the largest is the one a too-large size fails on.
        Ok(Self {
            w64: try_zeros("projection", n)?,
            wt64: try_zeros("projection", n)?,
            w32: try_zeros("projection", n)?,
            wt32: try_zeros("projection", n)?,
            ..Self::default()
        })
    }

    /// From an f64 matrix; the f32 copy is its rounding, so exporting it and loading it back
    /// reproduces the same f32 attention bit for bit.
    pub(crate) fn from_f64(w64: Vec<f64>, m: usize, d: usize) -> Result<Self> {
        let n = w64.len();
        Self {
            wt64: try_zeros("projection", n)?,
            w32: try_zeros("projection", n)?,
            wt32: try_zeros("projection", n)?,
            w64,
            ..Self::default()
        }
        .complete(m, d)
    }

    /// Fills the f32 copy, both transposes and the row norm from `w64`.
    fn complete(mut self, m: usize, d: usize) -> Result<Self> {
        (self.rows, self.dim) = (m, d);
        for (a, &b) in self.w32.iter_mut().zip(&self.w64) {
            *a = b as f32;
        }
        self.row_norm = self
            .w64
            .chunks_exact(d.max(1))
            .map(crate::range::norm)
            .fold(0.0, f64::max);
        favor_core::transpose_projection(&self.w64, m, d, &mut self.wt64).map_err(setup)?;
        favor_core::transpose_projection(&self.w32, m, d, &mut self.wt32).map_err(setup)?;
        Ok(self)
    }

    pub(crate) fn generate(kind: Projection, seed: u64, m: usize, d: usize) -> Result<Self> {
        let kind = match kind {
            Projection::Orthogonal(norms) => ProjectionKind::Orthogonal(norms),
            Projection::Iid => ProjectionKind::Iid,
            Projection::Simplex => ProjectionKind::Simplex,
            Projection::Sorf => ProjectionKind::Sorf,
            Projection::None => {
                return Ok(Self {
                    row_norm: 1.0,
                    ..Self::default()
                });
            }
        };
        let n = alloc::len("projection", favor_core::projection_len(m, d))?;
        let mut w = Self::alloc(n)?;
        favor_core::projection(kind, seed, m, d, &mut w.w64).map_err(setup)?;
        if kind == ProjectionKind::Sorf {
            // The signs are ±1, the same in both precisions.
            let n = alloc::len("projection signs", favor_core::sorf_signs_len(m, d))?;
            w.signs64 = try_zeros("projection signs", n)?;
            favor_core::sorf_signs(seed, m, d, &mut w.signs64).map_err(setup)?;
            w.signs32 = w.signs64.iter().map(|&s| s as f32).collect();
        }
        w.complete(m, d)
    }
}
