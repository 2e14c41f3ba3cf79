//! Structured orthogonal random features (SORF, Yu et al. 2016): the projection
//! `W = (1/d')·H·D₁·H·D₂·H·D₃` per block, applied in O(d' log d') per row with the fast
//! Walsh–Hadamard transform and stored as 3·d' signs instead of m·d weights.
//!
//! `H` is the d'×d' Sylvester–Hadamard matrix (entries ±1, `HHᵀ = d'·I`), `d'` the power of
//! two at or above the input dim d (inputs are zero-padded to it), and `Dᵢ` diagonal matrices
//! of independent random signs. Each block contributes d' rows; `⌈m/d'⌉` independent blocks
//! are stacked and the last keeps only the rows it needs, as ORF blocks do.
//!
//! What the rows are: within a full block, orthogonal with norm exactly √d' (the product of
//! three orthogonal matrices `H/√d'` and the signs, times √d'), like
//! [`RowNorms::SqrtD`](crate::RowNorms::SqrtD) ORF rows; on the first d columns (what a
//! padded input sees) each row has second moment `E[w wᵀ] = I_d`. They are not Gaussian, so
//! the softmax estimators are slightly biased (the bias vanishes as d grows; Yu et al.,
//! Thm 3); the tests measure their error next to ORF's.
//!
//! [`projection`](crate::projection) with [`ProjectionKind::Sorf`](crate::ProjectionKind::Sorf)
//! writes the same W densely (each block is [`sorf_apply`] of the unit vectors), so every
//! feature map can use it; [`sorf_apply`] is the same product without W, for callers whose
//! projection must not stream m·d weights (decoding one token).

use crate::error::{Result, check};
use crate::{Error, Float, Normals};

/// The padded dim d' (the power of two at or above `dim`) and the block count `⌈m/d'⌉`.
fn sorf_dims(features: usize, dim: usize) -> Result<(usize, usize)> {
    let features = check::nonzero("features", features)?;
    let padded = check::nonzero("dim", dim)?
        .checked_next_power_of_two()
        .ok_or(Error::InvalidParameter {
            what: "a SORF projection needs dim ≤ usize::MAX / 2",
        })?;
    Ok((padded, features.div_ceil(padded)))
}

/// Elements of the sign buffer a SORF projection of `features` rows over `dim` inputs keeps
/// in place of W: `3 · ⌈m/d'⌉ · d'` (d' the power of two at or above d).
///
/// ```
/// use favor_core::{sorf_signs_len, projection_len};
/// // m = 256 features over d = 64: 768 signs instead of 16384 weights.
/// assert_eq!(sorf_signs_len(256, 64).unwrap(), 768);
/// assert_eq!(projection_len(256, 64).unwrap(), 16384);
/// ```
pub fn sorf_signs_len(features: usize, dim: usize) -> Result<usize> {
    let (padded, blocks) = sorf_dims(features, dim)?;
    check::mul(check::mul(3, blocks)?, padded)
}

/// Scratch [`sorf_apply`] needs: d' elements.
pub fn sorf_scratch_len(features: usize, dim: usize) -> Result<usize> {
    sorf_dims(features, dim).map(|(padded, _)| padded)
}

/// Draws the signs (±1) of a SORF projection from `seed` into `out`: per block `D₁`, `D₂`,
/// `D₃` (d' each), each sign the sign of the next [`Normals`] sample. The same seed gives
/// the W of [`projection`](crate::projection) with
/// [`ProjectionKind::Sorf`](crate::ProjectionKind::Sorf).
pub fn sorf_signs<T: Float>(seed: u64, features: usize, dim: usize, out: &mut [T]) -> Result<()> {
    let len = sorf_signs_len(features, dim)?;
    check::room("signs", out, len)?;
    let mut normals = Normals::new(seed);
    for s in &mut out[..len] {
        *s = sign(&mut normals);
    }
    Ok(())
}

/// The sign of the next [`Normals`] sample, ±1: every SORF sign is drawn so.
fn sign<T: Float>(normals: &mut Normals) -> T {
    if normals.next_f64() < 0.0 {
        -T::one()
    } else {
        T::one()
    }
}

/// `out = W·x` for the SORF projection W whose signs [`sorf_signs`] drew (`features` outputs
/// from `dim` inputs) without forming W: per block three fast Walsh–Hadamard transforms of
/// the zero-padded input, O(d' log d') instead of O(d'·d).
///
/// `scratch` needs [`sorf_scratch_len`] elements. The transform is exact in the sense that
/// its only rounding is the additions of the butterflies (the scale 1/d' is a power of two),
/// so it agrees with the dense W to a few ulps of `‖x‖₁` per output.
///
/// ```
/// use favor_core::{projection, sorf_apply, sorf_signs, sorf_signs_len, ProjectionKind};
/// let (m, d) = (8, 3); // d' = 4: two blocks
/// let mut signs = vec![0f64; sorf_signs_len(m, d).unwrap()];
/// sorf_signs(42, m, d, &mut signs).unwrap();
/// let x = [0.5, -1.0, 2.0];
/// let (mut out, mut scratch) = ([0f64; 8], [0f64; 4]);
/// sorf_apply(&signs, m, d, &x, &mut out, &mut scratch).unwrap();
/// // The same W, written densely.
/// let mut w = [0f64; 24];
/// projection(ProjectionKind::Sorf, 42, m, d, &mut w).unwrap();
/// for r in 0..m {
///     let dense: f64 = (0..d).map(|j| w[r * d + j] * x[j]).sum();
///     assert!((dense - out[r]).abs() < 1e-12);
/// }
/// ```
pub fn sorf_apply<T: Float>(
    signs: &[T],
    features: usize,
    dim: usize,
    x: &[T],
    out: &mut [T],
    scratch: &mut [T],
) -> Result<()> {
    let (padded, _) = sorf_dims(features, dim)?;
    check::exact("signs", signs, sorf_signs_len(features, dim)?)?;
    check::exact("x", x, dim)?;
    check::room("out", out, features)?;
    check::room("scratch", scratch, padded)?;
    let s = &mut scratch[..padded];
    let inv = T::one() / T::from_usize(padded);
    let blocks = signs.chunks_exact(3 * padded);
    for (rows, block) in out[..features].chunks_mut(padded).zip(blocks) {
        transform_block(block, x, s);
        for (o, &si) in rows.iter_mut().zip(s.iter()) {
            *o = si * inv;
        }
    }
    Ok(())
}

/// One block's `H·D₁·H·D₂·H·D₃·x` (without the 1/d') into `s` (d' elements), `block` its
/// 3·d' signs `[D₁ | D₂ | D₃]`, `x` at most d' inputs (zero-padded).
fn transform_block<T: Float>(block: &[T], x: &[T], s: &mut [T]) {
    let d3 = &block[2 * s.len()..];
    for ((si, &xi), &di) in s.iter_mut().zip(x).zip(d3) {
        *si = xi * di;
    }
    s[x.len()..].fill(T::zero());
    transform_signed(block, s);
}

/// The rest of [`transform_block`] once `s` holds `D₃·x`: `s ← H·D₁·H·D₂·H·s`.
fn transform_signed<T: Float>(block: &[T], s: &mut [T]) {
    let padded = s.len();
    let (d1, d2) = (&block[..padded], &block[padded..2 * padded]);
    walsh_hadamard(s);
    for (si, &di) in s.iter_mut().zip(d2) {
        *si = *si * di;
    }
    walsh_hadamard(s);
    for (si, &di) in s.iter_mut().zip(d1) {
        *si = *si * di;
    }
    walsh_hadamard(s);
}

/// Checks that `signs` ([`sorf_signs`]) are the structured form of `w` (`features × dim`,
/// row-major): column j of W must equal the transform of the unit vector eⱼ, entry for entry.
/// Exact in any precision: every entry of such a W is an integer of magnitude at most d'²
/// times 1/d' (a power of two), which f32 holds exactly for d' ≤ [`SORF_DENSE_MAX_PADDED`],
/// whatever the order of the additions. O(d·m·log d') once, when a map takes the signs.
pub(crate) fn check_structured<T: Float>(
    signs: &[T],
    w: &[T],
    features: usize,
    dim: usize,
) -> Result<()> {
    let (padded, _) = sorf_dims(features, dim)?;
    if padded > SORF_DENSE_MAX_PADDED {
        return Err(Error::InvalidParameter {
            what: "a structured projection needs dim <= 512",
        });
    }
    check::exact("signs", signs, sorf_signs_len(features, dim)?)?;
    check::exact("projection", w, check::mul(features, dim)?)?;
    let mut buf = [T::zero(); SORF_DENSE_MAX_PADDED];
    let s = &mut buf[..padded];
    let inv = T::one() / T::from_usize(padded);
    for j in 0..dim {
        for (b, block) in signs.chunks_exact(3 * padded).enumerate() {
            // D₃·eⱼ.
            s.fill(T::zero());
            s[j] = block[2 * padded + j];
            transform_signed(block, s);
            let rows = b * padded..features.min((b + 1) * padded);
            // Equal values (a zero's sign depends on the order of the sign flips).
            let same = rows
                .zip(s.iter())
                .all(|(r, &si)| w[r * dim + j] == si * inv);
            if !same {
                return Err(Error::InvalidParameter {
                    what: "the signs are not this projection's structured form \
                           (sorf_signs with the seed W was drawn from)",
                });
            }
        }
    }
    Ok(())
}

/// The largest padded dim d' [`projection`](crate::projection) writes a dense SORF W for
/// (its scratch is one d'-vector on the stack; [`sorf_apply`] takes the caller's and has no
/// such limit).
pub(crate) const SORF_DENSE_MAX_PADDED: usize = 512;

/// Writes the dense W (`features × dim`, row-major) of the SORF projection drawn from `seed`
/// into `out` (`projection_len(features, dim)` elements; d' ≤ [`SORF_DENSE_MAX_PADDED`], both
/// checked by the caller). Row i of a block is `(1/d')·D₃·H·D₂·H·D₁·H·eᵢ` (H is symmetric),
/// so each row is one transform of a unit vector, and the signs are drawn again for each row
/// from the block's place in the [`Normals`] stream instead of being stored.
pub(crate) fn sorf_dense<T: Float>(seed: u64, features: usize, dim: usize, out: &mut [T]) {
    let (padded, _) = sorf_dims(features, dim).expect("checked by projection");
    let mut buf = [T::zero(); SORF_DENSE_MAX_PADDED];
    let s = &mut buf[..padded];
    let inv = T::one() / T::from_usize(padded);
    let mut block_start = Normals::new(seed);
    for block in out[..features * dim].chunks_mut(padded * dim) {
        let mut after = block_start.clone();
        for (i, row) in block.chunks_exact_mut(dim).enumerate() {
            let mut n = block_start.clone();
            s.fill(T::zero());
            s[i] = T::one();
            walsh_hadamard(s);
            for x in s.iter_mut() {
                *x = *x * sign::<T>(&mut n);
            }
            walsh_hadamard(s);
            for x in s.iter_mut() {
                *x = *x * sign::<T>(&mut n);
            }
            walsh_hadamard(s);
            for x in s.iter_mut() {
                *x = *x * sign::<T>(&mut n);
            }
            for (o, &x) in row.iter_mut().zip(s.iter()) {
                *o = x * inv;
            }
            after = n;
        }
        block_start = after;
    }
}

/// The unnormalised fast Walsh–Hadamard transform `x ← H x` in place (len a power of two):
/// log₂ n passes of butterflies `(a, b) → (a + b, a − b)`.
fn walsh_hadamard<T: Float>(x: &mut [T]) {
    let n = x.len();
    let mut h = 1;
    while h < n {
        for pair in x.chunks_exact_mut(2 * h) {
            let (lo, hi) = pair.split_at_mut(h);
            for (a, b) in lo.iter_mut().zip(hi) {
                let (p, q) = (*a, *b);
                *a = p + q;
                *b = p - q;
            }
        }
        h *= 2;
    }
}
