//! The `gemm` crate (faer's matrix multiplication, what candle runs on the CPU) as a reference
//! for favor-simd's GEMM on the same strided views.
//!
//! Only the benches use it: it is the yardstick issue 16 names ("our GEMM at least as fast as
//! it on each of our shapes"), not a backend. It is called single-threaded, as `favor bench`
//! runs one head per thread.

use favor_core::{Accum, MatMut, MatRef, gemm_dims};

/// `C = A·B` ([`Accum::Overwrite`]) or `C += A·B` ([`Accum::Add`]) through `gemm::gemm` on one
/// thread, for f32 views of any strides.
///
/// # Panics
/// If the views' dimensions do not agree (as [`gemm_dims`]).
pub fn gemm_crate(mut c: MatMut<'_, f32>, accum: Accum, a: MatRef<'_, f32>, b: MatRef<'_, f32>) {
    let (m, n, k) = gemm_dims(&c, &a, &b);
    if m == 0 || n == 0 {
        return;
    }
    let stride = |s: usize| isize::try_from(s).expect("stride fits isize");
    let (c_rs, c_cs) = (stride(c.row_stride()), stride(c.col_stride()));
    let (a_rs, a_cs) = (stride(a.row_stride()), stride(a.col_stride()));
    let (b_rs, b_cs) = (stride(b.row_stride()), stride(b.col_stride()));
    let dst = c.rb_mut().into_data().as_mut_ptr();
    // SAFETY: every index gemm forms, (i, j) ↦ i·rs + j·cs for i < rows, j < cols, lies
    // inside the view's slice: `MatRef::strided` / `MatMut::strided` refuse views whose span
    // exceeds their slice, and `gemm_dims` checked that the three views agree on m, n, k. The
    // destination is a `MatMut` (no two of its indices alias) borrowed mutably, so it cannot
    // overlap `a` or `b`, which are shared borrows.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            c_cs,
            c_rs,
            matches!(accum, Accum::Add),
            a.data().as_ptr(),
            a_cs,
            a_rs,
            b.data().as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}
