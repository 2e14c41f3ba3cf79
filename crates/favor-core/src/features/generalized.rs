//! Generalized attention features `f(Wx) + ε`.

use super::*;

/// Generalized attention features `φ(x) = f(Wx) + ε` (or `f(x) + ε` without a projection,
/// M = d). Defaults follow the paper's code: ε = 10⁻³, data normaliser off.
///
/// [`Activation::Exp`] is stabilised like the softmax maps (row log-scale = max(0, max u)).
#[derive(Debug, Clone, Copy)]
pub struct Generalized<'w, T> {
    w: Option<&'w [T]>,
    wt: Option<&'w [T]>,
    m: usize,
    d: usize,
    f: Activation<T>,
    eps: T,
    normalize: bool,
    /// `d^(-1/4)`, the data scale when `normalize` is on.
    inv_quarter_root: f64,
    /// max |wᵢ| (unused without a projection), for the range checks.
    row_norm: f64,
}

impl<'w, T: Float> Generalized<'w, T> {
    /// `f(Wx) + ε` with the projection `w` (`features × dim`).
    pub fn new(w: &'w [T], features: usize, dim: usize, f: Activation<T>) -> Result<Self> {
        check_projection(w, features, dim)?;
        Ok(Self {
            w: Some(w),
            wt: None,
            m: features,
            d: dim,
            f,
            eps: T::from_f64(1e-3),
            normalize: false,
            inv_quarter_root: quarter_root_inverse(dim),
            row_norm: max_row_norm(w, dim),
        })
    }

    /// `f(x) + ε` with no projection (M = d).
    pub fn without_projection(dim: usize, f: Activation<T>) -> Result<Self> {
        check::nonzero("dim", dim)?;
        Ok(Self {
            w: None,
            wt: None,
            m: dim,
            d: dim,
            f,
            eps: T::from_f64(1e-3),
            normalize: false,
            inv_quarter_root: quarter_root_inverse(dim),
            row_norm: 1.0,
        })
    }

    /// Gives the map Wᵀ as well; see
    /// [`PositiveSoftmax::with_transposed_projection`]. An error without a projection.
    pub fn with_transposed_projection(mut self, wt: &'w [T]) -> Result<Self> {
        let w = self.w.ok_or(crate::Error::InvalidParameter {
            what: "a map without projection has nothing to transpose",
        })?;
        check_transpose(w, wt, self.m, self.d)?;
        self.wt = Some(wt);
        Ok(self)
    }

    /// Sets ε (finite, ≥ 0). It keeps denominators away from zero for ReLU-like kernels.
    pub fn with_epsilon(mut self, eps: T) -> Result<Self> {
        self.eps = checked_epsilon(eps)?;
        Ok(self)
    }

    /// Turns the d^(-1/4) data normaliser on or off (default off).
    pub fn with_data_normalizer(mut self, on: bool) -> Self {
        self.normalize = on;
        self
    }
}

impl<'w, T: Float> Generalized<'w, T> {
    /// `|u| ≤ gain·max|xⱼ|` for every pre-activation `u = s·wᵢ·x` (or `s·xⱼ` without a
    /// projection).
    fn gain(&self) -> f64 {
        let s = data_scale::<T>(self.inv_quarter_root, self.normalize).to_f64();
        match self.w {
            Some(_) => s * self.row_norm * libm::sqrt(self.d as f64),
            None => s,
        }
    }
}

impl<T: Float> FeatureMap<T> for Generalized<'_, T> {
    fn max_input(&self) -> T {
        let max = T::max_value().to_f64();
        let sums = match self.w {
            Some(_) => projection_input_limit::<T>(self.d, self.row_norm),
            None => max,
        };
        let own = match self.f {
            // u² must stay finite.
            Activation::Square => libm::sqrt(max / 4.0) / self.gain().max(f64::MIN_POSITIVE),
            _ => max / 4.0 / self.gain().max(1.0),
        };
        T::from_f64(sums.min(own))
    }
    fn feature_bound(&self, max_abs: T) -> Option<f64> {
        let u = self.gain() * max_abs.to_f64();
        let eps = self.eps.to_f64();
        match self.f {
            Activation::Relu | Activation::Abs => Some(u + eps),
            Activation::EluPlusOne => Some(u + 1.0 + eps),
            // Stored rows are shifted by max(0, max u): at most 1 + ε.
            Activation::Exp => Some(1.0 + eps),
            Activation::Square => Some(u * u + eps),
            Activation::Custom(_) => None,
        }
    }
    fn max_log_scale(&self) -> T {
        // Only the exponential keeps a log-scale; every other activation's is 0.
        match self.f {
            Activation::Exp => T::infinity(),
            _ => T::zero(),
        }
    }
    fn input_dim(&self) -> usize {
        self.d
    }
    fn feature_dim(&self) -> usize {
        self.m
    }
    fn is_positive(&self) -> bool {
        let strictly = self.eps > T::zero();
        match self.f {
            Activation::Exp | Activation::EluPlusOne => true,
            Activation::Relu | Activation::Abs | Activation::Square => strictly,
            Activation::Custom(_) => false,
        }
    }
    fn softmax_temperature(&self) -> Option<T> {
        None
    }
    fn fingerprint(&self) -> u64 {
        let mut h = Fnv::new(4);
        h.u64(self.m as u64);
        h.u64(self.d as u64);
        h.u64(u64::from(self.normalize));
        h.u64(self.eps.to_f64().to_bits());
        let tag: u8 = match self.f {
            Activation::Relu => 0,
            Activation::EluPlusOne => 1,
            Activation::Exp => 2,
            Activation::Abs => 3,
            Activation::Square => 4,
            Activation::Custom(_) => 5,
        };
        h.bytes(&[tag, u8::from(self.w.is_some())]);
        if let Some(w) = self.w {
            h.floats(w);
        }
        h.0
    }
    fn map_rows<K: Kernels<T>>(
        &self,
        kernels: &K,
        x: &[T],
        rows: usize,
        out: &mut [T],
        log_scales: &mut [T],
    ) -> Result<()> {
        let (m, d) = (self.m, self.d);
        check_rows(x, rows, d, m, out, log_scales)?;
        let s = data_scale::<T>(self.inv_quarter_root, self.normalize);
        match self.w {
            Some(w) => {
                let p = ProjectionRef {
                    w,
                    wt: self.wt,
                    features: m,
                    dim: d,
                };
                let (xm, o) = (
                    MatRef::row_major(x, rows, d),
                    MatMut::row_major(out, rows, m),
                );
                kernels.project(xm, p, s, o, log_scales)
            }
            None => {
                out[..rows * d].copy_from_slice(x);
                kernels.scale(s, &mut out[..rows * d]);
            }
        }
        for r in 0..rows {
            let row = &mut out[r * m..(r + 1) * m];
            if let Activation::Exp = self.f {
                // exp(u) + ε = e^c (exp(u − c) + ε e^{−c}); c ≥ 0 keeps ε e^{−c} ≤ ε.
                let c = kernels.max(row).max(T::zero());
                kernels.exp_shift(row, c);
                kernels.activation(row, Activation::Custom(|v| v), self.eps * (-c).libm_exp());
                log_scales[r] = c;
            } else {
                kernels.activation(row, self.f, self.eps);
                log_scales[r] = T::zero();
            }
        }
        Ok(())
    }
}
