//! A projection together with the layer's feature map over it, built once.
//!
//! Building a favor-core map checks all of W (finite entries and row norms, Wᵀ against W, a
//! SORF W's signs against W): 41 µs in f32 at m = 256, d = 64, 129 µs with the signs, on the
//! project's Xeon. Built per call, that was 40 µs of a one-token forward call over 8 heads
//! (151 → 108 µs without it; 16 tokens 273–287 → 242–264 µs). So the layer keeps the map
//! beside the projection it borrows, made when the projection is (build, redraw), and a call
//! only reads it.

use std::sync::Arc;

use favor_core::AnyFeatureMap;

use crate::config::{Config, Precision};
use crate::error::Result;
use crate::weights::Weights;

/// The layer's map over one projection, in the layer's precision (the other is `None`); both
/// `None` for a data-aware layer, whose maps are per head. (`compat` layers and the fitted
/// kernels build it too, unused: building it is what checks W.)
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LayerMaps<'w> {
    pub(crate) f32: Option<AnyFeatureMap<'w, f32>>,
    pub(crate) f64: Option<AnyFeatureMap<'w, f64>>,
}

impl<'w> LayerMaps<'w> {
    fn new(cfg: &Config, weights: &'w Weights) -> Result<Self> {
        if cfg.data_aware.is_some() {
            return Ok(Self::default());
        }
        Ok(match cfg.precision {
            Precision::F32 => Self {
                f32: Some(cfg.map::<f32>(weights)?),
                f64: None,
            },
            Precision::F64 => Self {
                f32: None,
                f64: Some(cfg.map::<f64>(weights)?),
            },
        })
    }
}

// The map borrows W and the layer owns W (shared, immutable): a self-referential pair
// without `unsafe` here, as for streams.
self_cell::self_cell!(
    /// A projection and the layer's map over it.
    pub(crate) struct Prepared {
        owner: Arc<Weights>,
        #[covariant]
        dependent: LayerMaps,
    }
    impl {Debug}
);

impl Prepared {
    /// `weights` with `cfg`'s map built over them; the map's error (a W that is not finite,
    /// signs that are not W's) when it cannot be built.
    pub(crate) fn build(cfg: &Config, weights: Arc<Weights>) -> Result<Self> {
        Self::try_new(weights, |w| LayerMaps::new(cfg, w))
    }

    /// The projection.
    pub(crate) fn weights(&self) -> &Arc<Weights> {
        self.borrow_owner()
    }

    /// The maps built over it.
    pub(crate) fn maps(&self) -> &LayerMaps<'_> {
        self.borrow_dependent()
    }
}
