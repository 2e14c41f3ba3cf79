//! Feature-map choices shared by the targets: which map, its projection, and one enum that
//! implements `FeatureMap` for all of them (the trait's generic method makes it
//! non-object-safe).

use arbitrary::{Arbitrary, Result, Unstructured};
use favor_core::{
    Activation, Float, Generalized, HyperbolicSoftmax, PositiveSoftmax, ProjectionKind, RowNorms,
    TrigonometricSoftmax,
};

use crate::input::{size, vector};

/// The generalized-kernel activations favor-tensor offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum GenAct {
    /// ReLU.
    Relu,
    /// ELU + 1.
    EluPlusOne,
    /// exp.
    Exp,
    /// |·|.
    Abs,
    /// x².
    Square,
}

impl GenAct {
    /// The favor-core activation.
    pub fn to<T>(self) -> Activation<T> {
        match self {
            GenAct::Relu => Activation::Relu,
            GenAct::EluPlusOne => Activation::EluPlusOne,
            GenAct::Exp => Activation::Exp,
            GenAct::Abs => Activation::Abs,
            GenAct::Square => Activation::Square,
        }
    }
}

/// Which feature map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum MapKind {
    /// SM+.
    Positive,
    /// SMhyp+.
    Hyperbolic,
    /// Trigonometric.
    Trig,
    /// `f(Wx) + ε` (`projection`) or `f(x) + ε`.
    Generalized {
        /// The activation f.
        act: GenAct,
        /// With a projection W (else M = d).
        projection: bool,
    },
}

impl MapKind {
    /// Whether the map estimates softmax with positive features (the maps with derived
    /// attention bounds).
    pub fn positive_softmax(self) -> bool {
        matches!(self, MapKind::Positive | MapKind::Hyperbolic)
    }
    /// Whether the map uses W.
    pub fn has_projection(self) -> bool {
        !matches!(
            self,
            MapKind::Generalized {
                projection: false,
                ..
            }
        )
    }
}

/// A map's full description: kind, options, dimensions and projection values.
#[derive(Debug, Clone)]
pub struct MapSpec {
    /// Which map.
    pub kind: MapKind,
    /// The d^(-1/4) data normaliser.
    pub normalizer: bool,
    /// Give the map Wᵀ too (the SIMD GEMM's other path).
    pub transposed: bool,
    /// Input dimension d.
    pub d: usize,
    /// Projection rows m (= d without a projection).
    pub m: usize,
    /// ε of generalized maps (finite, ≥ 0).
    pub eps: f64,
    /// W (m×d, row-major), empty without a projection.
    pub w: Vec<f64>,
}

impl MapSpec {
    /// Decodes a map with `d ≤ max_d` and `m ≤ max_m`; `softmax_only` restricts it to the
    /// positive softmax maps (SM+, SMhyp+), whose outputs have derived bounds.
    pub fn arbitrary(
        u: &mut Unstructured<'_>,
        max_d: usize,
        max_m: usize,
        softmax_only: bool,
    ) -> Result<Self> {
        let mut kind = MapKind::arbitrary(u)?;
        if softmax_only && !kind.positive_softmax() {
            kind = if u.arbitrary()? {
                MapKind::Positive
            } else {
                MapKind::Hyperbolic
            };
        }
        let normalizer = match kind {
            MapKind::Generalized { .. } => u.ratio(1, 4)?,
            _ => u.ratio(7, 8)?,
        };
        let transposed = u.arbitrary()?;
        let d = size(u, 1, max_d)?;
        let m = if kind.has_projection() {
            size(u, 1, max_m)?
        } else {
            d
        };
        let eps = match u.int_in_range(0u8..=3)? {
            0 => 0.0,
            1 => 1e-3,
            _ => crate::input::wide(u, -30, 0)?.abs(),
        };
        let w = if !kind.has_projection() {
            Vec::new()
        } else if u.ratio(3, 4)? {
            // A favor-core projection: what real maps use (rows of norm ≈ √d).
            let pk = match u.int_in_range(0u8..=2)? {
                0 => ProjectionKind::Iid,
                1 => ProjectionKind::Orthogonal(RowNorms::Chi),
                _ => ProjectionKind::Orthogonal(RowNorms::SqrtD),
            };
            let seed = u.arbitrary()?;
            let mut w = vec![0f64; m * d];
            favor_core::projection(pk, seed, m, d, &mut w).expect("valid projection shape");
            // Rounded to f32 so both precisions use the same W.
            w.iter().map(|&x| f64::from(x as f32)).collect()
        } else {
            // Arbitrary rows, entries below 8 in magnitude.
            vector(u, m * d, -10, 2)?
        };
        Ok(MapSpec {
            kind,
            normalizer,
            transposed,
            d,
            m,
            eps,
            w,
        })
    }

    /// Output dimension M.
    pub fn features(&self) -> usize {
        match self.kind {
            MapKind::Hyperbolic | MapKind::Trig => 2 * self.m,
            _ => self.m,
        }
    }

    /// The data scale s in f64 (exact value; the library rounds it to T).
    pub fn scale(&self) -> f64 {
        if self.normalizer {
            (self.d as f64).powf(-0.25)
        } else {
            1.0
        }
    }

    /// W and Wᵀ in `T`.
    pub fn weights<T: Float>(&self) -> (Vec<T>, Vec<T>) {
        let w: Vec<T> = self.w.iter().map(|&x| T::from_f64(x)).collect();
        let mut wt = vec![T::zero(); w.len()];
        if !w.is_empty() {
            for i in 0..self.m {
                for j in 0..self.d {
                    wt[j * self.m + i] = w[i * self.d + j];
                }
            }
        }
        (w, wt)
    }

    /// The favor-core map over `w` (and `wt` when `transposed`).
    pub fn build<'w, T: Float>(&self, w: &'w [T], wt: &'w [T]) -> Map<'w, T> {
        let (m, d, n) = (self.m, self.d, self.normalizer);
        let built = match self.kind {
            MapKind::Positive => PositiveSoftmax::new(w, m, d)
                .map(|p| p.with_data_normalizer(n))
                .and_then(|p| {
                    if self.transposed {
                        p.with_transposed_projection(wt)
                    } else {
                        Ok(p)
                    }
                })
                .map(Map::Positive),
            MapKind::Hyperbolic => HyperbolicSoftmax::new(w, m, d)
                .map(|p| p.with_data_normalizer(n))
                .and_then(|p| {
                    if self.transposed {
                        p.with_transposed_projection(wt)
                    } else {
                        Ok(p)
                    }
                })
                .map(Map::Hyperbolic),
            MapKind::Trig => TrigonometricSoftmax::new(w, m, d)
                .map(|p| p.with_data_normalizer(n))
                .and_then(|p| {
                    if self.transposed {
                        p.with_transposed_projection(wt)
                    } else {
                        Ok(p)
                    }
                })
                .map(Map::Trigonometric),
            MapKind::Generalized { act, projection } => {
                let g = if projection {
                    Generalized::new(w, m, d, act.to()).and_then(|g| {
                        if self.transposed {
                            g.with_transposed_projection(wt)
                        } else {
                            Ok(g)
                        }
                    })
                } else {
                    Generalized::without_projection(d, act.to())
                };
                g.and_then(|g| g.with_epsilon(T::from_f64(self.eps)))
                    .map(|g| Map::Generalized(g.with_data_normalizer(n)))
            }
        };
        built.expect("a finite projection of the right shape builds")
    }
}

/// Any favor-core feature map (favor-core's run-time choice of map).
pub type Map<'w, T> = favor_core::AnyFeatureMap<'w, T>;
