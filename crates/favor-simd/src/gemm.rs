//! Register-blocked GEMM over strided operands: `C (m×n) (+)= α·A (m×k) · B (k×n)`.
//!
//! The BLIS structure (as in matrixmultiply / gemm): B is packed into k×NR micro-panels
//! (NR = two vectors) and A into k×MR micro-panels, both contiguous, so the MR×NR
//! microkernel streams through memory in order whatever the operands' strides (a row
//! stride of 1 KiB would otherwise map every row to the same few L1 sets). The microkernel
//! keeps `2·MR` accumulators in registers, and C is touched once per panel pair.
//! Row-at-a-time shapes (decode steps, rank-1 updates) skip packing, which would cost as
//! much as the arithmetic.

use crate::real::Real;
use core::mem::MaybeUninit;
use favor_core::{Accum, MatMut, MatRef, gemm_dims};
use pulp::Simd;

/// Rows per microkernel call with 16 vector registers (AVX2): 6×(2 vectors) = 12
/// accumulators, enough independent FMA chains to cover latency × throughput (4 × 2 on
/// current x86 cores); with the two B vectors and one broadcast it fills the register file.
const MR_NARROW: usize = 6;
/// Rows per microkernel call with 32 vector registers (AVX-512, NEON): 24 accumulators halve
/// the loads and the epilogue per FMA.
const MR_WIDE: usize = 12;

/// Whether the ISA has 32 vector registers.
#[inline(always)]
pub(crate) fn wide_register_file<S: Simd>() -> bool {
    size_of::<S::f32s>() == 64 || (cfg!(target_arch = "aarch64") && size_of::<S::f32s>() == 16)
}
/// Depth of one packed block: a KC × NR B micro-panel (16 KiB in f32 on AVX-512, as in f64)
/// stays in L1.
const KC: usize = 128;
/// Bytes of B packed at once (KC × 64 columns in f32, × 32 in f64): a block stays in L2 and
/// feeds every row of A. 128 columns measured no faster.
const B_BLOCK_BYTES: usize = 32 << 10;
/// Bytes of a transposed A packed at once (KC × 48 rows in f32, × 24 in f64).
const A_BLOCK_BYTES: usize = 24 << 10;
const _: () = assert!(
    (A_BLOCK_BYTES / (KC * 8)).is_multiple_of(MR_NARROW)
        && (A_BLOCK_BYTES / (KC * 8)).is_multiple_of(MR_WIDE),
    "A panels tile an A block exactly in f64, hence in f32"
);
// The packed kernel keeps both blocks on the stack, 56 KiB in either precision (the crate docs
// state the budget): sized for hosts with small thread stacks — musl's default is 128 KiB —
// where the 112 KiB (f32) and 224 KiB (f64) blocks this replaced overflowed.

/// Widest micro-panel any backend uses (AVX-512 f32: 2 × 16 lanes); a B block's columns are
/// a multiple of it.
const MAX_NR: usize = 32;

/// Stack bytes for one packed block, aligned to a cache line.
#[repr(C, align(64))]
struct Block<const BYTES: usize>([MaybeUninit<u8>; BYTES]);

impl<const BYTES: usize> Block<BYTES> {
    #[inline(always)]
    fn new() -> Self {
        Self([MaybeUninit::uninit(); BYTES])
    }

    /// The block as uninitialised `T`s.
    #[inline(always)]
    fn as_uninit<T: Real>(&mut self) -> &mut [MaybeUninit<T>] {
        const { assert!(align_of::<Self>() >= align_of::<f64>()) };
        debug_assert!(align_of::<T>() <= align_of::<Self>());
        // SAFETY: the block is aligned to 64 bytes, at least T's alignment (T is f32 or f64),
        // `BYTES / size_of::<T>()` elements fit in its BYTES bytes, and every bit pattern of
        // `MaybeUninit<u8>` is a valid `MaybeUninit<T>` byte; the borrow of `self` bounds
        // the slice's life.
        unsafe {
            core::slice::from_raw_parts_mut(
                self.0.as_mut_ptr().cast::<MaybeUninit<T>>(),
                BYTES / size_of::<T>(),
            )
        }
    }
}

/// A strided read-only matrix: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

impl<T: Copy> Mat<'_, T> {
    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> T {
        self.data[i * self.rs + j * self.cs]
    }
}

impl<'a, T: Copy> From<MatRef<'a, T>> for Mat<'a, T> {
    #[inline(always)]
    fn from(x: MatRef<'a, T>) -> Self {
        Mat {
            data: x.data(),
            rs: x.row_stride(),
            cs: x.col_stride(),
        }
    }
}

/// One product `C (m×n) = α·A (m×k)·B (k×n)`, added to C when `add`: the operands and
/// scalars every level of the kernel passes down (C travels beside it).
#[derive(Clone, Copy)]
pub(crate) struct Job<'a, T> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Mat<'a, T>,
    pub b: Mat<'a, T>,
    pub alpha: T,
    pub add: bool,
}

/// How a microkernel stores its tile: scaled by `alpha`, added to C when `add`.
#[derive(Clone, Copy)]
struct Epilogue<T> {
    alpha: T,
    add: bool,
}

/// `C (+)= α·A·B` over favor-core's views. The kernels below store rows of C: a C with
/// adjacent columns goes to them directly, one with adjacent rows as `Cᵀ = Bᵀ·Aᵀ` (free
/// transposes), any other C (never built by favor-core) through a plain loop.
#[inline(always)]
pub(crate) fn gemm_views<T: Real, S: Simd>(
    s: S,
    c: MatMut<'_, T>,
    accum: Accum,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    alpha: T,
) {
    let (m, n, k) = gemm_dims(&c, &a, &b);
    let add = accum == Accum::Add;
    // Not recursive (Cᵀ calls the kernel directly): an `inline(always)` function that calls
    // itself cannot be inlined, and outside the target-feature region pulp's vector ops
    // become calls.
    if c.col_stride() == 1 || n <= 1 {
        let ldc = c.row_stride();
        let (a, b) = (a.into(), b.into());
        gemm(
            s,
            Job {
                m,
                n,
                k,
                a,
                b,
                alpha,
                add,
            },
            c.into_data(),
            ldc,
        );
    } else if c.row_stride() == 1 || m <= 1 {
        let ldc = c.col_stride();
        let (a, b) = (b.t().into(), a.t().into());
        let (m, n) = (n, m);
        gemm(
            s,
            Job {
                m,
                n,
                k,
                a,
                b,
                alpha,
                add,
            },
            c.into_data(),
            ldc,
        );
    } else {
        let mut c = c;
        for i in 0..m {
            for j in 0..n {
                let p = (0..k).fold(T::zero(), |acc, p| acc + a.get(i, p) * b.get(p, j));
                let cij = c.get_mut(i, j);
                *cij = if add { *cij + alpha * p } else { alpha * p };
            }
        }
    }
}

/// `C = α·A·B` (or `C += α·A·B` with `job.add`), C row-major with leading dimension `ldc`.
#[inline(always)]
pub(crate) fn gemm<T: Real, S: Simd>(s: S, job: Job<'_, T>, c: &mut [T], ldc: usize) {
    let Job { m, k, a, b, .. } = job;
    if degenerate(job, c, ldc) {
        return;
    }
    if b.cs == 1 && (m <= ROWS_MAX || k <= 2) {
        rows_axpy(s, job, c, ldc);
    } else if a.cs == 1 && b.rs == 1 && m < MR_NARROW {
        rows_dot(s, job, c, ldc);
    } else {
        if wide_register_file::<S>() {
            packed::<T, S, MR_WIDE>(s, job, c, ldc);
        } else {
            packed::<T, S, MR_NARROW>(s, job, c, ldc);
        }
    }
}

/// [`gemm_views`] for a C of at most [`ROWS_MAX`] rows whose columns, like B's, are adjacent:
/// the shapes that never pack. A caller making many such products (the causal tile's row
/// groups) calls this rather than `gemm_views`, whose packed kernel would otherwise be inlined
/// at each call site with its stack blocks (56 KiB each; when they were 224 KiB in f64,
/// three inlined copies overflowed a 2 MiB thread stack).
///
/// # Panics
/// If the shapes disagree or C or B has non-adjacent columns or C more than `ROWS_MAX` rows.
#[inline(always)]
pub(crate) fn gemm_rows<T: Real, S: Simd>(
    s: S,
    c: MatMut<'_, T>,
    accum: Accum,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
) {
    let (m, n, k) = gemm_dims(&c, &a, &b);
    assert!(m <= ROWS_MAX && c.col_stride() == 1 && b.col_stride() == 1);
    let ldc = c.row_stride();
    let (a, b) = (a.into(), b.into());
    let job = Job {
        m,
        n,
        k,
        a,
        b,
        alpha: T::one(),
        add: accum == Accum::Add,
    };
    let c = c.into_data();
    if !degenerate(job, c, ldc) {
        rows_axpy(s, job, c, ldc);
    }
}

/// Finishes a product with no rows, no columns or no depth (C untouched, or zeroed when
/// overwriting with k = 0) and says whether it did: the kernels assume m, n, k ≥ 1.
#[inline(always)]
fn degenerate<T: Real>(job: Job<'_, T>, c: &mut [T], ldc: usize) -> bool {
    let Job { m, n, k, add, .. } = job;
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 {
        if !add {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(T::zero());
            }
        }
        return true;
    }
    false
}

/// Largest m that skips packing: with up to 16 rows (a decode step's keys and queries for 8
/// heads sharing one W) packing B would copy as many bytes as the rows read, and the column
/// blocks of [`rows_axpy`] already keep each B strip in L1 for all the rows.
pub(crate) const ROWS_MAX: usize = 16;

/// Each C row as `Σ_p a_ip · B_p` over contiguous B rows, four vectors of C held in
/// registers across the whole k loop. Column blocks are the outer loop, so a k × 4-vector
/// strip of B is read from memory once and then from L1 for every further row pair.
#[inline(always)]
fn rows_axpy<T: Real, S: Simd>(s: S, job: Job<'_, T>, c: &mut [T], ldc: usize) {
    let (m, n) = (job.m, job.n);
    // Rows go in pairs so each B vector loaded feeds two rows: a decode step projects its key
    // and query together, and B (Wᵀ) is the bulk of the memory traffic.
    let w = 4 * T::lanes::<S>();
    let full = n - n % w;
    for j in (0..full).step_by(w) {
        let mut i = 0;
        // 16 accumulators where there are 32 registers, 8 where there are 16.
        if wide_register_file::<S>() {
            while i + 4 <= m {
                row_group::<T, S, 4>(s, job, i, j, &mut c[i * ldc..], ldc);
                i += 4;
            }
        }
        while i + 2 <= m {
            row_group::<T, S, 2>(s, job, i, j, &mut c[i * ldc..], ldc);
            i += 2;
        }
        if i < m {
            row_group::<T, S, 1>(s, job, i, j, &mut c[i * ldc..], ldc);
        }
    }
    if full < n {
        for i in 0..m {
            let row = &mut c[i * ldc..i * ldc + n];
            row_tail(s, job, i, full, row);
        }
    }
}

/// Rows `i..i+R` of C (`c` starts at row i), columns `j..j+4·lanes`: four vectors of each
/// row held in registers across the whole k loop, every B vector shared by the R rows, α
/// applied once at the end.
#[inline(always)]
fn row_group<T: Real, S: Simd, const R: usize>(
    s: S,
    job: Job<'_, T>,
    i: usize,
    j: usize,
    c: &mut [T],
    ldc: usize,
) {
    let Job {
        k,
        a,
        b,
        alpha,
        add: accumulate,
        ..
    } = job;
    let w = 4 * T::lanes::<S>();
    let mut acc = [[T::vsplat(s, T::zero()); 4]; R];
    // Raw pointers in the k loop, as in the microkernel: per-step slicing and indexing kept
    // bounds checks and address arithmetic that cost as much as the FMAs at these sizes.
    // Checked arithmetic: a wrapped product would let a huge stride pass the check.
    let last_b = (k - 1)
        .checked_mul(b.rs)
        .and_then(|x| x.checked_add(j + w - 1));
    let last_a = (i + R - 1)
        .checked_mul(a.rs)
        .and_then(|x| (k - 1).checked_mul(a.cs).and_then(|y| x.checked_add(y)));
    assert!(k > 0 && last_b.is_some_and(|l| l < b.data.len()));
    assert!(last_a.is_some_and(|l| l < a.data.len()));
    let (ap, bp) = (a.data.as_ptr(), b.data.as_ptr());
    for p in 0..k {
        // SAFETY: p < k and r < R, so the B vectors at p·b.rs + j .. + w and the A scalars at
        // (i + r)·a.rs + p·a.cs are at most `last_b` and `last_a`, inside `b.data` and
        // `a.data` by the asserts above; pulp's vector types are `repr(C)` arrays of T, read
        // unaligned.
        unsafe {
            let brow = bp.add(p * b.rs + j);
            let lanes = T::lanes::<S>();
            let bv = [
                core::ptr::read_unaligned(brow as *const T::V<S>),
                core::ptr::read_unaligned(brow.add(lanes) as *const T::V<S>),
                core::ptr::read_unaligned(brow.add(2 * lanes) as *const T::V<S>),
                core::ptr::read_unaligned(brow.add(3 * lanes) as *const T::V<S>),
            ];
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let av = T::vsplat(s, *ap.add((i + r) * a.rs + p * a.cs));
                for t in 0..4 {
                    acc_r[t] = T::vfma(s, av, bv[t], acc_r[t]);
                }
            }
        }
    }
    let al = T::vsplat(s, alpha);
    for (r, acc_r) in acc.iter().enumerate() {
        let (cv, _) = T::as_mut_simd::<S>(&mut c[r * ldc + j..r * ldc + j + w]);
        for t in 0..4 {
            let x = T::vmul(s, acc_r[t], al);
            cv[t] = if accumulate { T::vadd(s, cv[t], x) } else { x };
        }
    }
}

/// Columns `j0..n` of row i (fewer than four vectors), one vector at a time.
#[inline(always)]
fn row_tail<T: Real, S: Simd>(s: S, job: Job<'_, T>, i: usize, j0: usize, row: &mut [T]) {
    let Job {
        n,
        k,
        a,
        b,
        alpha,
        add: accumulate,
        ..
    } = job;
    let lanes = T::lanes::<S>();
    let mut j = j0;
    while j < n {
        let len = lanes.min(n - j);
        let mut acc = T::vsplat(s, T::zero());
        for p in 0..k {
            let av = T::vsplat(s, alpha * a.at(i, p));
            let bv = T::load_partial(s, &b.data[p * b.rs + j..p * b.rs + j + len]);
            acc = T::vfma(s, av, bv, acc);
        }
        if accumulate {
            acc = T::vadd(s, T::load_partial(s, &row[j..j + len]), acc);
        }
        T::store_partial(s, &mut row[j..j + len], acc);
        j += len;
    }
}

/// Each C element as a dot product of a contiguous A row and a contiguous B column, four
/// columns at a time so the A row is loaded once per four dots.
#[inline(always)]
fn rows_dot<T: Real, S: Simd>(s: S, job: Job<'_, T>, c: &mut [T], ldc: usize) {
    let Job {
        m,
        n,
        k,
        a,
        b,
        alpha,
        add: accumulate,
    } = job;
    for i in 0..m {
        let arow = &a.data[i * a.rs..i * a.rs + k];
        let mut j = 0;
        while j + 4 <= n {
            let cols: [&[T]; 4] =
                core::array::from_fn(|t| &b.data[(j + t) * b.cs..(j + t) * b.cs + k]);
            let d = dot4(s, arow, cols);
            for t in 0..4 {
                let cij = &mut c[i * ldc + j + t];
                *cij = if accumulate {
                    *cij + alpha * d[t]
                } else {
                    alpha * d[t]
                };
            }
            j += 4;
        }
        for jj in j..n {
            let d = alpha * crate::ops::dot(s, arow, &b.data[jj * b.cs..jj * b.cs + k]);
            let cij = &mut c[i * ldc + jj];
            *cij = if accumulate { *cij + d } else { d };
        }
    }
}

#[inline(always)]
fn dot4<T: Real, S: Simd>(s: S, x: &[T], ys: [&[T]; 4]) -> [T; 4] {
    let (xv, xt) = T::as_simd::<S>(x);
    let yv: [_; 4] = core::array::from_fn(|t| T::as_simd::<S>(ys[t]));
    let mut acc = [T::vsplat(s, T::zero()); 4];
    for (p, &x) in xv.iter().enumerate() {
        for t in 0..4 {
            acc[t] = T::vfma(s, x, yv[t].0[p], acc[t]);
        }
    }
    let mut out = [T::zero(); 4];
    for t in 0..4 {
        out[t] = T::reduce_sum(s, acc[t]);
        for (&x, &y) in xt.iter().zip(yv[t].1) {
            out[t] = out[t] + x * y;
        }
    }
    out
}

/// Loop nest: pc (depth) → jc (B block, packed) → ic (A block) → micro-panels.
///
/// B is always packed: each packed element then feeds all m rows, so the copy is noise, and
/// the micro-panels are contiguous whatever B's stride. A is packed only when it is
/// transposed (`a.rs == 1`, the K'ᵀV update): there each step of p jumps a whole row of
/// memory, and unpacked reads would thrash L1 sets. Row-major A is read in place — with n as
/// small as a head dimension, packing it would cost as much as the FMAs it feeds.
#[inline(always)]
fn packed<T: Real, S: Simd, const MR: usize>(s: S, job: Job<'_, T>, c: &mut [T], ldc: usize) {
    let Job {
        m,
        n,
        k,
        a,
        b,
        alpha,
        add: accumulate,
    } = job;
    let nr = 2 * T::lanes::<S>();
    debug_assert!(nr <= MAX_NR);
    // Block sizes in elements: constants once monomorphised.
    let nc_max = (B_BLOCK_BYTES / (KC * size_of::<T>())) / MAX_NR * MAX_NR;
    let mc_max = A_BLOCK_BYTES / (KC * size_of::<T>());
    // Stack storage, zeroed only as far as this call's blocks reach: zeroing whole blocks on
    // every call cost more than the arithmetic of small GEMMs.
    let mut bstore = Block::<B_BLOCK_BYTES>::new();
    let mut astore = Block::<A_BLOCK_BYTES>::new();
    let kc_max = KC.min(k);
    let bpack = zeroed(&mut bstore.as_uninit::<T>()[..kc_max * nc_max.min(n.next_multiple_of(nr))]);
    let pack_a_here = a.rs == 1 && a.cs != 1;
    let a_len = if pack_a_here {
        kc_max * mc_max.min(m.next_multiple_of(MR))
    } else {
        0
    };
    let apack = zeroed(&mut astore.as_uninit::<T>()[..a_len]);
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        let acc = accumulate || pc > 0;
        for jc in (0..n).step_by(nc_max) {
            let nc = nc_max.min(n - jc);
            let block = BBlock {
                pc,
                kc,
                j0: jc,
                cols: nc,
                nr,
            };
            pack_b::<T, S>(s, b, block, bpack);
            for ic in (0..m).step_by(mc_max) {
                let mc = mc_max.min(m - ic);
                if pack_a_here {
                    pack_a::<T, MR>(a, ic, mc, pc, kc, apack);
                }
                for (pj, jr) in (0..nc).step_by(nr).enumerate() {
                    let bp = &bpack[pj * kc * nr..(pj + 1) * kc * nr];
                    for (pi, ir) in (0..mc).step_by(MR).enumerate() {
                        let ap = if pack_a_here {
                            let panel = &apack[pi * kc * MR..(pi + 1) * kc * MR];
                            Mat {
                                data: panel,
                                rs: 1,
                                cs: MR,
                            }
                        } else {
                            let start = (ic + ir) * a.rs + pc * a.cs;
                            Mat {
                                data: &a.data[start..],
                                rs: a.rs,
                                cs: a.cs,
                            }
                        };
                        let tile = Tile {
                            c_off: (ic + ir) * ldc + jc + jr,
                            ldc,
                            rows: MR.min(mc - ir),
                            cols: nr.min(nc - jr),
                        };
                        let epi = Epilogue { alpha, add: acc };
                        micro::<T, S, MR>(s, kc, ap, bp, c, tile, epi);
                    }
                }
            }
        }
    }
}

/// Zero-fills `s` and returns it as initialised `T`s.
#[inline(always)]
fn zeroed<T: Real>(s: &mut [MaybeUninit<T>]) -> &mut [T] {
    s.fill(MaybeUninit::new(T::zero()));
    // SAFETY: every element was just written, and `MaybeUninit<T>` has T's layout.
    unsafe { core::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<T>(), s.len()) }
}

/// Where a microkernel's result goes: C offset of its top-left element, C's leading
/// dimension and the tile's valid size.
#[derive(Clone, Copy)]
struct Tile {
    c_off: usize,
    ldc: usize,
    rows: usize,
    cols: usize,
}

/// Packs a transposed A's (`a.rs == 1`) rows `ic..ic+mc`, columns `pc..pc+kc` into MR-row
/// micro-panels: panel i holds
/// `dst[i·kc·MR + p·MR + r] = A(ic + i·MR + r, pc + p)`, rows past `mc` zero.
#[inline(always)]
fn pack_a<T: Real, const MR: usize>(
    a: Mat<'_, T>,
    ic: usize,
    mc: usize,
    pc: usize,
    kc: usize,
    dst: &mut [T],
) {
    // Only transposed A is packed (see `packed`): the MR rows of a panel are adjacent in
    // memory for each p. p is the outer loop so each source row (mc contiguous elements) is
    // read once, front to back, instead of in MR-element pieces by every panel in turn (that
    // strided walk cost a fifth of a K'ᵀV update).
    debug_assert_eq!(a.rs, 1);
    let full = mc / MR;
    let rest = mc - full * MR;
    if rest > 0 {
        dst[full * kc * MR..(full + 1) * kc * MR].fill(T::zero());
    }
    for p in 0..kc {
        let src = &a.data[(pc + p) * a.cs + ic..][..mc];
        for pi in 0..full {
            // Fixed-length copies: a runtime-length one becomes a memcpy call.
            let d = &mut dst[pi * kc * MR + p * MR..][..MR];
            d.copy_from_slice(&src[pi * MR..pi * MR + MR]);
        }
        if rest > 0 {
            let d = &mut dst[full * kc * MR + p * MR..][..rest];
            d.copy_from_slice(&src[full * MR..]);
        }
    }
}

/// A block of B to pack: rows (depth) `pc..pc+kc`, columns `j0..j0+cols`, into micro-panels
/// of `nr` columns.
#[derive(Clone, Copy)]
pub(crate) struct BBlock {
    pub pc: usize,
    pub kc: usize,
    pub j0: usize,
    pub cols: usize,
    pub nr: usize,
}

/// Packs B's `block` into nr-column micro-panels: panel j holds
/// `dst[j·kc·nr + p·nr + c] = B(pc + p, j0 + j·nr + c)`, columns past `cols` zero.
#[inline(always)]
fn pack_b<T: Real, S: Simd>(s: S, b: Mat<'_, T>, block: BBlock, dst: &mut [T]) {
    let BBlock {
        pc,
        kc,
        j0: jc,
        cols: nc,
        nr,
    } = block;
    for (pj, jr) in (0..nc).step_by(nr).enumerate() {
        let panel = &mut dst[pj * kc * nr..(pj + 1) * kc * nr];
        let cols = nr.min(nc - jr);
        if cols < nr {
            panel.fill(T::zero());
        }
        if b.cs == 1 {
            for p in 0..kc {
                let src = &b.data[(pc + p) * b.rs + jc + jr..][..cols];
                let dst = &mut panel[p * nr..p * nr + nr];
                if cols == nr {
                    // Two vector moves; a runtime-length copy would be a memcpy call.
                    let (sv, _) = T::as_simd::<S>(src);
                    let (dv, _) = T::as_mut_simd::<S>(dst);
                    dv[0] = sv[0];
                    dv[1] = sv[1];
                } else {
                    for (d, &x) in dst.iter_mut().zip(src) {
                        *d = x;
                    }
                }
            }
        } else if b.rs == 1 {
            let panel_block = BBlock {
                j0: jc + jr,
                cols,
                ..block
            };
            pack_transposed(s, b, panel_block, panel);
        } else {
            for c in 0..cols {
                for p in 0..kc {
                    panel[p * nr + c] = b.at(pc + p, jc + jr + c);
                }
            }
        }
    }
}

/// One micro-panel of a B whose columns are contiguous (`b.rs == 1`: K'ᵀ in the causal
/// score tile Q'K'ᵀ): `panel[p·nr + c] = B(pc + p, j0 + c)` for `c < cols`, `p < kc`.
///
/// A transpose. With AVX-512 in f32, whole 16×16 blocks are transposed in registers
/// (`transpose_x86`: the causal tile 21.5–21.9 → 18.0–20.4 µs, `kern tile_cols`). Otherwise,
/// and for the columns past the last whole block, one scalar store per element: columns go
/// G = 4 at a time (8 measured slower), so each p writes four adjacent elements of one panel
/// row while four source columns stream in order; one column at a time (each store a line
/// apart) with bounds checks on every element cost as much as a third of the tile's
/// arithmetic.
#[inline(always)]
fn pack_transposed<T: Real, S: Simd>(s: S, b: Mat<'_, T>, block: BBlock, panel: &mut [T]) {
    let BBlock {
        pc,
        kc,
        j0,
        cols,
        nr,
    } = block;
    debug_assert_eq!(b.rs, 1);
    // Checked arithmetic: a wrapped product would let a huge stride pass the checks.
    let last_src = (j0 + cols - 1)
        .checked_mul(b.cs)
        .and_then(|x| x.checked_add(pc + kc - 1));
    assert!(cols > 0 && kc > 0 && cols <= nr && last_src.is_some_and(|l| l < b.data.len()));
    assert!(panel.len() >= kc * nr);
    // AVX-512 in f32 transposes whole 16×16 blocks in registers; the rest goes as below.
    #[cfg(all(feature = "x86-v4", target_arch = "x86_64"))]
    let done = crate::transpose_x86::pack_transposed(s, b.data, b.cs, block, panel);
    #[cfg(not(all(feature = "x86-v4", target_arch = "x86_64")))]
    let done = {
        let _ = s;
        0
    };
    let (src, dst) = (b.data.as_ptr(), panel.as_mut_ptr());
    const G: usize = 4;
    let mut c = done;
    while c + G <= cols {
        let starts: [usize; G] = core::array::from_fn(|t| (j0 + c + t) * b.cs + pc);
        for p in 0..kc {
            // SAFETY: p < kc and c + t < cols, so every source index is at most `last_src`
            // (< b.data.len()) and every destination index below kc·nr ≤ panel.len(), by
            // the asserts above.
            unsafe {
                let d = dst.add(p * nr + c);
                for (t, &st) in starts.iter().enumerate() {
                    *d.add(t) = *src.add(st + p);
                }
            }
        }
        c += G;
    }
    for c in c..cols {
        let st = (j0 + c) * b.cs + pc;
        for (p, &x) in b.data[st..st + kc].iter().enumerate() {
            panel[p * nr + c] = x;
        }
    }
}

/// The microkernel: `tile.rows` (≤ MR) rows of A, read through `a` (element (r, p) at
/// `a.data[r·a.rs + p·a.cs]`: a packed micro-panel or A in place), times one packed B
/// micro-panel (kc × NR, NR = 2 vectors); writes the tile's valid part of α·A·B into C.
#[inline(always)]
fn micro<T: Real, S: Simd, const MR: usize>(
    s: S,
    kc: usize,
    a: Mat<'_, T>,
    bp: &[T],
    c: &mut [T],
    tile: Tile,
    epi: Epilogue<T>,
) {
    macro_rules! dispatch {
        ($($r:literal)*) => {
            match tile.rows {
                $($r => micro_rows::<T, S, $r>(s, kc, a, bp, c, tile, epi),)*
                _ => unreachable!("tile rows are 1..=MR"),
            }
        };
    }
    debug_assert!(tile.rows >= 1 && tile.rows <= MR && MR <= MR_WIDE);
    dispatch!(1 2 3 4 5 6 7 8 9 10 11 12)
}

#[inline(always)]
fn micro_rows<T: Real, S: Simd, const R: usize>(
    s: S,
    kc: usize,
    a: Mat<'_, T>,
    bp: &[T],
    c: &mut [T],
    tile: Tile,
    epi: Epilogue<T>,
) {
    let (ldc, alpha, accumulate) = (tile.ldc, epi.alpha, epi.add);
    let lanes = T::lanes::<S>();
    let zero = T::vsplat(s, T::zero());
    let mut acc0 = [zero; R];
    let mut acc1 = [zero; R];
    // Raw pointers in the hot loop: with indexing, LLVM keeps bounds checks and spills the
    // row offsets, losing a third of the FMA rate. These checks cover every access below.
    // Checked arithmetic: a wrapped product would let a huge stride pass the check.
    let last_a = (R - 1).checked_mul(a.rs).and_then(|x| {
        (kc.wrapping_sub(1))
            .checked_mul(a.cs)
            .and_then(|y| x.checked_add(y))
    });
    assert!(kc > 0 && last_a.is_some_and(|l| l < a.data.len()));
    assert!(bp.len() >= kc * 2 * lanes);
    let mut a_ptr = a.data.as_ptr();
    let mut b_ptr = bp.as_ptr();
    // `a.rs` is a run-time value, so reading row r at `r·a.rs` costs an address add per row
    // per step (LLVM chains them), which leaves the 12-row kernel front-end bound: 12 adds
    // beside 14 loads and 24 FMAs. A packed micro-panel has `a.rs == 1`: with the stride
    // known, the R reads are constant offsets from one pointer.
    macro_rules! steps {
        ($rs:expr) => {
            for _ in 0..kc {
                // SAFETY: after p < kc steps a_ptr = a.data + p·a.cs and b_ptr = bp +
                // p·2·lanes; the R scalars at r·$rs ($rs = a.rs) and the two vectors read here
                // are inside `a.data` and `bp` by the asserts above. pulp's vector types are
                // `repr(C)` arrays of T, read unaligned. `wrapping_add` keeps the final,
                // one-past step free of any in-bounds requirement.
                unsafe {
                    let b0 = core::ptr::read_unaligned(b_ptr as *const T::V<S>);
                    let b1 = core::ptr::read_unaligned(b_ptr.add(lanes) as *const T::V<S>);
                    for r in 0..R {
                        let av = T::vsplat(s, *a_ptr.add(r * $rs));
                        acc0[r] = T::vfma(s, av, b0, acc0[r]);
                        acc1[r] = T::vfma(s, av, b1, acc1[r]);
                    }
                }
                a_ptr = a_ptr.wrapping_add(a.cs);
                b_ptr = b_ptr.wrapping_add(2 * lanes);
            }
        };
    }
    if a.rs == 1 {
        steps!(1);
    } else {
        steps!(a.rs);
    }
    let al = T::vsplat(s, alpha);
    for r in 0..R {
        let v0 = T::vmul(s, acc0[r], al);
        let v1 = T::vmul(s, acc1[r], al);
        let off = tile.c_off + r * ldc;
        let row = &mut c[off..off + tile.cols];
        if tile.cols == 2 * lanes {
            let (cv, _) = T::as_mut_simd::<S>(row);
            if accumulate {
                cv[0] = T::vadd(s, cv[0], v0);
                cv[1] = T::vadd(s, cv[1], v1);
            } else {
                cv[0] = v0;
                cv[1] = v1;
            }
        } else {
            let n0 = tile.cols.min(lanes);
            let (lo, hi) = row.split_at_mut(n0);
            for (part, v) in [(lo, v0), (hi, v1)] {
                if part.is_empty() {
                    continue;
                }
                let v = if accumulate {
                    T::vadd(s, T::load_partial(s, part), v)
                } else {
                    v
                };
                T::store_partial(s, part, v);
            }
        }
    }
}
