//! The byte format of a [`PeerMemory`]'s state, and the checks on restoring it.
//!
//! Version 1, little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `FAVP` |
//! | 4..8 | version (u32) = 1 |
//! | 8..12 | dtype tag (u32: 4 = f32, 8 = f64) |
//! | 12..16 | kernel (u32: 0 = softmax, 1 = generalized) |
//! | 16..24 | feature dim M (u64) |
//! | 24..32 | value dim dv (u64) |
//! | 32..40 | tokens absorbed (u64) |
//! | 40..48 | the peer's fingerprint ([`PeerAttention::fingerprint`]) (u64) |
//! | 48..56 | running key shift M (f64; −∞ before the first key and for generalized kernels) |
//! | 56.. | as T: `S_e` (M·dv), `z_e` (M), the values' sum (dv) |
//! | last 4 | CRC-32 of every byte before it (u32) |

use super::PeerAttention;
use super::stream::PeerMemory;
use crate::error::{Result, SnapshotError};
use crate::snapshot::{open, read_le, write_le};
use crate::{Float, crc32};

const MAGIC: [u8; 4] = *b"FAVP";
/// Version of the byte format [`PeerMemory::snapshot`] writes.
pub const PEER_SNAPSHOT_VERSION: u32 = 1;
const HEADER: usize = 56;
const TRAILER: usize = 4;

impl<T: Float, B: AsMut<[T]> + AsRef<[T]>> PeerMemory<T, B> {
    /// Bytes of a snapshot of a stream of `peer` with values of dimension `value_dim`.
    pub fn snapshot_len(&self, peer: &PeerAttention<'_, T>, value_dim: usize) -> Result<usize> {
        let n = self.fit(peer, value_dim)?;
        crate::error::check::add(
            crate::error::check::mul(n, size_of::<T>())?,
            HEADER + TRAILER,
        )
    }

    /// Writes the state (of a stream of `peer`, values of dimension `value_dim`) into
    /// `out`; returns the bytes written ([`snapshot_len`](Self::snapshot_len)).
    pub fn snapshot(
        &self,
        peer: &PeerAttention<'_, T>,
        value_dim: usize,
        out: &mut [u8],
    ) -> Result<usize> {
        let len = self.snapshot_len(peer, value_dim)?;
        let Some(out) = out.get_mut(..len) else {
            return Err(crate::Error::LengthMismatch {
                what: "snapshot output",
                expected: len,
                got: out.len(),
            });
        };
        out[0..4].copy_from_slice(&MAGIC);
        out[4..8].copy_from_slice(&PEER_SNAPSHOT_VERSION.to_le_bytes());
        out[8..12].copy_from_slice(&T::DTYPE_TAG.to_le_bytes());
        out[12..16].copy_from_slice(&u32::from(!peer.needs_key_max()).to_le_bytes());
        out[16..24].copy_from_slice(&(peer.m as u64).to_le_bytes());
        out[24..32].copy_from_slice(&(value_dim as u64).to_le_bytes());
        out[32..40].copy_from_slice(&self.tokens().to_le_bytes());
        out[40..48].copy_from_slice(&peer.fingerprint().to_le_bytes());
        out[48..56].copy_from_slice(&self.shift().to_f64().to_le_bytes());
        let body = &mut out[HEADER..len - TRAILER];
        match self.initialised() {
            Some(state) => write_le(state, body),
            // Never stepped: the buffer holds whatever it was given; the state is empty.
            None => body.fill(0),
        }
        let crc = crc32(&out[..len - TRAILER]);
        out[len - TRAILER..].copy_from_slice(&crc.to_le_bytes());
        Ok(len)
    }

    /// Replaces the state with the snapshot in `bytes`, written for `peer` (the same
    /// projection, conventions, ε and normaliser: its fingerprint) and `value_dim`. Malformed,
    /// corrupted or mismatched bytes, or a state no stream can reach, give
    /// [`Error::Snapshot`](crate::Error::Snapshot) and leave the state unchanged.
    pub fn restore(
        &mut self,
        peer: &PeerAttention<'_, T>,
        value_dim: usize,
        bytes: &[u8],
    ) -> Result<()> {
        let n = Self::buffer_len(peer.m, value_dim)?;
        crate::error::check::room("buffer", self.buffer().as_ref(), n)?;
        let (u32_at, u64_at) = open(bytes, MAGIC, HEADER)?;
        let version = u32_at(4);
        if version != PEER_SNAPSHOT_VERSION {
            return Err(SnapshotError::UnsupportedVersion(version).into());
        }
        let elem = u64::from(u32_at(8));
        let implied = Self::buffer_len(
            usize::try_from(u64_at(16)).unwrap_or(0),
            usize::try_from(u64_at(24)).unwrap_or(0),
        )
        .ok()
        .and_then(|n| (n as u64).checked_mul(elem))
        .and_then(|n| n.checked_add((HEADER + TRAILER) as u64));
        if implied != Some(bytes.len() as u64) || !matches!(elem, 4 | 8) {
            return Err(SnapshotError::WrongLength.into());
        }
        let body = crate::snapshot::check_crc(bytes)?;
        if u32_at(8) != T::DTYPE_TAG {
            return Err(SnapshotError::WrongDType.into());
        }
        if u64_at(16) != peer.m as u64 || u64_at(24) != value_dim as u64 {
            return Err(SnapshotError::WrongDims.into());
        }
        if u32_at(12) != u32::from(!peer.needs_key_max()) || u64_at(40) != peer.fingerprint() {
            return Err(SnapshotError::WrongFeatureMap.into());
        }
        let payload = &bytes[HEADER..body];
        let values = || payload.chunks_exact(size_of::<T>()).map(read_le::<T>);
        let tokens = u64_at(32);
        let shift = T::from_f64(f64::from_bits(u64_at(48)));
        if !sound(peer, value_dim, tokens, shift, values) {
            return Err(SnapshotError::Corrupt.into());
        }
        self.set_raw(shift, tokens, (peer.m, value_dim), values());
        Ok(())
    }
}

/// What every state a peer stream can reach satisfies; anything else is refused as corrupt.
/// All values finite, and `M·max|x|` too (so `q'ᵀS` and `q'·z` cannot overflow, stored
/// query features being ≤ m^{-1/2}(1 + ε)); an empty state all zeros at shift −∞; a
/// generalized stream's shift −∞ always; a softmax stream's shift finite once it has keys,
/// and each `z_e` entry in `[0, tokens·m^{-1/2}]` (a key's exponential part is at most
/// m^{-1/2} at the running shift, which only grows).
fn sound<T: Float, I: Iterator<Item = T>>(
    peer: &PeerAttention<'_, T>,
    dv: usize,
    tokens: u64,
    shift: T,
    values: impl Fn() -> I,
) -> bool {
    let m = peer.m;
    let max = T::max_value().to_f64();
    if tokens == u64::MAX || !values().all(|x| x.is_finite()) {
        return false;
    }
    if values().any(|x| (x.to_f64().abs() * m as f64) > max) {
        return false;
    }
    if tokens == 0 {
        return shift == T::neg_infinity() && values().all(|x| x == T::zero());
    }
    if !peer.needs_key_max() {
        return shift == T::neg_infinity();
    }
    let cap = tokens as f64 / libm::sqrt(m as f64) * (1.0 + 1e-3);
    shift.is_finite()
        && values()
            .skip(m * dv)
            .take(m)
            .all(|z| (0.0..=cap).contains(&z.to_f64()))
}
