//! SADERF / FAVOR#: GERF on diagonally rescaled queries and keys.

use super::*;

/// The floor of a column's mean square in [`saderf_fit`], in units of the largest squared
/// entry of the queries and keys together. It keeps ψ within `[10⁻³, 10³]` (ψ⁴ is a ratio of
/// two floored mean squares) when a column is zero (or nearly so) on one side — where the
/// optimum is ψ → 0 or ∞ — and makes ψ = 1 where it is zero on both. A column floored on
/// one side then adds at most `√SADERF_FLOOR = 10⁻⁶` times the largest squared entry to the
/// mean of `|Ψxᵢ + Ψ⁻¹yⱼ|²` over pairs, above the unattained infimum.
pub const SADERF_FLOOR: f64 = 1e-12;

/// The fitted parameters of simplified asymmetric dense-exponential random features (SADERF,
/// "FAVOR#", Likhosherstov et al. 2023): a diagonal Ψ = diag(ψ) and GERF's A.
///
/// Because `q·k = (Ψq)·(Ψ⁻¹k)` for any positive diagonal Ψ, [`GerfSoftmax`] applied to
/// `x' = Ψq` on the query side and `y' = Ψ⁻¹k` on the key side is still positive and
/// unbiased for `exp(q·k)` (GERF's `E[φ(x)·φ(y)] = exp(x·y)` holds for every pair x, y). Its
/// second moment is `D⁴(1 − 8A)^{−d/2}·exp(|x' + y'|²/(1 − 8A) + 2q·k)` (`D⁴ = (1 − 4A)^d`):
/// relative to `exp(2q·k)` it grows with `|Ψq + Ψ⁻¹k|²` alone, which Ψ can shrink.
/// [`saderf_fit`] picks the ψ minimising `Σᵢⱼ |Ψxᵢ + Ψ⁻¹yⱼ|²` over the call's query rows xᵢ
/// and key rows yⱼ, column by column `ψₗ = (mean_j y²ⱼₗ / mean_i x²ᵢₗ)^{1/4}` (the cross
/// term `2Σᵢⱼ xᵢₗyⱼₗ` does not depend on ψ; `L_y ψ² Σᵢ x²ᵢₗ + L_x ψ⁻² Σⱼ y²ⱼₗ` is smallest
/// there), then GERF's [`gerf_optimal_a`] of ρ measured on the rescaled rows.
///
/// The map itself stays symmetric — the attention paths map queries and keys through the
/// same [`FeatureMap::map_rows`] — so, as with [`DataAwareSoftmax`]'s key shift, the caller
/// applies the asymmetry: every query row through [`apply_queries`](Self::apply_queries) and
/// every key row through [`apply_keys`](Self::apply_keys) (in the raw units, before the data
/// normaliser; Ψ commutes with it), and then maps both with a [`GerfSoftmax`] of parameter
/// [`a`](Self::a). The exact softmax weights of hybrid attention are unchanged by the
/// rescaling (`x'·y' = q·k` up to rounding), so hybrid plans take the rescaled rows too.
/// Values are not touched.
///
/// Fitting from a call's own queries and keys makes every output depend on every query and
/// key of the call: right for bidirectional attention (the paper's use), but in causal
/// attention it would let future tokens change past outputs; fit once from calibration data
/// there, or use [`calibrate`](crate::calibrate).
///
/// ```
/// use favor_core::*;
/// let (l, d, m) = (24, 4, 64);
/// // Keys spread far more than queries in the first two coordinates.
/// let mut q: Vec<f64> = (0..l * d).map(|i| 0.3 * (i as f64 * 0.37).sin()).collect();
/// let mut k: Vec<f64> = (0..l * d)
///     .map(|i| (i as f64 * 0.71).cos() * if i % d < 2 { 2.0 } else { 0.3 })
///     .collect();
/// let v = q.clone();
/// let mut psi = vec![0f64; d];
/// let fit = saderf_fit(&q, &k, d, true, &mut psi).unwrap();
/// assert!(fit.psi()[0] > 1.0 && fit.a() < 0.0);
/// fit.apply_queries(&mut q).unwrap(); // Ψq
/// fit.apply_keys(&mut k).unwrap(); // Ψ⁻¹k
/// let mut w = vec![0f64; m * d];
/// projection(ProjectionKind::default(), 7, m, d, &mut w).unwrap();
/// let mut norms = vec![0f64; m];
/// let phi = GerfSoftmax::new(&w, m, d, fit.a(), &mut norms).unwrap();
/// let shape = Shape::new(l, d, d);
/// let plan = Plan::new(PlanKind::Bidirectional, Scalar, &phi, shape, Options::default()).unwrap();
/// let mut out = vec![0f64; l * d];
/// plan.run(&q, &k, &v, &mut out, &mut vec![0f64; plan.scratch_len()]).unwrap();
/// assert!(out.iter().all(|o| o.is_finite()));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SaderfScales<'p, T> {
    /// ψ, one per coordinate, each finite and positive.
    psi: &'p [T],
    rho: f64,
    a: f64,
}

/// Fits SADERF's ψ (into `psi`, at least `dim` elements; the first `dim` are written) and A
/// from query rows `q` and key rows `k` (rows of `dim`, row-major, at least one of each): see
/// [`SaderfScales`]. `normalized` says whether the map applies the d^(-1/4) data normaliser,
/// which ρ (and so A) is measured after; ψ does not depend on it. Each column's mean square
/// is floored at [`SADERF_FLOOR`] times the largest squared entry of `q` and `k`, so ψ is
/// finite and positive whatever the data; all-zero inputs give ψ = 1 and A = 0. O((rows of
/// q + rows of k)·dim), in f64.
///
/// Errors, with nothing written: a zero `dim` or no rows ([`Error::ZeroDimension`]), a length
/// not a multiple of `dim` ([`Error::LengthMismatch`]), NaN or infinities
/// ([`Error::NonFinite`]), entries beyond about 10¹⁵³ whose squares overflow f64
/// ([`Error::OutOfRange`]), a short `psi` ([`Error::BufferTooSmall`]).
///
/// [`Error::ZeroDimension`]: crate::Error::ZeroDimension
/// [`Error::LengthMismatch`]: crate::Error::LengthMismatch
/// [`Error::NonFinite`]: crate::Error::NonFinite
/// [`Error::OutOfRange`]: crate::Error::OutOfRange
/// [`Error::BufferTooSmall`]: crate::Error::BufferTooSmall
pub fn saderf_fit<'p, T: Float>(
    q: &[T],
    k: &[T],
    dim: usize,
    normalized: bool,
    psi: &'p mut [T],
) -> Result<SaderfScales<'p, T>> {
    let d = check::nonzero("dim", dim)?;
    let mut top = 0f64;
    for (what, x) in [("q", q), ("k", k)] {
        let rows = check::nonzero(what, x.len() / d)?;
        check::exact(what, x, rows * d)?;
        let largest = check::max_abs(what, x, d)?;
        // ρ ≤ 4·top² (the bound in the loop below): refuse what would make it infinite.
        check::within(what, x, d, largest, T::from_f64(MAX_ENTRY))?;
        top = top.max(Float::to_f64(largest));
    }
    check::room("psi", psi, d)?;
    let psi = &mut psi[..d];
    if top == 0.0 {
        psi.fill(T::one());
        return Ok(SaderfScales {
            psi,
            rho: 0.0,
            a: 0.0,
        });
    }
    // Entries are taken relative to the largest, so no square overflows or (for the
    // columns that matter) underflows; ψ is a ratio and does not see the scale.
    let inv = 1.0 / top;
    let (nq, nk) = ((q.len() / d) as f64, (k.len() / d) as f64);
    let mut scaled_rho = 0.0;
    for (l, p) in psi.iter_mut().enumerate() {
        let (sq_q, mean_q) = column_moments(q, d, l, inv);
        let (sq_k, mean_k) = column_moments(k, d, l, inv);
        let (a, b) = (sq_q / nq, sq_k / nk);
        let ratio = b.max(SADERF_FLOOR) / a.max(SADERF_FLOOR);
        *p = T::from_f64(libm::sqrt(libm::sqrt(ratio)));
        // ρ of the rescaled rows, with ψ as stored: mean|Ψx|² + mean|Ψ⁻¹y|² + 2 mean x·mean y.
        // Each of the first two terms is at most √(a'b') ≤ 1 per column (a', b' the floored
        // mean squares, ψ⁴ = b'/a'), so the scaled ρ is at most 4.
        let s = Float::to_f64(*p);
        scaled_rho += s * s * a + b / (s * s) + 2.0 * mean_q * mean_k;
    }
    let norm = if normalized {
        1.0 / libm::sqrt(d as f64)
    } else {
        1.0
    };
    // Rounding can leave the cross term a hair below −(the squares) for x ≈ −y.
    let rho = (scaled_rho.max(0.0) * top * top / d as f64) * norm;
    let psi: &'p [T] = psi;
    Ok(SaderfScales {
        psi,
        rho,
        a: gerf_optimal_a(rho),
    })
}

/// The largest entry [`saderf_fit`] takes: `4·top²` (its bound on ρ) stays finite in f64.
const MAX_ENTRY: f64 = 6.7e153;

/// `(Σᵢ (xᵢₗ·s)², Σᵢ xᵢₗ·s / rows)` of column `l` of rows of `d`.
fn column_moments<T: Float>(x: &[T], d: usize, l: usize, s: f64) -> (f64, f64) {
    let (mut sq, mut sum) = (0.0, 0.0);
    for v in x.iter().skip(l).step_by(d) {
        let v = Float::to_f64(*v) * s;
        sq += v * v;
        sum += v;
    }
    (sq, sum / (x.len() / d) as f64)
}

impl<T: Float> SaderfScales<'_, T> {
    /// ψ, one per coordinate (finite, positive).
    pub fn psi(&self) -> &[T] {
        self.psi
    }

    /// GERF's parameter A for the rescaled rows: [`gerf_optimal_a`]`(`[`rho`](Self::rho)`)`.
    /// Give it to [`GerfSoftmax::new`].
    pub fn a(&self) -> f64 {
        self.a
    }

    /// ρ = mean over pairs of `|Ψxᵢ + Ψ⁻¹yⱼ|²/d` (after the data normaliser when the fit was
    /// normalised), the statistic A was chosen from: [`gerf_rho`] of the rescaled rows.
    pub fn rho(&self) -> f64 {
        self.rho
    }

    /// Multiplies every row of `q` (rows of d, the fit's dimension) by ψ, in place: the query
    /// side `Ψq`.
    pub fn apply_queries(&self, q: &mut [T]) -> Result<()> {
        self.rescale("q", q, |x, p| x * p)
    }

    /// Divides every row of `k` (rows of d) by ψ, in place: the key side `Ψ⁻¹k`.
    pub fn apply_keys(&self, k: &mut [T]) -> Result<()> {
        self.rescale("k", k, |x, p| x / p)
    }

    /// Applies `f(x, ψₗ)` to every entry after checking, with nothing written on error: the
    /// length is whole rows ([`Error::LengthMismatch`](crate::Error::LengthMismatch)), every
    /// entry finite ([`Error::NonFinite`](crate::Error::NonFinite)) and so is every result
    /// ([`Error::OutOfRange`](crate::Error::OutOfRange): ψ up to 10³ can push an entry near
    /// `T`'s largest beyond it).
    fn rescale(&self, what: &'static str, x: &mut [T], f: impl Fn(T, T) -> T) -> Result<()> {
        let d = self.psi.len();
        check::exact(what, x, x.len() / d * d)?;
        check::finite(what, x, d)?;
        let scaled = |(i, &v): (usize, &T)| f(v, self.psi[i % d]);
        if let Some(i) = x.iter().enumerate().position(|e| !scaled(e).is_finite()) {
            return Err(crate::Error::OutOfRange { what, row: i / d });
        }
        for row in x.chunks_exact_mut(d) {
            for (v, &p) in row.iter_mut().zip(self.psi) {
                *v = f(*v, p);
            }
        }
        Ok(())
    }
}
