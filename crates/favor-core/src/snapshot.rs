//! The byte format of a [`Stream`](crate::Stream)'s state, and the checks on restoring it.
//!
//! Version 2 (written), little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `FAVS` |
//! | 4..8 | version (u32) = 2 |
//! | 8..12 | dtype tag (u32: 4 = f32, 8 = f64) |
//! | 12..16 | keys in the ring r (u32, ≤ [`RING`]) |
//! | 16..24 | feature dim M (u64) |
//! | 24..32 | value dim dv (u64) |
//! | 32..40 | tokens absorbed (u64) |
//! | 40..48 | feature-map fingerprint (u64) |
//! | 48..56 | log-scale c (f64; −∞ only when tokens = 0) |
//! | 56.. | as T: the total S (M·dv) and z (M), their compensation (the same), the ring's key rows (RING·M) and value rows (RING·dv), rows past r zero |
//! | last 4 | CRC-32 of every byte before it (u32) |
//!
//! Version 1 (read only) has the same header with 12..16 zero, one copy of S and z, no ring
//! and no checksum; it restores with zero compensation and an empty ring.

use crate::error::{Result, SnapshotError};
use crate::state::{PrefixState, RING, block_len, stabiliser};
use crate::{FeatureMap, Float, crc32};

const MAGIC: [u8; 4] = *b"FAVS";
/// Version of the snapshot byte format written by [`Stream::snapshot`](crate::Stream::snapshot).
pub const SNAPSHOT_VERSION: u32 = 2;
const HEADER: usize = 56;
const TRAILER: usize = 4;

/// Elements of the payload of a version-`v` snapshot, `None` on overflow.
fn payload(version: u32, m: u64, dv: u64) -> Option<u64> {
    let block = m.checked_mul(dv)?.checked_add(m)?;
    match version {
        1 => Some(block),
        _ => block
            .checked_mul(2)?
            .checked_add((RING as u64).checked_mul(m.checked_add(dv)?)?),
    }
}

/// Bytes a version-2 snapshot of `state` takes.
pub(crate) fn len<T: Float>(state: &PrefixState<'_, T>) -> usize {
    let parts: usize = state.storage().iter().map(|p| p.len()).sum();
    HEADER + parts * size_of::<T>() + TRAILER
}

/// Writes `state` (of a stream over `fm`) into `out[..len(state)]`.
pub(crate) fn write<T: Float, F: FeatureMap<T>>(
    state: &PrefixState<'_, T>,
    fm: &F,
    out: &mut [u8],
) {
    let n = len(state);
    let out = &mut out[..n];
    out[0..4].copy_from_slice(&MAGIC);
    out[4..8].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out[8..12].copy_from_slice(&T::DTYPE_TAG.to_le_bytes());
    out[12..16].copy_from_slice(&(state.ring_len() as u32).to_le_bytes());
    out[16..24].copy_from_slice(&(state.features() as u64).to_le_bytes());
    out[24..32].copy_from_slice(&(state.value_dim() as u64).to_le_bytes());
    out[32..40].copy_from_slice(&state.tokens().to_le_bytes());
    out[40..48].copy_from_slice(&fm.fingerprint().to_le_bytes());
    out[48..56].copy_from_slice(&state.log_scale().to_f64().to_le_bytes());
    let mut at = HEADER;
    for part in state.storage() {
        let bytes = size_of_val(part);
        write_le(part, &mut out[at..at + bytes]);
        at += bytes;
    }
    let crc = crc32(&out[..at]);
    out[at..].copy_from_slice(&crc.to_le_bytes());
}

/// A decoded snapshot: header fields and the payload's parts as values.
struct Decoded<'b, T> {
    tokens: u64,
    log_scale: T,
    ring: usize,
    /// Total, compensation, ring keys, ring values as bytes (version 1: the total only).
    parts: [&'b [u8]; 4],
}

impl<T: Float> Decoded<'_, T> {
    fn values(&self, part: usize) -> impl Iterator<Item = T> + Clone + '_ {
        self.parts[part]
            .chunks_exact(size_of::<T>())
            .map(read_le::<T>)
    }
    fn at(&self, part: usize, i: usize) -> f64 {
        let n = size_of::<T>();
        self.parts[part]
            .get(i * n..(i + 1) * n)
            .map_or(0.0, |c| read_le::<T>(c).to_f64())
    }
}

/// Replaces `state` (of a stream over `fm`) with the snapshot in `bytes`; on any error the
/// state is unchanged.
pub(crate) fn restore<T: Float, F: FeatureMap<T>>(
    state: &mut PrefixState<'_, T>,
    fm: &F,
    bytes: &[u8],
) -> Result<()> {
    let d = decode(state, fm, bytes)?;
    check_state(state, fm, &d)?;
    let (parts, ring) = state.storage_mut();
    for (dst, src) in parts.into_iter().zip(d.parts) {
        dst.fill(T::zero());
        for (x, c) in dst.iter_mut().zip(src.chunks_exact(size_of::<T>())) {
            *x = read_le(c);
        }
    }
    *ring = T::from_usize(d.ring);
    state.set_raw(d.log_scale, d.tokens);
    Ok(())
}

/// Header, length and checksum checks.
fn decode<'b, T: Float, F: FeatureMap<T>>(
    state: &PrefixState<'_, T>,
    fm: &F,
    bytes: &'b [u8],
) -> Result<Decoded<'b, T>> {
    let (u32_at, u64_at) = open(bytes, MAGIC, HEADER)?;
    let version = u32_at(4);
    if version != 1 && version != SNAPSHOT_VERSION {
        return Err(SnapshotError::UnsupportedVersion(version).into());
    }
    // The length the header itself implies, so that a truncated or padded snapshot reads as
    // what it is before the checksum (which it would fail too) is consulted.
    let trailer = if version == 1 { 0 } else { TRAILER };
    let elem = u64::from(u32_at(8));
    let implied = payload(version, u64_at(16), u64_at(24))
        .and_then(|n| n.checked_mul(elem))
        .and_then(|n| n.checked_add((HEADER + trailer) as u64));
    if implied != Some(bytes.len() as u64) || !matches!(elem, 4 | 8) {
        return Err(SnapshotError::WrongLength.into());
    }
    if version == SNAPSHOT_VERSION {
        check_crc(bytes)?;
    }
    if u32_at(8) != T::DTYPE_TAG {
        return Err(SnapshotError::WrongDType.into());
    }
    let (m, dv) = (state.features(), state.value_dim());
    if u64_at(16) != m as u64 || u64_at(24) != dv as u64 {
        return Err(SnapshotError::WrongDims.into());
    }
    if u64_at(40) != fm.fingerprint() {
        return Err(SnapshotError::WrongFeatureMap.into());
    }
    // A full ring is folded at once: a live state holds at most RING − 1 keys in it.
    let ring = u32_at(12) as usize;
    if ring >= if version == 1 { 1 } else { RING } {
        return Err(SnapshotError::Corrupt.into());
    }
    let n = size_of::<T>();
    let block = block_len(m, dv)? * n;
    let body = &bytes[HEADER..bytes.len() - trailer];
    let parts = if version == 1 {
        [body, &[][..], &[][..], &[][..]]
    } else {
        let (hi, rest) = body.split_at(block);
        let (lo, rest) = rest.split_at(block);
        let (keys, values) = rest.split_at(RING * m * n);
        [hi, lo, keys, values]
    };
    Ok(Decoded {
        tokens: u64_at(32),
        // Checked after its conversion to T (rounding is fine): 1e300 is a finite f64 but an
        // infinite f32, and an infinite scale would swallow every later key.
        log_scale: T::from_f64(f64::from_bits(u64_at(48))),
        ring,
        parts,
    })
}

/// Checks the CRC-32 in the last 4 bytes of `bytes` (of at least 4) against every byte
/// before it; returns the length before it.
pub(crate) fn check_crc(bytes: &[u8]) -> Result<usize> {
    let body = bytes.len().saturating_sub(TRAILER);
    let stored = u32::from_le_bytes(bytes[body..].try_into().unwrap_or([0; 4]));
    if crc32(&bytes[..body]) != stored {
        return Err(SnapshotError::BadChecksum.into());
    }
    Ok(body)
}

/// Checks that `bytes` hold at least a `header`-byte header and start with `magic`; returns
/// readers of its little-endian u32 and u64 fields by offset (0 past the end).
pub(crate) fn open(
    bytes: &[u8],
    magic: [u8; 4],
    header: usize,
) -> Result<(impl Fn(usize) -> u32 + '_, impl Fn(usize) -> u64 + '_)> {
    if bytes.len() < header {
        return Err(SnapshotError::TooShort.into());
    }
    if bytes[0..4] != magic {
        return Err(SnapshotError::BadMagic.into());
    }
    let u32_at = |i: usize| {
        let b = bytes.get(i..i + 4).and_then(|b| b.try_into().ok());
        u32::from_le_bytes(b.unwrap_or([0; 4]))
    };
    let u64_at = |i: usize| {
        let b = bytes.get(i..i + 8).and_then(|b| b.try_into().ok());
        u64::from_le_bytes(b.unwrap_or([0; 8]))
    };
    Ok((u32_at, u64_at))
}

/// What every state a stream over `fm` can reach satisfies; anything else is refused as
/// [`SnapshotError::Corrupt`], even with a valid checksum.
fn check_state<T: Float, F: FeatureMap<T>>(
    state: &PrefixState<'_, T>,
    fm: &F,
    d: &Decoded<'_, T>,
) -> Result<()> {
    let corrupt = Err(SnapshotError::Corrupt.into());
    let all = || (0..4).flat_map(|p| d.values(p));
    if d.tokens == u64::MAX || !all().all(|x| x.is_finite()) {
        return corrupt;
    }
    let c = d.log_scale;
    if d.tokens == 0 {
        // An empty state is all zeros at scale −∞; anything else would answer queries
        // with keys it claims not to have seen.
        return if c == T::neg_infinity() && d.ring == 0 && all().all(|x| x == T::zero()) {
            Ok(())
        } else {
            corrupt
        };
    }
    // Keys' log-scales are bounded for some maps, and the stabiliser sits just above the
    // largest of them (on its grid, except where a version-1 state set it: any finite c is
    // usable, off-grid ones are rescaled inexactly once).
    if !c.is_finite() || c > stabiliser(fm.max_log_scale()) {
        return corrupt;
    }
    let (m, dv) = (state.features(), state.value_dim());
    // The ring holds `ring` keys, at most the tokens seen; its other rows are zero.
    let r = d.ring;
    let unused_zero = d.values(2).skip(r * m).all(|x| x == T::zero())
        && d.values(3).skip(r * dv).all(|x| x == T::zero());
    if r as u64 > d.tokens || !unused_zero {
        return corrupt;
    }
    // The compensation is a TwoSum rounding error: at most half an ulp of the total (twice
    // that after one off-grid rescale, plus underflow).
    let u = T::epsilon().to_f64();
    let tiny = 2.0 * T::min_positive_value().to_f64();
    if !d
        .values(0)
        .zip(d.values(1))
        .all(|(h, l)| l.to_f64().abs() <= u * h.to_f64().abs() + tiny)
    {
        return corrupt;
    }
    if fm.is_positive() && !positive_state_is_sound(m, dv, fm, d) {
        return corrupt;
    }
    Ok(())
}

/// What a state built from positive features always satisfies, and what keeps every answer
/// finite: the ring's key features and z's total are ≥ 0 (z's compensation is a rounding
/// error of either sign); each `|Sᵢⱼ|/zᵢ` is finite (up to one subnormal of z, which may
/// underflow where S does not) (an output is a convex combination of these ratios, since a positive
/// query weighs row i by `qᵢzᵢ`); `M·max|S|`, `M·max z` are finite, so the sums `qᵀS` and
/// `qᵀz` (stored `qᵢ ≤ 1`) cannot overflow. For the softmax maps, whose stored key features
/// are ≤ 1 at the stabiliser, and the largest of the key that set it is > ¼: ring features
/// ≤ 1, `zᵢ ≤ tokens` and `max zᵢ > ¼`. Computed in f64 against `T`'s range.
fn positive_state_is_sound<T: Float, F: FeatureMap<T>>(
    m: usize,
    dv: usize,
    fm: &F,
    d: &Decoded<'_, T>,
) -> bool {
    let max = T::max_value().to_f64();
    let subnormal = T::min_positive_value().to_f64() * T::epsilon().to_f64();
    let softmax = fm.softmax_temperature().is_some();
    let r = d.ring;
    let key = |b: usize, i: usize| d.at(2, b * m + i);
    if (0..r * m).any(|j| {
        let k = d.at(2, j);
        k < 0.0 || (softmax && k > 1.0)
    }) {
        return false;
    }
    let (mut s_max, mut z_max) = (0f64, 0f64);
    for i in 0..m {
        let zj = m * dv + i;
        let ring_z: f64 = (0..r).map(|b| key(b, i)).sum();
        let zi = d.at(0, zj) + d.at(1, zj) + ring_z;
        if d.at(0, zj) < 0.0 || zi < 0.0 {
            return false;
        }
        z_max = z_max.max(zi);
        for j in 0..dv {
            let ring_s: f64 = (0..r).map(|b| key(b, i) * d.at(3, b * dv + j)).sum();
            let sij = (d.at(0, i * dv + j) + d.at(1, i * dv + j) + ring_s).abs();
            s_max = s_max.max(sij);
            // z may underflow (rounding to 0) where S, larger, does not: allow one subnormal.
            if sij > (zi + subnormal) * max {
                return false;
            }
        }
    }
    let bounded = !softmax || (z_max <= d.tokens as f64 * (1.0 + 1e-3) && z_max > 0.25);
    m as f64 * s_max <= max && m as f64 * z_max <= max && bounded
}

pub(crate) fn write_le<T: Float>(src: &[T], dst: &mut [u8]) {
    let bytes: &[u8] = bytemuck::cast_slice(src);
    dst.copy_from_slice(bytes);
    if cfg!(target_endian = "big") {
        dst.chunks_exact_mut(size_of::<T>())
            .for_each(<[u8]>::reverse);
    }
}

pub(crate) fn read_le<T: Float>(c: &[u8]) -> T {
    let mut buf = [0u8; 8];
    let b = &mut buf[..c.len()];
    b.copy_from_slice(c);
    if cfg!(target_endian = "big") {
        b.reverse();
    }
    bytemuck::pod_read_unaligned(b)
}
