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
    /// A feature exponent overflowed `T` (some `wᵢ·x` is +∞): the input lies outside the
    /// guaranteed-finite range (see the crate docs). Nothing was written; stream state is
    /// unchanged.
    Overflow {
        /// The input whose features overflowed.
        what: &'static str,
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
    /// The payload holds NaN, infinities or an impossible log-scale.
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
            Error::Overflow { what } => write!(
                f,
                "features of `{what}` overflow: its projection w·x is beyond the float range"
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
        // Whole chunks without an early exit, so the scan vectorises; only a chunk that
        // fails is searched for the offending element.
        const CHUNK: usize = 256;
        for (c, chunk) in s.chunks(CHUNK).enumerate() {
            if !chunk.iter().fold(true, |ok, x| ok & x.is_finite()) {
                let i = c * CHUNK + chunk.iter().position(|x| !x.is_finite()).unwrap_or(0);
                return Err(Error::NonFinite {
                    what,
                    row: i / row_len.max(1),
                });
            }
        }
        Ok(())
    }
}
