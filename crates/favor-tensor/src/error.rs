//! The one error type of favor-tensor.

use std::fmt;

/// Result alias used throughout favor-tensor.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in a favor-tensor call. Nothing is modified on error: no
/// stream state, no redraw counter.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A tensor's shape does not fit the call.
    Shape {
        /// The tensor's name (`"q"`, `"k"`, `"v"`, `"key_mask"`, `"projection"` ...).
        tensor: &'static str,
        /// What was expected, e.g. `[batch, 8, seq, 64]`.
        expected: String,
        /// The shape given.
        got: Vec<usize>,
    },
    /// A tensor's data length does not match the product of its shape.
    DataLength {
        /// The tensor's name.
        tensor: &'static str,
        /// The shape given.
        shape: Vec<usize>,
        /// Elements given.
        len: usize,
    },
    /// An invalid builder or call parameter, described in one line.
    Config(String),
    /// Inputs outside the supported range (finite, but large enough that a projection or a
    /// sum could overflow the compute type; see [`Performer`](crate::Performer)).
    OutOfRange {
        /// The tensor's name (`"projection"` when a given projection matrix holds values so
        /// large that no ordinary input fits).
        tensor: &'static str,
        /// What overflows, in one line.
        reason: String,
    },
    /// favor-core rejected a head's inputs (e.g. a NaN), naming the batch and head.
    Core {
        /// Batch index of the offending head (0 for whole-model errors).
        batch: usize,
        /// Head index.
        head: usize,
        /// The underlying error.
        source: favor_core::Error,
    },
    /// Snapshot bytes could not be restored, described in one line.
    Snapshot(String),
    /// The parts of a [`DataAwareMap`](crate::DataAwareMap), or the file bytes it was read
    /// from, are malformed (a wrong shape, a non-finite entry, not a map file), described
    /// in one line.
    Map(String),
    /// Memory for a buffer whose size the inputs or the configuration set (features, dims,
    /// batch, heads, sequence length) could not be allocated. Nothing was changed: the
    /// call can be retried with smaller sizes.
    Alloc {
        /// What the memory was for (`"stream state"`, `"projection"`, `"output"` ...).
        what: &'static str,
        /// Bytes requested; `None` when the size does not even fit in `usize`.
        bytes: Option<usize>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape {
                tensor,
                expected,
                got,
            } => write!(f, "{tensor}: expected shape {expected}, got {got:?}"),
            Error::DataLength { tensor, shape, len } => write!(
                f,
                "{tensor}: shape {shape:?} needs {} elements, got {len}",
                shape
                    .iter()
                    .try_fold(1usize, |a, &b| a.checked_mul(b))
                    .map_or_else(|| "more than usize::MAX".to_string(), |n| n.to_string())
            ),
            Error::Config(s) => f.write_str(s),
            Error::OutOfRange { tensor, reason } => {
                write!(f, "{tensor}: outside the supported range: {reason}")
            }
            Error::Core {
                batch,
                head,
                source,
            } => write!(f, "batch {batch}, head {head}: {source}"),
            Error::Snapshot(s) => write!(f, "snapshot: {s}"),
            Error::Map(s) => write!(f, "data-aware map: {s}"),
            Error::Alloc {
                what,
                bytes: Some(n),
            } => write!(
                f,
                "{what}: cannot allocate {} ({n} bytes): out of memory",
                human_bytes(*n)
            ),
            Error::Alloc { what, bytes: None } => write!(
                f,
                "{what}: cannot allocate: the size overflows this platform's address space"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Core { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `n` bytes in binary units with two decimals, e.g. `1.50 GiB`.
pub(crate) fn human_bytes(n: usize) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut x = n as f64;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{x:.2} {}", UNITS[unit])
    }
}

/// A core error from whole-model setup (not tied to one head's inputs).
pub(crate) fn setup(source: favor_core::Error) -> Error {
    Error::Config(format!("{source}"))
}
