//! The symmetric eigendecomposition behind the data-aware map's `Σ_p^{1/2}`: cyclic Jacobi
//! rotations in f64, in caller buffers.

use crate::error::{Result, check};

/// Sweeps after which [`symmetric_eigen`] gives up. Cyclic Jacobi converges quadratically
/// once the off-diagonal part is small; in practice 6–12 sweeps reach full f64 precision
/// for the dimensions of attention heads (d ≤ 256).
const MAX_SWEEPS: usize = 64;

/// Eigendecomposition `A = V Λ Vᵀ` of a symmetric `n × n` matrix by cyclic Jacobi rotations,
/// in f64 and in place: no allocation, no scratch beyond the outputs.
///
/// `a` (row-major, `n·n` elements) is read as its symmetric part `(A + Aᵀ)/2` and destroyed
/// (it ends up diagonal). `values` (at least n) receives the eigenvalues in descending
/// order, and `vectors` (at least `n·n`) the orthonormal eigenvectors as **rows**: row k is
/// the unit eigenvector of `values[k]`, so `A = Σₖ values[k]·vₖvₖᵀ`.
///
/// Each rotation zeroes one off-diagonal pair (Golub & Van Loan, Alg. 8.5.2, the smaller
/// rotation angle). A pair is skipped (and set to 0) once `|aₚq| ≤ ε·‖A‖_F/n` or
/// `|aₚq| ≤ ε·√|aₚₚ aqq|` (ε = f64's machine epsilon); every rotation lowers the off-diagonal
/// mass by `2aₚq²`, so this terminates, and the solver stops after the first sweep that
/// rotates nothing. Eigenvalues are then accurate to about `n·ε·‖A‖_F`, `V` orthogonal to about `n·ε`
/// (tested: reconstruction and orthogonality). Repeated eigenvalues are fine (any orthonormal
/// basis of their eigenspace is returned), as is the zero matrix (V = I).
///
/// Errors: `n = 0`, a wrong length of `a` or short outputs, and non-finite entries (also
/// when `‖A‖_F` overflows f64: [`Error::OutOfRange`](crate::Error::OutOfRange)); the
/// (never observed) failure to converge in 64 sweeps is an `InvalidParameter`.
///
/// ```
/// use favor_core::symmetric_eigen;
/// let mut a = [2.0, 1.0, 1.0, 2.0];
/// let (mut values, mut vectors) = ([0.0; 2], [0.0; 4]);
/// symmetric_eigen(&mut a, 2, &mut values, &mut vectors).unwrap();
/// assert!((values[0] - 3.0).abs() < 1e-15 && (values[1] - 1.0).abs() < 1e-15);
/// // The first eigenvector is ±(1, 1)/√2.
/// assert!((vectors[0].abs() - 0.5f64.sqrt()).abs() < 1e-15);
/// ```
pub fn symmetric_eigen(
    a: &mut [f64],
    n: usize,
    values: &mut [f64],
    vectors: &mut [f64],
) -> Result<()> {
    check::nonzero("dim", n)?;
    let nn = check::mul(n, n)?;
    check::exact("matrix", a, nn)?;
    check::room("eigenvalues", values, n)?;
    check::room("eigenvectors", vectors, nn)?;
    check::finite("matrix", a, n)?;
    let (values, vectors) = (&mut values[..n], &mut vectors[..nn]);
    // The symmetric part, and ‖A‖_F for the skip threshold.
    let mut frob = 0.0;
    for i in 0..n {
        for j in 0..i {
            let s = 0.5 * (a[i * n + j] + a[j * n + i]);
            a[i * n + j] = s;
            a[j * n + i] = s;
        }
    }
    for &x in a.iter() {
        frob += x * x;
    }
    let frob = libm::sqrt(frob);
    if !frob.is_finite() {
        return Err(crate::Error::OutOfRange {
            what: "matrix",
            row: 0,
        });
    }
    vectors.fill(0.0);
    for i in 0..n {
        vectors[i * n + i] = 1.0;
    }
    let floor = f64::EPSILON * frob / n as f64;
    let mut converged = false;
    for _sweep in 0..MAX_SWEEPS {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                let (app, aqq) = (a[p * n + p], a[q * n + q]);
                let small = libm::fabs(apq) <= floor
                    || libm::fabs(apq) <= f64::EPSILON * libm::sqrt(libm::fabs(app * aqq));
                if apq == 0.0 || small {
                    a[p * n + q] = 0.0;
                    a[q * n + p] = 0.0;
                    continue;
                }
                rotated = true;
                rotate(a, vectors, n, p, q);
            }
        }
        if !rotated {
            converged = true;
            break;
        }
    }
    if !converged {
        return Err(crate::Error::InvalidParameter {
            what: "Jacobi eigensolver did not converge",
        });
    }
    for (i, v) in values.iter_mut().enumerate() {
        *v = a[i * n + i];
    }
    sort_descending(values, vectors, n);
    Ok(())
}

/// One Jacobi rotation in the (p, q) plane that zeroes `a[p][q]`: `A ← JᵀAJ`, and the
/// eigenvector rows `Vᵀ ← JᵀVᵀ`.
fn rotate(a: &mut [f64], vt: &mut [f64], n: usize, p: usize, q: usize) {
    let apq = a[p * n + q];
    let (app, aqq) = (a[p * n + p], a[q * n + q]);
    // t = tan θ, the root of t² + 2τt − 1 = 0 of smaller magnitude (|θ| ≤ π/4), written so
    // that it neither overflows nor cancels.
    let tau = (aqq - app) / (2.0 * apq);
    let t = if tau >= 0.0 {
        1.0 / (tau + libm::hypot(1.0, tau))
    } else {
        -1.0 / (-tau + libm::hypot(1.0, tau))
    };
    let c = 1.0 / libm::hypot(1.0, t);
    let s = t * c;
    for k in 0..n {
        if k == p || k == q {
            continue;
        }
        let (akp, akq) = (a[k * n + p], a[k * n + q]);
        let (np, nq) = (c * akp - s * akq, s * akp + c * akq);
        a[k * n + p] = np;
        a[p * n + k] = np;
        a[k * n + q] = nq;
        a[q * n + k] = nq;
    }
    a[p * n + p] = app - t * apq;
    a[q * n + q] = aqq + t * apq;
    a[p * n + q] = 0.0;
    a[q * n + p] = 0.0;
    for k in 0..n {
        let (vp, vq) = (vt[p * n + k], vt[q * n + k]);
        vt[p * n + k] = c * vp - s * vq;
        vt[q * n + k] = s * vp + c * vq;
    }
}

/// Selection sort of the eigenpairs by descending eigenvalue (n is small; swaps rows of V).
fn sort_descending(values: &mut [f64], vectors: &mut [f64], n: usize) {
    for i in 0..n {
        let mut best = i;
        for j in i + 1..n {
            if values[j] > values[best] {
                best = j;
            }
        }
        if best != i {
            values.swap(i, best);
            for k in 0..n {
                vectors.swap(i * n + k, best * n + k);
            }
        }
    }
}
