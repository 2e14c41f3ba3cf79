//! Planned attention calls: configure and size once, run many times (as RustFFT's plans).

use core::marker::PhantomData;

use crate::attention::{
    Options, Shape, bidirectional, bidirectional_scratch_len, causal_chunked,
    causal_chunked_scratch_len, causal_prefix, causal_prefix_scratch_len,
};
use crate::error::{Result, check};
use crate::{FeatureMap, Float, Kernels};

/// Which FAVOR+ path a [`Plan`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanKind {
    /// [`bidirectional`]: every query sees every key.
    Bidirectional,
    /// [`causal_prefix`]: the token-by-token prefix loop.
    CausalPrefix,
    /// [`causal_chunked`]: causal attention `opts.block` tokens at a time, all GEMMs.
    CausalChunked,
}

/// One head's attention call planned ahead: the path, the backend, the feature map, the
/// shape and the options, with every dimension checked and the scratch sized when the plan
/// is made. [`run`](Self::run) then needs only the data; it checks the slices' lengths and
/// the inputs' range, as the free functions do.
///
/// ```
/// use favor_core::*;
/// let (l, d, m) = (16, 8, 32);
/// let mut w = vec![0f32; m * d];
/// projection(ProjectionKind::default(), 2, m, d, &mut w).unwrap();
/// let phi = PositiveSoftmax::new(&w, m, d).unwrap();
/// let shape = Shape::new(l, d, d);
/// let plan = Plan::new(PlanKind::CausalChunked, Scalar, &phi, shape, Options::default()).unwrap();
/// let mut scratch = vec![0f32; plan.scratch_len()];
/// let x: Vec<f32> = (0..l * d).map(|i| (i as f32 * 0.37).sin() / 2.0).collect();
/// let mut out = vec![0f32; l * d];
/// plan.run(&x, &x, &x, &mut out, &mut scratch).unwrap();
/// // Causal: the first output is the first value.
/// assert!(out[..d].iter().zip(&x[..d]).all(|(o, v)| (o - v).abs() < 1e-5));
/// // A causal plan needs as many queries as keys.
/// let cross = Shape { queries: 3, ..shape };
/// assert!(Plan::new(PlanKind::CausalChunked, Scalar, &phi, cross, Options::default()).is_err());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Plan<'p, T, K, F> {
    path: PlanKind,
    kernels: K,
    fm: &'p F,
    shape: Shape,
    opts: Options<'p>,
    scratch_len: usize,
    _float: PhantomData<fn() -> T>,
}

impl<'p, T: Float, K: Kernels<T>, F: FeatureMap<T>> Plan<'p, T, K, F> {
    /// Plans `path` for `shape` with feature map `fm` on `kernels`. Errors if a dimension is
    /// zero, `shape.dim` is not the map's input dimension, a causal path has
    /// `queries != keys`, the key mask is not `keys` long, or the scratch size overflows.
    pub fn new(
        path: PlanKind,
        kernels: K,
        fm: &'p F,
        shape: Shape,
        opts: Options<'p>,
    ) -> Result<Self> {
        check::nonzero("queries", shape.queries)?;
        check::nonzero("keys", shape.keys)?;
        check::nonzero("dim", shape.dim)?;
        check::nonzero("value_dim", shape.value_dim)?;
        check::same_dim(
            "feature map input dim vs shape.dim",
            fm.input_dim(),
            shape.dim,
        )?;
        if path != PlanKind::Bidirectional {
            check::same_dim(
                "causal attention needs queries == keys",
                shape.keys,
                shape.queries,
            )?;
        }
        if let Some(mask) = opts.key_mask {
            check::exact("key_mask", mask, shape.keys)?;
        }
        let (m, dv, block) = (fm.feature_dim(), shape.value_dim, opts.block);
        let scratch_len = match path {
            PlanKind::Bidirectional => bidirectional_scratch_len(m, dv, block)?,
            PlanKind::CausalPrefix => causal_prefix_scratch_len(m, dv, block)?,
            PlanKind::CausalChunked => causal_chunked_scratch_len(m, dv, block)?,
        };
        Ok(Self {
            path,
            kernels,
            fm,
            shape,
            opts,
            scratch_len,
            _float: PhantomData,
        })
    }

    /// Elements of scratch [`run`](Self::run) needs.
    pub fn scratch_len(&self) -> usize {
        self.scratch_len
    }

    /// The planned shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The planned kind.
    pub fn kind(&self) -> PlanKind {
        self.path
    }

    /// Attention of `q` (queries×d) over `k` (keys×d) and `v` (keys×dv) into `out`
    /// (queries×dv), with at least [`scratch_len`](Self::scratch_len) elements of `scratch`.
    pub fn run(&self, q: &[T], k: &[T], v: &[T], out: &mut [T], scratch: &mut [T]) -> Result<()> {
        let (kn, fm, shape, opts) = (&self.kernels, self.fm, self.shape, &self.opts);
        match self.path {
            PlanKind::Bidirectional => bidirectional(kn, fm, q, k, v, shape, opts, out, scratch),
            PlanKind::CausalPrefix => causal_prefix(kn, fm, q, k, v, shape, opts, out, scratch),
            PlanKind::CausalChunked => causal_chunked(kn, fm, q, k, v, shape, opts, out, scratch),
        }
    }
}
