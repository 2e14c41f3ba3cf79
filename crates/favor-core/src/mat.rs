//! Strided matrix views: what [`Kernels::gemm`](crate::Kernels::gemm) multiplies.
//!
//! A view is a slice plus `rows`, `cols` and two strides: element (i, j) is
//! `data[i · row_stride + j · col_stride]`. Transposing swaps the dimensions and the strides
//! and moves no data, so `Q'K'ᵀ`, `Q'S` and `K'ᵀV` are one GEMM with differently viewed
//! operands (BLAS's `transa`/`transb` flags, as a type). Constructors check that every
//! element lies inside the slice (and, for [`MatMut`], that no two indices reach the same
//! element), so a view can never index out of bounds later.

/// Whether a GEMM overwrites its output or adds to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accum {
    /// `C = A·B`.
    Overwrite,
    /// `C += A·B`.
    Add,
}

/// Where a view's elements lie: (i, j) at `i · row_stride + j · col_stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl Layout {
    /// The slice length the view reaches, if it fits in `usize`.
    fn span(&self) -> Option<usize> {
        if self.rows == 0 || self.cols == 0 {
            return Some(0);
        }
        let last_row = (self.rows - 1).checked_mul(self.row_stride)?;
        let last_col = (self.cols - 1).checked_mul(self.col_stride)?;
        last_row.checked_add(last_col)?.checked_add(1)
    }

    /// Whether two distinct indices reach the same element.
    fn overlaps(&self) -> bool {
        let Layout {
            rows,
            cols,
            row_stride,
            col_stride,
        } = *self;
        if rows == 0 || cols == 0 {
            return false;
        }
        if row_stride == 0 || col_stride == 0 {
            return (rows > 1 && row_stride == 0) || (cols > 1 && col_stride == 0);
        }
        // (i, j) and (i + a, j − b) meet when a·row_stride = b·col_stride; the smallest a > 0
        // with a solution is col_stride / g (then b = row_stride / g), g = gcd of the strides.
        let g = gcd(row_stride, col_stride);
        col_stride / g < rows && row_stride / g < cols
    }

    fn t(self) -> Self {
        Layout {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// The offset of (i, j) and the layout of the `rows × cols` block starting there.
    #[track_caller]
    fn block(self, i: usize, j: usize, rows: usize, cols: usize) -> (usize, Self) {
        assert!(
            i.checked_add(rows).is_some_and(|e| e <= self.rows)
                && j.checked_add(cols).is_some_and(|e| e <= self.cols),
            "block ({i}, {j}) of {rows}×{cols} outside a {}×{} view",
            self.rows,
            self.cols
        );
        let start = if rows == 0 || cols == 0 {
            0
        } else {
            i * self.row_stride + j * self.col_stride
        };
        (start, Layout { rows, cols, ..self })
    }

    #[track_caller]
    #[inline]
    fn at(&self, i: usize, j: usize) -> usize {
        assert!(
            i < self.rows && j < self.cols,
            "({i}, {j}) outside the view"
        );
        i * self.row_stride + j * self.col_stride
    }

    /// The range of row i, when its elements are adjacent.
    #[inline]
    fn row(&self, i: usize) -> Option<core::ops::Range<usize>> {
        (i < self.rows && (self.col_stride == 1 || self.cols <= 1)).then(|| {
            // An empty row may start past the end of the slice (the span of no element is 0).
            let start = if self.cols == 0 {
                0
            } else {
                i * self.row_stride
            };
            start..start + self.cols
        })
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The dimension and stride getters both views share.
macro_rules! dims {
    () => {
        /// Number of rows.
        pub fn rows(&self) -> usize {
            self.at.rows
        }
        /// Number of columns.
        pub fn cols(&self) -> usize {
            self.at.cols
        }
        /// Distance in elements between (i, j) and (i + 1, j).
        pub fn row_stride(&self) -> usize {
            self.at.row_stride
        }
        /// Distance in elements between (i, j) and (i, j + 1).
        pub fn col_stride(&self) -> usize {
            self.at.col_stride
        }
    };
}

/// A read-only strided `rows × cols` matrix view.
///
/// ```
/// use favor_core::MatRef;
/// let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
/// let a = MatRef::row_major(&x, 2, 3); // [[1, 2, 3], [4, 5, 6]]
/// assert_eq!(a.get(1, 0), 4.0);
/// let at = a.t(); // 3 × 2, no copy
/// assert_eq!((at.rows(), at.cols(), at.get(0, 1)), (3, 2, 4.0));
/// assert!(MatRef::strided(&x, 2, 3, 3, 2).is_none()); // element (1, 2) would be x[7]
/// ```
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    at: Layout,
}

impl<'a, T: Copy> MatRef<'a, T> {
    /// A row-major view: rows `ld` elements apart, columns adjacent.
    ///
    /// # Panics
    /// If the view does not fit in `data` (as slice indexing would).
    #[track_caller]
    pub fn new(data: &'a [T], rows: usize, cols: usize, ld: usize) -> Self {
        Self::strided(data, rows, cols, ld, 1).expect("matrix view outside its slice")
    }

    /// A contiguous row-major view (`ld = cols`).
    ///
    /// # Panics
    /// If `data` is shorter than `rows · cols`.
    #[track_caller]
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols)
    }

    /// A view with arbitrary strides; `None` if an element would lie outside `data`. Strides
    /// may repeat elements (a broadcast): the view is only read.
    pub fn strided(
        data: &'a [T],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Option<Self> {
        let at = Layout {
            rows,
            cols,
            row_stride,
            col_stride,
        };
        (at.span()? <= data.len()).then_some(Self { data, at })
    }

    /// The transpose, `cols × rows`, over the same elements.
    pub fn t(self) -> Self {
        Self {
            at: self.at.t(),
            ..self
        }
    }

    /// The `rows × cols` block whose top-left element is (i, j).
    ///
    /// # Panics
    /// If the block does not lie inside this view.
    #[track_caller]
    pub fn block(self, i: usize, j: usize, rows: usize, cols: usize) -> Self {
        let (start, at) = self.at.block(i, j, rows, cols);
        Self {
            data: &self.data[start..],
            at,
        }
    }

    /// Element (i, j).
    ///
    /// # Panics
    /// If (i, j) is outside the view.
    #[track_caller]
    #[inline]
    pub fn get(&self, i: usize, j: usize) -> T {
        self.data[self.at.at(i, j)]
    }

    /// Row i as a slice, when columns are adjacent (`col_stride == 1`).
    #[inline]
    pub fn row(&self, i: usize) -> Option<&'a [T]> {
        self.at.row(i).map(|r| &self.data[r])
    }

    dims!();

    /// The slice the view reads, starting at element (0, 0).
    pub fn data(&self) -> &'a [T] {
        self.data
    }
}

/// A mutable strided `rows × cols` matrix view; no two indices reach the same element.
///
/// ```
/// use favor_core::MatMut;
/// let mut x = [0.0f32; 6];
/// let mut c = MatMut::row_major(&mut x, 2, 3);
/// *c.get_mut(1, 2) = 7.0;
/// assert!(MatMut::strided(&mut x, 2, 3, 1, 1).is_none()); // (0, 1) and (1, 0) alias
/// assert_eq!(x[5], 7.0);
/// ```
#[derive(Debug)]
pub struct MatMut<'a, T> {
    data: &'a mut [T],
    at: Layout,
}

impl<'a, T: Copy> MatMut<'a, T> {
    /// A row-major view: rows `ld ≥ cols` elements apart, columns adjacent.
    ///
    /// # Panics
    /// If the view does not fit in `data` or rows overlap.
    #[track_caller]
    pub fn new(data: &'a mut [T], rows: usize, cols: usize, ld: usize) -> Self {
        Self::strided(data, rows, cols, ld, 1).expect("matrix view outside its slice or aliased")
    }

    /// A contiguous row-major view (`ld = cols`).
    ///
    /// # Panics
    /// If `data` is shorter than `rows · cols`.
    #[track_caller]
    pub fn row_major(data: &'a mut [T], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols)
    }

    /// A view with arbitrary strides; `None` if an element would lie outside `data` or two
    /// indices would reach the same element.
    pub fn strided(
        data: &'a mut [T],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Option<Self> {
        let at = Layout {
            rows,
            cols,
            row_stride,
            col_stride,
        };
        (at.span()? <= data.len() && !at.overlaps()).then_some(Self { data, at })
    }

    /// The transpose, `cols × rows`, over the same elements.
    pub fn t(self) -> Self {
        Self {
            at: self.at.t(),
            ..self
        }
    }

    /// A shorter-lived mutable view of the same elements.
    pub fn rb_mut(&mut self) -> MatMut<'_, T> {
        MatMut {
            data: &mut *self.data,
            at: self.at,
        }
    }

    /// A read-only view of the same elements.
    pub fn rb(&self) -> MatRef<'_, T> {
        MatRef {
            data: self.data,
            at: self.at,
        }
    }

    /// The `rows × cols` block whose top-left element is (i, j).
    ///
    /// # Panics
    /// If the block does not lie inside this view.
    #[track_caller]
    pub fn block(self, i: usize, j: usize, rows: usize, cols: usize) -> Self {
        let (start, at) = self.at.block(i, j, rows, cols);
        Self {
            data: &mut self.data[start..],
            at,
        }
    }

    /// Element (i, j), mutable.
    ///
    /// # Panics
    /// If (i, j) is outside the view.
    #[track_caller]
    #[inline]
    pub fn get_mut(&mut self, i: usize, j: usize) -> &mut T {
        &mut self.data[self.at.at(i, j)]
    }

    /// Row i as a mutable slice, when columns are adjacent (`col_stride == 1`).
    #[inline]
    pub fn row_mut(&mut self, i: usize) -> Option<&mut [T]> {
        self.at.row(i).map(|r| &mut self.data[r])
    }

    dims!();

    /// The whole slice, for kernels that index it themselves.
    pub fn into_data(self) -> &'a mut [T] {
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_exact() {
        // Brute force: does any pair of distinct indices share an offset?
        for rows in 0..5 {
            for cols in 0..5 {
                for rs in 0..7 {
                    for cs in 0..7 {
                        let mut seen = [false; 64];
                        let mut alias = false;
                        for i in 0..rows {
                            for j in 0..cols {
                                let o = i * rs + j * cs;
                                alias |= seen[o];
                                seen[o] = true;
                            }
                        }
                        let at = Layout {
                            rows,
                            cols,
                            row_stride: rs,
                            col_stride: cs,
                        };
                        assert_eq!(at.overlaps(), alias, "{rows}×{cols} {rs},{cs}");
                    }
                }
            }
        }
    }

    #[test]
    fn span_and_blocks() {
        let x: [u32; 12] = core::array::from_fn(|i| i as u32);
        assert!(MatRef::strided(&x, 3, 4, 4, 1).is_some());
        assert!(MatRef::strided(&x, 3, 5, 4, 1).is_none());
        assert!(MatRef::strided(&x, 0, 100, usize::MAX, 1).is_some());
        assert!(MatRef::strided(&x, 2, 2, usize::MAX, 1).is_none());
        let a = MatRef::row_major(&x, 3, 4).block(1, 2, 2, 2);
        assert_eq!([a.get(0, 0), a.get(1, 1), a.t().get(1, 0)], [6, 11, 7]);
        assert_eq!(a.row(1), Some(&x[10..12]));
        assert_eq!(a.t().row(0), None);
        let mut y = x;
        let mut c = MatMut::row_major(&mut y, 3, 4).t().block(1, 0, 2, 3);
        *c.get_mut(1, 2) = 99; // (2, 2) of the transpose = x[2·4 + 2]
        assert_eq!(y[10], 99);
    }
}
