//! Fallible allocation. Buffer sizes here come from the caller (features, dims, batch,
//! heads, sequence length): a size too large for the machine must be an [`Error::Alloc`]
//! the caller can act on, not the process abort of an infallible `Vec` allocation.

use crate::error::{Error, Result};

/// Bytes of `n` elements of `T`; `None` if that overflows `usize`.
pub(crate) fn bytes_of<T>(n: usize) -> Option<usize> {
    n.checked_mul(size_of::<T>())
}

/// The error for `n` elements of `T` that could not be allocated.
pub(crate) fn failed<T>(what: &'static str, n: usize) -> Error {
    Error::Alloc {
        what,
        bytes: bytes_of::<T>(n),
    }
}

/// An empty vector with room for exactly `n` elements.
pub(crate) fn try_with_capacity<T>(what: &'static str, n: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| failed::<T>(what, n))?;
    Ok(v)
}

/// `n` copies of `value`.
pub(crate) fn try_filled<T: Clone>(what: &'static str, n: usize, value: T) -> Result<Vec<T>> {
    let mut v = try_with_capacity(what, n)?;
    v.resize(n, value);
    Ok(v)
}

/// `n` zeros (`T::default()`).
pub(crate) fn try_zeros<T: Clone + Default>(what: &'static str, n: usize) -> Result<Vec<T>> {
    try_filled(what, n, T::default())
}

/// The items of an iterator of known length, collected without an infallible allocation.
pub(crate) fn try_collect<T>(
    what: &'static str,
    items: impl ExactSizeIterator<Item = T>,
) -> Result<Vec<T>> {
    let mut v = try_with_capacity(what, items.len())?;
    v.extend(items);
    Ok(v)
}

/// Resizes `v` to `n` elements of `value`, reserving fallibly.
pub(crate) fn try_resize<T: Clone>(
    what: &'static str,
    v: &mut Vec<T>,
    n: usize,
    value: T,
) -> Result<()> {
    let more = n.saturating_sub(v.len());
    v.try_reserve_exact(more)
        .map_err(|_| failed::<T>(what, n))?;
    v.resize(n, value);
    Ok(())
}

/// `src` copied into `v` (reserving fallibly), for an in-place transform that must not touch
/// the caller's rows.
pub(crate) fn try_copy<'v, T: Copy>(
    what: &'static str,
    v: &'v mut Vec<T>,
    src: &[T],
) -> Result<&'v mut [T]> {
    v.clear();
    v.try_reserve_exact(src.len())
        .map_err(|_| failed::<T>(what, src.len()))?;
    v.extend_from_slice(src);
    Ok(v)
}

/// Whether `bytes` could be allocated as one block now: asked of the allocator and given
/// back at once (nothing is touched). For memory taken as many small blocks, whose total
/// the kernel's overcommit heuristic never sees: without this, each block would succeed
/// until the OOM killer ends the process.
pub(crate) fn available(bytes: usize) -> bool {
    Vec::<u8>::new().try_reserve_exact(bytes).is_ok()
}

/// An element count from one of favor-core's `*_len` functions: its size overflow becomes
/// [`Error::Alloc`] for `what`, anything else a configuration error.
pub(crate) fn len(what: &'static str, n: favor_core::Result<usize>) -> Result<usize> {
    n.map_err(|e| match e {
        favor_core::Error::SizeOverflow => Error::Alloc { what, bytes: None },
        other => crate::error::setup(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_sizes_are_errors() {
        assert_eq!(
            try_zeros::<f32>("x", usize::MAX / 2).unwrap_err(),
            Error::Alloc {
                what: "x",
                bytes: None
            }
        );
        // Representable, but beyond isize::MAX bytes: refused by the allocator's layout check.
        let n = usize::MAX / 8;
        assert_eq!(
            try_zeros::<f32>("y", n).unwrap_err(),
            Error::Alloc {
                what: "y",
                bytes: Some(n * 4)
            }
        );
        let mut v = vec![1u8; 3];
        assert!(try_resize("z", &mut v, usize::MAX, 0).is_err());
        assert_eq!(v, [1, 1, 1], "unchanged on error");
        assert_eq!(try_filled("w", 3, 7u16).unwrap(), [7, 7, 7]);
        assert_eq!(try_collect("c", [1, 2].into_iter()).unwrap(), [1, 2]);
        assert_eq!(
            len("s", Err(favor_core::Error::SizeOverflow)).unwrap_err(),
            Error::Alloc {
                what: "s",
                bytes: None
            }
        );
    }

    #[test]
    fn messages_name_the_buffer_and_the_size() {
        let e = failed::<f64>("stream state", 3 << 27);
        assert_eq!(
            e.to_string(),
            "stream state: cannot allocate 3.00 GiB (3221225472 bytes): out of memory"
        );
        let e = Error::Alloc {
            what: "output",
            bytes: None,
        };
        assert_eq!(
            e.to_string(),
            "output: cannot allocate: the size overflows this platform's address space"
        );
    }
}
