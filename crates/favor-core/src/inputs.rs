//! Queries, keys and values travelling together: what every attention entry point checks
//! and reads.

/// One call's queries (`q`), keys (`k`) and values (`v`), row-major. The three slices are
/// always checked and consumed together, so they are passed as one.
#[derive(Clone, Copy)]
pub(crate) struct Qkv<'a, T> {
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
}

impl<'a, T> Qkv<'a, T> {
    pub(crate) fn new(q: &'a [T], k: &'a [T], v: &'a [T]) -> Self {
        Self { q, k, v }
    }
}
