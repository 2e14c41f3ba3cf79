//! The one error type of favor-core.

use core::fmt;

/// Result alias used throughout favor-core.
pub type Result<T> = core::result::Result<T, Error>;

/// Everything that can go wrong in a favor-core call.
///
/// Every public function checks its shapes and buffers before it writes anything, so an
/// `Err` means no output buffer and no state was modified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A dimension that must be positive was zero (`what` names it: `"dim"`, `"features"` ...).
    ZeroDimension {
        /// The dimension's name.
        what: &'static str,
    },
    /// An input slice does not have the length its dimensions imply.
    LengthMismatch {
        /// The input's name (`"q"`, `"k"`, `"v"`, `"key_mask"` ...).
        what: &'static str,
        /// The length the dimensions imply.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// Two dimensions that must agree do not (e.g. the feature map's input dim and `d`).
    DimensionMismatch {
        /// Which pair disagrees.
        what: &'static str,
        /// The dimension required.
        expected: usize,
        /// The dimension given.
        got: usize,
    },
    /// An output or scratch buffer is shorter than required. Size it with the matching
    /// `*_len` helper.
    BufferTooSmall {
        /// The buffer's name.
        what: &'static str,
        /// Elements (or bytes, for snapshots) needed.
        needed: usize,
        /// Elements (or bytes) given.
        got: usize,
    },
    /// An input holds NaN or an infinity. Nothing was written; stream state is unchanged.
    NonFinite {
        /// The input's name.
        what: &'static str,
        /// Index of the first offending row (token).
        row: usize,
    },
    /// A parameter is out of its documented range.
    InvalidParameter {
        /// What is wrong with it.
        what: &'static str,
    },
    /// A finite input lies outside the supported range (crate docs, "Supported range"): a
    /// query or key entry so large that its projection would overflow `T`, or values (and
    /// features) so large that the sums over the keys could. Nothing was written; stream
    /// state is unchanged.
    OutOfRange {
        /// The input (`"q"`, `"k"`, `"v"` ...).
        what: &'static str,
        /// Index of the first offending row (token).
        row: usize,
    },
    /// A size computation overflowed `usize`.
    SizeOverflow,
    /// Snapshot bytes could not be restored.
    Snapshot(SnapshotError),
}

/// Why snapshot bytes were rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Fewer bytes than the fixed header.
    TooShort,
    /// The bytes do not start with the favor snapshot magic.
    BadMagic,
    /// A format version this build cannot read.
    UnsupportedVersion(u32),
    /// Written with another float type (`f32` vs `f64`).
    WrongDType,
    /// Written by a stream with other feature or value dimensions.
    WrongDims,
    /// Written by a stream with another feature map (projection, kernel or options).
    WrongFeatureMap,
    /// The byte length disagrees with the header's dimensions.
    WrongLength,
    /// The bytes do not match their checksum: corrupted in storage or transit.
    BadChecksum,
    /// The payload is not a state a stream can reach: NaN or infinities, an impossible
    /// log-scale, negative or oversized sums, a compensation larger than a rounding error.
    Corrupt,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::ZeroDimension { what } => write!(f, "dimension `{what}` must be positive"),
            Error::LengthMismatch {
                what,
                expected,
                got,
            } => {
                write!(
                    f,
                    "`{what}` has {got} elements, its dimensions imply {expected}"
                )
            }
            Error::DimensionMismatch {
                what,
                expected,
                got,
            } => {
                write!(f, "{what}: expected {expected}, got {got}")
            }
            Error::BufferTooSmall { what, needed, got } => {
                write!(f, "buffer `{what}` holds {got}, needs at least {needed}")
            }
            Error::NonFinite { what, row } => write!(f, "`{what}` row {row} holds NaN or infinity"),
            Error::InvalidParameter { what } => write!(f, "invalid parameter: {what}"),
            Error::OutOfRange { what, row } => write!(
                f,
                "`{what}` row {row} is outside the supported range: its features or the sums over \
                 the keys would overflow (see favor-core's docs, \"Supported range\")"
            ),
            Error::SizeOverflow => f.write_str("buffer size overflows usize"),
            Error::Snapshot(e) => write!(f, "bad snapshot: {e}"),
        }
    }
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SnapshotError::TooShort => f.write_str("shorter than its header"),
            SnapshotError::BadMagic => f.write_str("not a favor stream snapshot"),
            SnapshotError::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            SnapshotError::WrongDType => f.write_str("written with another float type"),
            SnapshotError::WrongDims => f.write_str("written with other feature/value dimensions"),
            SnapshotError::WrongFeatureMap => f.write_str("written with another feature map"),
            SnapshotError::WrongLength => f.write_str("length disagrees with its header"),
            SnapshotError::BadChecksum => f.write_str("checksum mismatch (corrupted bytes)"),
            SnapshotError::Corrupt => f.write_str("payload is not a valid state"),
        }
    }
}

impl core::error::Error for Error {}
impl core::error::Error for SnapshotError {}

impl From<SnapshotError> for Error {
    fn from(e: SnapshotError) -> Self {
        Error::Snapshot(e)
    }
}

/// Shape-checking helpers shared by every entry point.
pub(crate) mod check {
    use super::{Error, Result};
    use crate::Float;

    pub(crate) fn nonzero(what: &'static str, n: usize) -> Result<usize> {
        if n == 0 {
            Err(Error::ZeroDimension { what })
        } else {
            Ok(n)
        }
    }

    pub(crate) fn mul(a: usize, b: usize) -> Result<usize> {
        a.checked_mul(b).ok_or(Error::SizeOverflow)
    }

    pub(crate) fn add(a: usize, b: usize) -> Result<usize> {
        a.checked_add(b).ok_or(Error::SizeOverflow)
    }

    /// An input must have exactly the length its dimensions imply.
    pub(crate) fn exact<T>(what: &'static str, s: &[T], expected: usize) -> Result<()> {
        if s.len() == expected {
            Ok(())
        } else {
            Err(Error::LengthMismatch {
                what,
                expected,
                got: s.len(),
            })
        }
    }

    /// An output or scratch buffer must be at least `needed` long.
    pub(crate) fn room<T>(what: &'static str, s: &[T], needed: usize) -> Result<()> {
        if s.len() >= needed {
            Ok(())
        } else {
            Err(Error::BufferTooSmall {
                what,
                needed,
                got: s.len(),
            })
        }
    }

    pub(crate) fn same_dim(what: &'static str, expected: usize, got: usize) -> Result<()> {
        if expected == got {
            Ok(())
        } else {
            Err(Error::DimensionMismatch {
                what,
                expected,
                got,
            })
        }
    }

    /// Rejects NaN and infinities; `row_len` turns the flat index into a row number.
    pub(crate) fn finite<T: Float>(what: &'static str, s: &[T], row_len: usize) -> Result<()> {
        max_abs(what, s, row_len).map(|_| ())
    }

    /// The largest `|x|` of `s` (0 when empty), after rejecting NaN and infinities as
    /// [`finite`] does.
    pub(crate) fn max_abs<T: Float>(what: &'static str, s: &[T], row_len: usize) -> Result<T> {
        // On the bit patterns: with the sign bit cleared, IEEE floats order like unsigned
        // integers, and NaN and ±∞ are exactly the patterns at or above +∞'s. An integer max
        // vectorises (a float max or sum reduction does not, without fast-math).
        let (top, finite) = if size_of::<T>() == 4 {
            let m = max_masked(bytemuck::cast_slice::<T, i32>(s), i32::MAX);
            (
                T::from_f64(f64::from(f32::from_bits(m as u32))),
                m < 0x7F80_0000,
            )
        } else {
            let m = max_masked(bytemuck::cast_slice::<T, i64>(s), i64::MAX);
            (
                T::from_f64(f64::from_bits(m as u64)),
                m < 0x7FF0_0000_0000_0000,
            )
        };
        if finite {
            return Ok(top);
        }
        let i = s.iter().position(|x| !x.is_finite()).unwrap_or(0);
        Err(Error::NonFinite {
            what,
            row: i / row_len.max(1),
        })
    }

    /// `max(bᵢ & mask)` over signed integers whose masked values are non-negative, in eight
    /// independent lanes (a single running maximum is one long dependency chain).
    fn max_masked<I>(bits: &[I], mask: I) -> I
    where
        I: Copy + Ord + Default + core::ops::BitAnd<Output = I>,
    {
        let (chunks, rest) = bits.as_chunks::<8>();
        let mut lanes = [I::default(); 8];
        for c in chunks {
            for (l, &b) in lanes.iter_mut().zip(c) {
                *l = (*l).max(b & mask);
            }
        }
        let tail = rest.iter().fold(I::default(), |m, &b| m.max(b & mask));
        lanes.iter().fold(tail, |m, &l| m.max(l))
    }

    /// Rejects `s` (largest magnitude `max_abs`) if an element exceeds `limit`, naming the
    /// first row that does.
    pub(crate) fn within<T: Float>(
        what: &'static str,
        s: &[T],
        row_len: usize,
        max_abs: T,
        limit: T,
    ) -> Result<()> {
        if max_abs <= limit {
            return Ok(());
        }
        let i = s.iter().position(|x| x.abs() > limit).unwrap_or(0);
        Err(Error::OutOfRange {
            what,
            row: i / row_len.max(1),
        })
    }
}
