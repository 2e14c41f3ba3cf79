//! The byte format of a [`HybridStream`](super::HybridStream)'s state, and the checks on
//! restoring it.
//!
//! Version 1, little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `FAVH` |
//! | 4..8 | version (u32) = 1 |
//! | 8..12 | dtype tag (u32: 4 = f32, 8 = f64) |
//! | 12..16 | zero (reserved) |
//! | 16..24 | window w (u64) |
//! | 24..32 | sinks s (u64) |
//! | 32..40 | input dim d (u64) |
//! | 40..48 | value dim dv (u64) |
//! | 48..56 | tokens stepped (u64) |
//! | 56..56 + F | the far state: a whole [`Stream`](crate::Stream) snapshot (`FAVS`, its own checksum) |
//! | then | as T: the raw key slots ((s + w + 1)·d) and value slots ((s + w + 1)·dv); slots no token holds yet are zero |
//! | last 4 | CRC-32 of every byte before it (u32) |
//!
//! The far state holds the keys that left the window, `max(0, tokens − s − w − 1)`, less any
//! whose features vanished (absent keys are not counted).

use crate::error::{Result, SnapshotError};
use crate::state::PrefixState;
use crate::{FeatureMap, Float, crc32, snapshot};

const MAGIC: [u8; 4] = *b"FAVH";
/// Version of the byte format [`HybridStream::snapshot`](super::HybridStream::snapshot)
/// writes.
pub const HYBRID_SNAPSHOT_VERSION: u32 = 1;
const HEADER: usize = 56;
const TRAILER: usize = 4;

/// What a hybrid stream's snapshot holds besides its far state: its shape and raw slots.
pub(super) struct Raw<'s, T> {
    pub(super) window: usize,
    pub(super) sinks: usize,
    pub(super) input_dim: usize,
    pub(super) tokens: u64,
    pub(super) keys: &'s [T],
    pub(super) values: &'s [T],
}

impl<T> Raw<'_, T> {
    fn is_live(&self, slot: usize) -> bool {
        let (n_sinks, n_ring) = live_slots(self.window, self.sinks, self.tokens);
        slot < n_sinks || (self.sinks..self.sinks + n_ring).contains(&slot)
    }
}

/// Bytes the snapshot of a stream with this far state and these raw slots takes.
pub(super) fn len<T: Float>(far: &PrefixState<'_, T>, raw: &Raw<'_, T>) -> usize {
    let slots = raw.keys.len() + raw.values.len();
    HEADER + snapshot::len(far) + slots * size_of::<T>() + TRAILER
}

/// Writes the snapshot into `out[..len(far, raw)]`.
pub(super) fn write<T: Float, F: FeatureMap<T>>(
    far: &PrefixState<'_, T>,
    fm: &F,
    raw: &Raw<'_, T>,
    out: &mut [u8],
) {
    let out = &mut out[..len(far, raw)];
    out[0..4].copy_from_slice(&MAGIC);
    out[4..8].copy_from_slice(&HYBRID_SNAPSHOT_VERSION.to_le_bytes());
    out[8..12].copy_from_slice(&T::DTYPE_TAG.to_le_bytes());
    out[12..16].fill(0);
    for (i, x) in [raw.window, raw.sinks, raw.input_dim, far.value_dim()]
        .into_iter()
        .enumerate()
    {
        out[16 + 8 * i..24 + 8 * i].copy_from_slice(&(x as u64).to_le_bytes());
    }
    out[48..56].copy_from_slice(&raw.tokens.to_le_bytes());
    let mut at = HEADER + snapshot::len(far);
    snapshot::write(far, fm, &mut out[HEADER..at]);
    let (d, dv) = (raw.input_dim, far.value_dim());
    for (rows, width) in [(raw.keys, d), (raw.values, dv)] {
        for (slot, row) in rows.chunks_exact(width).enumerate() {
            let n = width * size_of::<T>();
            let dst = &mut out[at..at + n];
            if raw.is_live(slot) {
                snapshot::write_le(row, dst);
            } else {
                dst.fill(0);
            }
            at += n;
        }
    }
    let crc = crc32(&out[..at]);
    out[at..].copy_from_slice(&crc.to_le_bytes());
}

/// A checked snapshot: the far state's bytes and the raw slots' bytes.
pub(super) struct Checked<'b> {
    pub(super) tokens: u64,
    pub(super) far: &'b [u8],
    pub(super) keys: &'b [u8],
    pub(super) values: &'b [u8],
}

/// Checks `bytes` against a stream with this far state and raw layout (`raw`'s slices give
/// the sizes; its tokens are ignored): header, length, checksum, the slots'
/// contents (`key_limit` bounds key entries, `value_limit` value entries) and the far state's
/// token count. The far state's own bytes are checked by its restore.
pub(super) fn check<'b, T: Float>(
    far: &PrefixState<'_, T>,
    raw: &Raw<'_, T>,
    (key_limit, value_limit): (T, T),
    bytes: &'b [u8],
) -> Result<Checked<'b>> {
    let (u32_at, u64_at) = snapshot::open(bytes, MAGIC, HEADER)?;
    let version = u32_at(4);
    if version != HYBRID_SNAPSHOT_VERSION {
        return Err(SnapshotError::UnsupportedVersion(version).into());
    }
    if u32_at(8) != T::DTYPE_TAG {
        return Err(SnapshotError::WrongDType.into());
    }
    let dv = far.value_dim();
    let shape = [raw.window, raw.sinks, raw.input_dim, dv].map(|x| x as u64);
    if (0..4).any(|i| u64_at(16 + 8 * i) != shape[i]) || u32_at(12) != 0 {
        return Err(SnapshotError::WrongDims.into());
    }
    if bytes.len() != len(far, raw) {
        return Err(SnapshotError::WrongLength.into());
    }
    let body = crate::snapshot::check_crc(bytes)?;
    let (far_bytes, rest) = bytes[HEADER..body].split_at(snapshot::len(far));
    let (keys, values) = rest.split_at(size_of_val(raw.keys));
    let tokens = u64_at(48);
    // The far state's tokens, at 32..40 of its own header (its length is checked above).
    let far_tokens = u64_at(HEADER + 32);
    let shape = super::HybridShape {
        window: raw.window,
        sinks: raw.sinks,
    };
    if tokens == u64::MAX || far_tokens > super::stream::far_tokens(shape, tokens) {
        return Err(SnapshotError::Corrupt.into());
    }
    let live = Raw { tokens, ..*raw };
    let sound = |part: &[u8], width: usize, limit: T| {
        part.chunks_exact(width * size_of::<T>())
            .enumerate()
            .all(|(slot, row)| {
                if live.is_live(slot) {
                    row.chunks_exact(size_of::<T>())
                        .map(snapshot::read_le::<T>)
                        .all(|x| x.is_finite() && x.abs() <= limit)
                } else {
                    row.iter().all(|&b| b == 0)
                }
            })
    };
    if !sound(keys, raw.input_dim, key_limit) || !sound(values, dv, value_limit) {
        return Err(SnapshotError::Corrupt.into());
    }
    Ok(Checked {
        tokens,
        far: far_bytes,
        keys,
        values,
    })
}

/// Slots holding a token after `tokens` tokens: the sinks seen, and the ring's filled slots.
pub(super) fn live_slots(window: usize, sinks: usize, tokens: u64) -> (usize, usize) {
    let n_sinks = tokens.min(sinks as u64) as usize;
    let n_ring = tokens.saturating_sub(sinks as u64).min(window as u64 + 1) as usize;
    (n_sinks, n_ring)
}

/// Reads `src`'s elements into `dst`.
pub(super) fn read_into<T: Float>(src: &[u8], dst: &mut [T]) {
    for (x, c) in dst.iter_mut().zip(src.chunks_exact(size_of::<T>())) {
        *x = snapshot::read_le(c);
    }
}
