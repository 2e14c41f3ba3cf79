//! Random projections W (m×d): iid Gaussian rows or orthogonal random features (ORF).

use crate::error::{Result, check};
use crate::{Float, Normals};

/// How the rows of an orthogonal block are scaled after orthonormalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RowNorms {
    /// Each row gets the norm of a fresh Gaussian d-vector (χ(d)-distributed), so every row
    /// is marginally N(0, I_d), which keeps the softmax estimator unbiased. The paper's default.
    #[default]
    Chi,
    /// Every row has norm √d (the paper's "regularised" SMREG variant; slightly biased for
    /// softmax, lower variance).
    SqrtD,
}

/// Which projection to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectionKind {
    /// Independent N(0, I_d) rows.
    Iid,
    /// Orthogonal random features: ⌈m/d⌉ independent blocks, each the rows of a Haar-random
    /// d×d rotation (the last block keeps only the rows it needs), rows scaled by `RowNorms`.
    Orthogonal(RowNorms),
    /// Simplex random features (Reid et al., 2023): each block of d rows is a regular simplex
    /// `S` (unit rows, `sᵢ·sⱼ = −1/(d−1)`) turned by a Haar-random rotation, rows scaled by χ(d)
    /// norms: still marginally N(0, I_d), so the softmax estimators stay unbiased, with rows
    /// of a block spread further apart than ORF's orthogonal ones (lower MSE for positive
    /// features). Needs `dim ≥ 2` and `features` a multiple of `dim` (whole blocks).
    Simplex,
    /// Structured orthogonal random features (SORF, Yu et al. 2016): blocks
    /// `(1/d')·H·D₁·H·D₂·H·D₃` of Walsh–Hadamard matrices H and random sign diagonals Dᵢ,
    /// d' the power of two at or above d (inputs zero-padded). Rows of a block are orthogonal
    /// with norm √d' (as [`RowNorms::SqrtD`]) and second moment `I_d`, but not Gaussian, so
    /// slightly biased for softmax. W is written densely here; [`sorf_apply`](crate::sorf_apply)
    /// computes the same `W·x` from the signs alone in O(d' log d'). Needs d' ≤ 512.
    Sorf,
}

impl Default for ProjectionKind {
    fn default() -> Self {
        ProjectionKind::Orthogonal(RowNorms::Chi)
    }
}

/// Elements a projection buffer for `features` rows of dimension `dim` needs (`m·d`).
pub fn projection_len(features: usize, dim: usize) -> Result<usize> {
    check::mul(
        check::nonzero("features", features)?,
        check::nonzero("dim", dim)?,
    )
}

/// Draws the projection W (`features × dim`, row-major) into `out` from `seed`.
///
/// Orthogonal blocks come from modified Gram–Schmidt, run twice ("twice is enough") on
/// Gaussian rows: Gram–Schmidt of iid Gaussian vectors is exactly the Haar measure (it is QR
/// with a positive diagonal of R), and needs no scratch beyond `out` itself. The order in
/// which normals are consumed is fixed: all blocks' Gaussian rows first, then (for
/// [`RowNorms::Chi`]) one fresh d-vector per row for its norm.
///
/// ```
/// use favor_core::{projection, projection_len, ProjectionKind};
/// let (m, d) = (8, 4);
/// let mut w = [0f64; 32];
/// assert_eq!(projection_len(m, d).unwrap(), w.len());
/// projection(ProjectionKind::default(), 42, m, d, &mut w).unwrap();
/// // Rows 0..4 form one orthogonal block.
/// let dot: f64 = (0..d).map(|j| w[j] * w[d + j]).sum();
/// assert!(dot.abs() < 1e-12);
/// ```
pub fn projection<T: Float>(
    kind: ProjectionKind,
    seed: u64,
    features: usize,
    dim: usize,
    out: &mut [T],
) -> Result<()> {
    let len = projection_len(features, dim)?;
    check::room("projection", out, len)?;
    if kind == ProjectionKind::Simplex {
        if dim < 2 {
            return Err(crate::Error::InvalidParameter {
                what: "a simplex projection needs dim >= 2",
            });
        }
        if !features.is_multiple_of(dim) {
            return Err(crate::Error::InvalidParameter {
                what: "a simplex projection needs features a multiple of dim",
            });
        }
    }
    if kind == ProjectionKind::Sorf {
        if dim > crate::structured::SORF_DENSE_MAX_PADDED {
            return Err(crate::Error::InvalidParameter {
                what: "a dense SORF projection needs dim <= 512",
            });
        }
        crate::structured::sorf_dense(seed, features, dim, &mut out[..len]);
        return Ok(());
    }
    let w = &mut out[..len];
    let mut normals = Normals::new(seed);
    normals.fill(w);
    let norms = match kind {
        ProjectionKind::Iid => return Ok(()),
        ProjectionKind::Orthogonal(n) => n,
        ProjectionKind::Simplex => RowNorms::Chi,
        // Written above, from its signs alone.
        ProjectionKind::Sorf => return Ok(()),
    };
    for block in w.chunks_mut(dim * dim) {
        orthonormalise_rows(block, dim, &mut normals);
        if kind == ProjectionKind::Simplex {
            simplex_rows(block, dim);
        }
    }
    let sqrt_d = T::from_usize(dim).libm_sqrt();
    for row in w.chunks_exact_mut(dim) {
        let scale = match norms {
            RowNorms::SqrtD => sqrt_d,
            RowNorms::Chi => {
                let mut ss = 0.0;
                for _ in 0..dim {
                    let g = normals.next_f64();
                    ss += g * g;
                }
                T::from_f64(libm::sqrt(ss))
            }
        };
        for x in row {
            *x = *x * scale;
        }
    }
    Ok(())
}

/// Orthonormalises the rows of `block` (rows ≤ dim) in place by two passes of modified
/// Gram–Schmidt. A row that collapses (probability zero for Gaussian input, but possible
/// for f32 rounding in tiny dims) is redrawn from `normals`.
fn orthonormalise_rows<T: Float>(block: &mut [T], dim: usize, normals: &mut Normals) {
    let rows = block.len() / dim;
    let mut r = 0;
    while r < rows {
        let (done, rest) = block.split_at_mut(r * dim);
        let row = &mut rest[..dim];
        let before = norm(row);
        for _pass in 0..2 {
            for prev in done.chunks_exact(dim) {
                let p = dot(prev, row);
                for (x, &y) in row.iter_mut().zip(prev) {
                    *x = *x - p * y;
                }
            }
        }
        let after = norm(row);
        // Losing almost all of the norm means the row was (numerically) in the span of the
        // previous ones: its direction is noise, so draw it again.
        let collapsed =
            after.partial_cmp(&(before * T::from_f64(1e-3))) != Some(core::cmp::Ordering::Greater);
        if collapsed || after == T::zero() {
            normals.fill(row);
            continue;
        }
        for x in row.iter_mut() {
            *x = *x / after;
        }
        r += 1;
    }
}

/// Turns the d orthonormal rows qᵢ of a full block into the rows of a regular simplex,
/// `sᵢ = (qᵢ − c/d)·√(d/(d−1))` with `c = Σⱼ qⱼ`: unit rows with `sᵢ·sⱼ = −1/(d−1)`, and the
/// same rotation applied to the standard simplex. Column by column, so no scratch: column k
/// of every row needs only `c_k`.
fn simplex_rows<T: Float>(block: &mut [T], dim: usize) {
    let inv_d = T::one() / T::from_usize(dim);
    let scale = (T::from_usize(dim) / T::from_usize(dim - 1)).libm_sqrt();
    for k in 0..dim {
        let c = block.chunks_exact(dim).fold(T::zero(), |s, row| s + row[k]);
        for row in block.chunks_exact_mut(dim) {
            row[k] = (row[k] - c * inv_d) * scale;
        }
    }
}

fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).fold(T::zero(), |s, (&x, &y)| s + x * y)
}

fn norm<T: Float>(a: &[T]) -> T {
    dot(a, a).libm_sqrt()
}

/// Writes Wᵀ (`dim × features`, row-major) of a projection W (`features × dim`) into `out`,
/// for [`PositiveSoftmax::with_transposed_projection`](crate::PositiveSoftmax::with_transposed_projection)
/// and friends.
pub fn transpose_projection<T: Float>(
    w: &[T],
    features: usize,
    dim: usize,
    out: &mut [T],
) -> Result<()> {
    let len = projection_len(features, dim)?;
    check::exact("projection", w, len)?;
    check::room("transposed projection", out, len)?;
    for i in 0..features {
        for j in 0..dim {
            out[j * features + i] = w[i * dim + j];
        }
    }
    Ok(())
}
