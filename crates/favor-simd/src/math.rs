//! Vectorised `exp`, `sin` and `cos` for `f32`, written once over [`pulp::Simd`].
//!
//! pulp has no transcendental functions, and its `Simd` trait has no float→int conversion and
//! no `round`/`floor`, so everything here is built from `+ − × fma`, `min`/`max`, comparisons,
//! selects and integer operations on the bit patterns:
//!
//! * rounding to the nearest integer uses the "magic number" trick: for `|v| < 2^22`,
//!   `v + 1.5·2^23` lands in `[2^23, 2^24)`, where the spacing of `f32` is exactly 1, so the
//!   addition itself rounds `v` to an integer `n`; subtracting the magic number again gives `n`
//!   as a float (exactly), and the low 22 bits of the sum's bit pattern hold `n` in two's
//!   complement (the magic number's own low 22 bits are zero);
//! * `2^n` is assembled directly in the exponent field: `(n + 127) << 23`, as two factors so
//!   that `y·2^n` rounds once, subnormal results included. AVX-512 has that product as one
//!   instruction (`vscalefps`, the same single rounding, so the same bits): its `exp` uses it,
//!   16 operations per vector instead of 25 (the feature map's exponentials 1.5× faster on
//!   a full-width AVX-512 Xeon, `parts` example: 0.53–0.56 → 0.36–0.38 ms per head).
//!
//! | function | error, measured against `libm` | domain |
//! |---|---|---|
//! | [`exp_f32s`] / [`exp_f32`] | ≤ [`EXP_MAX_ULP`] ulp | every `f32` (normal, subnormal and overflowing results) |
//! | [`sin_cos_f32s`] / [`sin_cos_f32`] | ≤ [`SIN_COS_MAX_ABS_ERR`] absolute | magnitude ≤ [`SIN_COS_RANGE`] |
//!
//! The bounds hold on every backend: pulp's `Scalar` (no fused multiply-add), AVX2+FMA,
//! AVX-512 and NEON. They were checked over **every** `f32` of the stated domain on `Scalar`,
//! AVX2+FMA and AVX-512, and on a strided sweep for NEON (under emulation), which matches the
//! scalar twins bit for bit, as AVX2+FMA and AVX-512 do everywhere. `tests/math.rs` runs a
//! strided version of the sweeps in CI; `FAVOR_MATH_STRIDE=1` makes them exhaustive.
//!
//! # Scalar twins and bit-exactness
//!
//! [`exp_f32`] and [`sin_cos_f32`] run the identical sequence of IEEE operations on one lane,
//! with a fused multiply-add ([`libm::fmaf`]) wherever the vector code uses
//! [`mul_add_e_f32s`](pulp::Simd::mul_add_e_f32s). On backends where `mul_add_e_f32s` is fused
//! (AVX2+FMA, AVX-512, NEON) the vector functions therefore return the scalar twin's result
//! **bit for bit** (NaN payloads aside). pulp's `Scalar` backend implements `mul_add_e_f32s` as
//! an unfused `a * b + c` (fast, but rounded twice), so there the results may differ from the
//! twin in the last bit; they still meet the same stated bounds. The twins are references (each
//! `fmaf` is a call), not fast paths.
//!
//! Both functions are written once against a small private lane abstraction, instantiated for a
//! pulp SIMD token and for the fused scalar, so the two versions cannot drift apart; the one
//! ISA-specific step (`scale_pow2` on AVX-512) is checked against the twin by the same sweeps
//! (exhaustive with `FAVOR_MATH_STRIDE=1`: no lane differs).

use pulp::Simd;

/// Largest error of [`exp_f32s`] / [`exp_f32`], in units in the last place, against
/// [`libm::expf`], on every backend.
///
/// Measured as the distance between the two results' bit patterns, so it covers normal results,
/// gradual underflow (subnormal results, measured in steps of `2^-149`) and the overflow edge
/// (`f32::MAX` next to `+inf` would count as 1; in fact the overflow and underflow-to-zero edges
/// fall on exactly the same inputs as libm's). Measured over every `f32` on pulp's `Scalar`,
/// AVX2+FMA and AVX-512 (the FMA backends agree with [`exp_f32`] bit for bit on all of them;
/// NEON was checked on a strided sweep under emulation, bit for bit too). The maximum, 1 ulp,
/// is reached on every backend; libm's `expf` is itself within about 0.5 ulp of `e^x`.
pub const EXP_MAX_ULP: u32 = 1;

/// Largest absolute error of [`sin_cos_f32s`] / [`sin_cos_f32`] (either output) against
/// [`libm::sinf`] / [`libm::cosf`] for `|x| ≤` [`SIN_COS_RANGE`], on every backend.
///
/// Measured over every `f32` with `|x| ≤ SIN_COS_RANGE` on pulp's `Scalar`, AVX2+FMA and
/// AVX-512 (NEON: strided sweep under emulation, bit-identical to [`sin_cos_f32`]). The maximum
/// seen is `2^-24 ≈ 5.96e-8`, one ulp of a result in `[1/2, 1)`, on every backend, near `0`
/// and near `SIN_COS_RANGE` alike: the Cody–Waite reduction is exact in that range (see the
/// constants' comments), so the error does not grow with `|x|` inside it.
pub const SIN_COS_MAX_ABS_ERR: f32 = 6.0e-8;

/// Largest `|x|` for which [`SIN_COS_MAX_ABS_ERR`] is guaranteed (`2^16`).
///
/// Up to here the quadrant count `q = round(x·2/π)` has at most 16 bits, so both `q·PIO2_1`
/// and `q·PIO2_2` (8-bit constants) are exact even without a fused multiply-add, and the
/// three-part reduction `x − q·π/2` is exact up to its last rounding.
///
/// Beyond it the accuracy degrades; measured against `f64` `sin`/`cos` (sampled sweeps):
///
/// | magnitude of `x` | FMA backends (AVX2+FMA, AVX-512, NEON) | pulp `Scalar` (unfused) |
/// |---|---|---|
/// | `2^16 … 2^17` | 7e-8 | 2e-6 |
/// | `2^17 … 2^20` | 1e-7 | grows like `2^-24` times the magnitude (`8e-3` at `2^17`) |
/// | `2^20 … 2^21` | 2e-7 | `6e-2` |
/// | `2^21 … 2^22` | 5e-7 | `0.13` |
/// | from `6.6·10^6` (where `x·2/π` reaches `2^22`) | meaningless | meaningless |
///
/// (With FMA the reduction stays exact; only the choice of `q`, made with `2/π` rounded to
/// `f32`, drifts, so `r` leaves the polynomials' fitted interval a little. Without FMA `q·PIO2_1`
/// is rounded once `|q| ≥ 2^16`.) For every finite input, however large, both outputs are
/// finite and lie in `[-1, 1]` (the reduced argument is clamped to `±1`); `±inf` and NaN give
/// NaN.
pub const SIN_COS_RANGE: f32 = 65536.0;

// ---------------------------------------------------------------------------------------------
// Shared constants
// ---------------------------------------------------------------------------------------------

/// `1.5·2^23`: adding it to `|v| < 2^22` rounds `v` to the nearest integer (ties to even).
const ROUND_MAGIC: f32 = 12_582_912.0;
/// Bit pattern of [`ROUND_MAGIC`]; its low 22 bits are zero, so `bits(v + MAGIC) − MAGIC_BITS`
/// is the rounded integer in two's complement.
const ROUND_MAGIC_BITS: u32 = 0x4b40_0000;

// ---------------------------------------------------------------------------------------------
// exp constants
// ---------------------------------------------------------------------------------------------

/// `log2(e)` rounded to `f32`. It only chooses `n`; its rounding error (and that of the
/// product) moves `x·log2 e` by at most ~1e-5 for `|x| ≤ 104`, so `|r| ≤ ln2/2 + 1e-5`,
/// inside the polynomial's fitting interval.
const LOG2_E: f32 = core::f32::consts::LOG2_E;
/// High part of `ln 2` (0x3f317200 = 45425/2^16, the split used by musl/FreeBSD): 16
/// significant bits, so `n·LN2_HI` is exact for `|n| ≤ 2^8`, and `x − n·LN2_HI` is exact too
/// (the operands nearly cancel, and the difference needs no bits below `x`'s last one), with or
/// without FMA.
const LN2_HI: f32 = f32::from_bits(0x3f31_7200); // 0.693145751953125
/// `ln 2 − LN2_HI` rounded to `f32` (0x35bfbe8e); the remaining error, 5.5e-14, times
/// `|n| ≤ 150` is below 1e-11.
const LN2_LO: f32 = 1.428_606_8e-6;
/// Inputs are clamped to `[EXP_X_MIN, EXP_X_MAX]` first, which keeps `n` in `[-150, 128]`.
/// `e^-104 < 2^-150` (half the smallest subnormal), so every clamped input still rounds to 0.
const EXP_X_MIN: f32 = -104.0;
/// `e^89 > f32::MAX`, so every clamped input still overflows to `+inf`.
const EXP_X_MAX: f32 = 89.0;

// Remez (minimax) fit of `P` in `e^r ≈ 1 + r + r²·P(r)`, minimising the relative error of
// `e^r` over `|r| ≤ 0.3466` (ln2/2 plus the slack above), computed with mpmath at 50 digits
// and rounded to f32. Relative error with the rounded coefficients: 3.8e-9 (0.03 ulp), so the
// result's error is dominated by the final roundings. (Cephes' `expf` uses a degree-7 version of the same form.)
const EXP_P0: f32 = 0.499_999_94;
const EXP_P1: f32 = 0.166_665_21;
const EXP_P2: f32 = 0.041_668_39;
const EXP_P3: f32 = 0.008_368_716;
const EXP_P4: f32 = 0.001_381_460_2;

// ---------------------------------------------------------------------------------------------
// sin/cos constants
// ---------------------------------------------------------------------------------------------

/// `2/π` rounded to `f32`; like `LOG2_E` it only chooses the quadrant `q`. For
/// `|x| ≤ SIN_COS_RANGE` its error and that of the (possibly unfused) product move
/// `x·2/π` by at most 3.2e-3, so `|r| ≤ π/4 + 5e-3 < SIN_COS_POLY_BOUND`.
const FRAC_2_PI: f32 = core::f32::consts::FRAC_2_PI;
/// `π/2` in three parts (Cody–Waite). `PIO2_1 = 201/2^7` (8 significant bits; the next four
/// bits of `π/2` are zero, so the remainder starts at `2^-12`).
const PIO2_1: f32 = 1.570_312_5;
/// The next 8 bits of `π/2`: `253/2^19`. With `|q| < 2^16` both `q·PIO2_1` and `q·PIO2_2` are
/// exact, `x − q·PIO2_1` is exact, and `x − q·(PIO2_1 + PIO2_2)` is exact too (it is below 1
/// in magnitude and a multiple of `2^-24`).
const PIO2_2: f32 = f32::from_bits(0x39fd_0000); // 4.825592041015625e-4
/// `π/2 − PIO2_1 − PIO2_2` rounded to `f32` (0x35aa2217). Remaining error 5.1e-14, i.e. at
/// most 2.2e-9 in `r` for `|q| < 2^16`.
const PIO2_3: f32 = 1.267_590_8e-6;
/// The polynomials are fitted on `|r| ≤ π/4·(1 + 1/128) ≈ 0.7915`, which covers the reduced
/// argument for every `|x| ≤ SIN_COS_RANGE`.
const SIN_COS_POLY_BOUND: f32 = 0.791_534_07;
/// `r` is clamped to `±1` before the polynomials: a no-op in range. Beyond the range `q` drifts
/// and `r` overshoots `π/4` by up to `|x|·4e-8`; the polynomials extrapolate moderately (sin is
/// off by 1.4e-7 at `|r| = 0.9`, 7e-7 at `|r| = 1`), and for huge inputs the clamp keeps the
/// results finite and within `[-1, 1]`.
const SIN_COS_R_CLAMP: f32 = 1.0;
// In range: |r| ≤ π/4 + 5e-3 (see FRAC_2_PI) ≤ the fitted interval ≤ the clamp.
const _: () = assert!(core::f32::consts::FRAC_PI_4 + 5e-3 < SIN_COS_POLY_BOUND);
const _: () = assert!(SIN_COS_POLY_BOUND < SIN_COS_R_CLAMP);

// Remez fits (mpmath, 50 digits, rounded to f32) in `z = r²` over `|r| ≤ SIN_COS_POLY_BOUND`:
// `sin r ≈ r + r³·S(z)`, relative error 9.0e-9; `cos r ≈ 1 − z/2 + z²·C(z)`, absolute error
// 2.2e-10 (both with the rounded coefficients). (These agree with Cephes' `sinf`/`cosf` coefficients to 4-5 digits.)
const SIN_S0: f32 = -0.166_666_66;
const SIN_S1: f32 = 0.008_332_668;
const SIN_S2: f32 = -0.000_195_684_81;
const COS_C0: f32 = 0.041_666_646;
const COS_C1: f32 = -0.001_388_732;
const COS_C2: f32 = 2.443_279_7e-5;

// ---------------------------------------------------------------------------------------------
// Lane abstraction: one algorithm, two instantiations
// ---------------------------------------------------------------------------------------------

/// The handful of lane-wise operations the algorithms need. `U` lanes hold 32-bit integers,
/// read as two's complement by `min_i`/`max_i`; all integer arithmetic wraps.
trait Lanes: Copy {
    type F: Copy;
    type U: Copy;
    type M: Copy;
    fn splat(self, v: f32) -> Self::F;
    fn splat_u(self, v: u32) -> Self::U;
    fn add(self, a: Self::F, b: Self::F) -> Self::F;
    fn sub(self, a: Self::F, b: Self::F) -> Self::F;
    fn mul(self, a: Self::F, b: Self::F) -> Self::F;
    /// `a·b + c`, fused wherever the target has an FMA.
    fn fma(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    fn min(self, a: Self::F, b: Self::F) -> Self::F;
    fn max(self, a: Self::F, b: Self::F) -> Self::F;
    fn f_to_u(self, a: Self::F) -> Self::U;
    fn u_to_f(self, a: Self::U) -> Self::F;
    fn add_u(self, a: Self::U, b: Self::U) -> Self::U;
    fn sub_u(self, a: Self::U, b: Self::U) -> Self::U;
    fn and_u(self, a: Self::U, b: Self::U) -> Self::U;
    fn or_u(self, a: Self::U, b: Self::U) -> Self::U;
    fn xor_u(self, a: Self::U, b: Self::U) -> Self::U;
    fn shl_u(self, a: Self::U, k: u32) -> Self::U;
    fn min_i(self, a: Self::U, b: Self::U) -> Self::U;
    fn max_i(self, a: Self::U, b: Self::U) -> Self::U;
    fn eq_u(self, a: Self::U, b: Self::U) -> Self::M;
    fn eq_f(self, a: Self::F, b: Self::F) -> Self::M;
    fn select(self, m: Self::M, if_true: Self::F, if_false: Self::F) -> Self::F;
    /// `y·2^n`, rounded once, for `y` in `[0.5, 2]` and an integer `n` in `[-150, 128]`;
    /// `t` is `n` in its `ROUND_MAGIC` form (`n + ROUND_MAGIC`, whose low bits hold `n`).
    fn scale_pow2(self, y: Self::F, n: Self::F, t: Self::F) -> Self::F {
        let _ = n;
        scale_pow2_bits(self, y, t)
    }
}

/// [`Lanes::scale_pow2`] by assembling powers of two in the exponent field: `2^n = 2^n2·2^n1`
/// with `n1 = clamp(n, -126, 127)` and `n2 = n − n1 ∈ [-24, 1]`, both normal numbers. `y·2^n2`
/// is exact (a normal number), so the only rounding is the last product: results below
/// `2^-126` are correctly rounded subnormals (gradual underflow, no flush to zero), and
/// results above `f32::MAX` overflow to `+inf`.
#[inline(always)]
fn scale_pow2_bits<L: Lanes>(l: L, y: L::F, t: L::F) -> L::F {
    let ni = l.sub_u(l.f_to_u(t), l.splat_u(ROUND_MAGIC_BITS));
    let n1 = l.max_i(l.min_i(ni, l.splat_u(127)), l.splat_u(-126i32 as u32));
    let n2 = l.sub_u(ni, n1);
    let bias = l.splat_u(127);
    let s1 = l.u_to_f(l.shl_u(l.add_u(n1, bias), 23));
    let s2 = l.u_to_f(l.shl_u(l.add_u(n2, bias), 23));
    l.mul(l.mul(y, s2), s1)
}

/// A pulp SIMD token.
#[derive(Clone, Copy)]
struct Vector<S>(S);

impl<S: Simd> Lanes for Vector<S> {
    type F = S::f32s;
    type U = S::u32s;
    type M = S::m32s;
    #[inline(always)]
    fn splat(self, v: f32) -> S::f32s {
        self.0.splat_f32s(v)
    }
    #[inline(always)]
    fn splat_u(self, v: u32) -> S::u32s {
        self.0.splat_u32s(v)
    }
    #[inline(always)]
    fn add(self, a: S::f32s, b: S::f32s) -> S::f32s {
        self.0.add_f32s(a, b)
    }
    #[inline(always)]
    fn sub(self, a: S::f32s, b: S::f32s) -> S::f32s {
        self.0.sub_f32s(a, b)
    }
    #[inline(always)]
    fn mul(self, a: S::f32s, b: S::f32s) -> S::f32s {
        self.0.mul_f32s(a, b)
    }
    #[inline(always)]
    fn fma(self, a: S::f32s, b: S::f32s, c: S::f32s) -> S::f32s {
        self.0.mul_add_e_f32s(a, b, c)
    }
    #[inline(always)]
    fn min(self, a: S::f32s, b: S::f32s) -> S::f32s {
        self.0.min_f32s(a, b)
    }
    #[inline(always)]
    fn max(self, a: S::f32s, b: S::f32s) -> S::f32s {
        self.0.max_f32s(a, b)
    }
    #[inline(always)]
    fn f_to_u(self, a: S::f32s) -> S::u32s {
        self.0.transmute_u32s_f32s(a)
    }
    #[inline(always)]
    fn u_to_f(self, a: S::u32s) -> S::f32s {
        self.0.transmute_f32s_u32s(a)
    }
    #[inline(always)]
    fn add_u(self, a: S::u32s, b: S::u32s) -> S::u32s {
        self.0.add_u32s(a, b)
    }
    #[inline(always)]
    fn sub_u(self, a: S::u32s, b: S::u32s) -> S::u32s {
        self.0.sub_u32s(a, b)
    }
    #[inline(always)]
    fn and_u(self, a: S::u32s, b: S::u32s) -> S::u32s {
        self.0.and_u32s(a, b)
    }
    #[inline(always)]
    fn or_u(self, a: S::u32s, b: S::u32s) -> S::u32s {
        self.0.or_u32s(a, b)
    }
    #[inline(always)]
    fn xor_u(self, a: S::u32s, b: S::u32s) -> S::u32s {
        self.0.xor_u32s(a, b)
    }
    #[inline(always)]
    fn shl_u(self, a: S::u32s, k: u32) -> S::u32s {
        self.0.wrapping_dyn_shl_u32s(a, self.0.splat_u32s(k))
    }
    #[inline(always)]
    fn min_i(self, a: S::u32s, b: S::u32s) -> S::u32s {
        let s = self.0;
        s.transmute_u32s_i32s(s.min_i32s(s.transmute_i32s_u32s(a), s.transmute_i32s_u32s(b)))
    }
    #[inline(always)]
    fn max_i(self, a: S::u32s, b: S::u32s) -> S::u32s {
        let s = self.0;
        s.transmute_u32s_i32s(s.max_i32s(s.transmute_i32s_u32s(a), s.transmute_i32s_u32s(b)))
    }
    #[inline(always)]
    fn eq_u(self, a: S::u32s, b: S::u32s) -> S::m32s {
        self.0.equal_u32s(a, b)
    }
    #[inline(always)]
    fn eq_f(self, a: S::f32s, b: S::f32s) -> S::m32s {
        self.0.equal_f32s(a, b)
    }
    #[inline(always)]
    fn select(self, m: S::m32s, if_true: S::f32s, if_false: S::f32s) -> S::f32s {
        self.0.select_f32s(m, if_true, if_false)
    }
    /// AVX-512's `vscalefps` computes `y·2^n` with one rounding (gradual underflow,
    /// overflow to `+inf`): the same bits as [`scale_pow2_bits`]'s exact product and single
    /// rounding, in one instruction instead of ten.
    #[inline(always)]
    fn scale_pow2(self, y: S::f32s, n: S::f32s, t: S::f32s) -> S::f32s {
        #[cfg(all(feature = "x86-v4", target_arch = "x86_64"))]
        if let Some(&v4) = (&self.0 as &dyn core::any::Any).downcast_ref::<pulp::x86::V4>() {
            use pulp::bytemuck::cast;
            let (y, n): (core::arch::x86_64::__m512, _) = (cast(y), cast(n));
            return cast(v4.avx512f._mm512_scalef_ps(y, n));
        }
        let _ = n;
        scale_pow2_bits(self, y, t)
    }
}

/// One lane with a fused multiply-add: the arithmetic of the FMA backends.
#[derive(Clone, Copy)]
struct FusedScalar;

impl Lanes for FusedScalar {
    type F = f32;
    type U = u32;
    type M = bool;
    #[inline(always)]
    fn splat(self, v: f32) -> f32 {
        v
    }
    #[inline(always)]
    fn splat_u(self, v: u32) -> u32 {
        v
    }
    #[inline(always)]
    fn add(self, a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    fn fma(self, a: f32, b: f32, c: f32) -> f32 {
        libm::fmaf(a, b, c)
    }
    #[inline(always)]
    fn min(self, a: f32, b: f32) -> f32 {
        a.min(b)
    }
    #[inline(always)]
    fn max(self, a: f32, b: f32) -> f32 {
        a.max(b)
    }
    #[inline(always)]
    fn f_to_u(self, a: f32) -> u32 {
        a.to_bits()
    }
    #[inline(always)]
    fn u_to_f(self, a: u32) -> f32 {
        f32::from_bits(a)
    }
    #[inline(always)]
    fn add_u(self, a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }
    #[inline(always)]
    fn sub_u(self, a: u32, b: u32) -> u32 {
        a.wrapping_sub(b)
    }
    #[inline(always)]
    fn and_u(self, a: u32, b: u32) -> u32 {
        a & b
    }
    #[inline(always)]
    fn or_u(self, a: u32, b: u32) -> u32 {
        a | b
    }
    #[inline(always)]
    fn xor_u(self, a: u32, b: u32) -> u32 {
        a ^ b
    }
    #[inline(always)]
    fn shl_u(self, a: u32, k: u32) -> u32 {
        a.wrapping_shl(k)
    }
    #[inline(always)]
    fn min_i(self, a: u32, b: u32) -> u32 {
        (a as i32).min(b as i32) as u32
    }
    #[inline(always)]
    fn max_i(self, a: u32, b: u32) -> u32 {
        (a as i32).max(b as i32) as u32
    }
    #[inline(always)]
    fn eq_u(self, a: u32, b: u32) -> bool {
        a == b
    }
    #[inline(always)]
    fn eq_f(self, a: f32, b: f32) -> bool {
        a == b
    }
    #[inline(always)]
    fn select(self, m: bool, if_true: f32, if_false: f32) -> f32 {
        if m { if_true } else { if_false }
    }
}

// ---------------------------------------------------------------------------------------------
// The algorithms
// ---------------------------------------------------------------------------------------------

/// `e^x`: see [`exp_f32s`].
#[inline(always)]
fn exp_impl<L: Lanes>(l: L, x: L::F) -> L::F {
    // Clamp so that n stays in [-150, 128]; the clamped values still give exactly 0 and +inf.
    // (NaN may become a bound here, depending on the ISA's min/max; it is restored at the end.)
    let xc = l.min(l.max(x, l.splat(EXP_X_MIN)), l.splat(EXP_X_MAX));

    // n = round(x·log2 e), as a float and (below) as an integer.
    let t = l.fma(xc, l.splat(LOG2_E), l.splat(ROUND_MAGIC));
    let n = l.sub(t, l.splat(ROUND_MAGIC));

    // r = x − n·ln2 (Cody–Waite): the first step is exact, the second rounds once.
    let r = l.fma(n, l.splat(-LN2_HI), xc);
    let r = l.fma(n, l.splat(-LN2_LO), r);

    // e^r = 1 + (r + r²·P(r)); adding the 1 last keeps the low bits of r.
    let r2 = l.mul(r, r);
    let p = l.fma(l.splat(EXP_P4), r, l.splat(EXP_P3));
    let p = l.fma(p, r, l.splat(EXP_P2));
    let p = l.fma(p, r, l.splat(EXP_P1));
    let p = l.fma(p, r, l.splat(EXP_P0));
    let y = l.add(l.fma(r2, p, r), l.splat(1.0));

    // Scale by 2^n with one rounding (y ∈ [0.70, 1.42]).
    let y = l.scale_pow2(y, n, t);

    // NaN in, the same NaN out.
    l.select(l.eq_f(x, x), y, x)
}

/// `(sin x, cos x)`: see [`sin_cos_f32s`].
#[inline(always)]
fn sin_cos_impl<L: Lanes>(l: L, x: L::F) -> (L::F, L::F) {
    // q = round(x·2/π); x = q·π/2 + r.
    let t = l.fma(x, l.splat(FRAC_2_PI), l.splat(ROUND_MAGIC));
    let q = l.sub(t, l.splat(ROUND_MAGIC));

    // Three-part Cody–Waite: the first two steps are exact for |x| ≤ SIN_COS_RANGE.
    let r = l.fma(q, l.splat(-PIO2_1), x);
    let r = l.fma(q, l.splat(-PIO2_2), r);
    let r = l.fma(q, l.splat(-PIO2_3), r);
    // A no-op in range; bounds the polynomials' input for huge |x|.
    let r = l.min(
        l.max(r, l.splat(-SIN_COS_R_CLAMP)),
        l.splat(SIN_COS_R_CLAMP),
    );

    let z = l.mul(r, r);
    // sin r = r + r³·S(z)
    let s = l.fma(l.splat(SIN_S2), z, l.splat(SIN_S1));
    let s = l.fma(s, z, l.splat(SIN_S0));
    let sin_r = l.fma(l.mul(r, z), s, r);
    // For r = -0 the sum above is (+0) + (-0) = +0; copying r's sign bit back fixes that and is
    // a no-op otherwise (|r³·S| < |r|, so sin_r already has r's sign).
    let sign_bit = l.splat_u(0x8000_0000);
    let sin_r = l.u_to_f(l.or_u(l.f_to_u(sin_r), l.and_u(l.f_to_u(r), sign_bit)));
    // cos r = 1 + z·(−1/2 + z·C(z))
    let c = l.fma(l.splat(COS_C2), z, l.splat(COS_C1));
    let c = l.fma(c, z, l.splat(COS_C0));
    let h = l.fma(z, c, l.splat(-0.5));
    let cos_r = l.fma(z, h, l.splat(1.0));

    // Quadrant q mod 4 (low bits of t's pattern):
    //   q: 0 → ( sin r,  cos r), 1 → ( cos r, −sin r), 2 → (−sin r, −cos r), 3 → (−cos r,  sin r).
    let qb = l.f_to_u(t);
    let one = l.splat_u(1);
    let two = l.splat_u(2);
    let swap = l.eq_u(l.and_u(qb, one), one);
    let sin_sign = l.shl_u(l.and_u(qb, two), 30);
    let cos_sign = l.shl_u(l.and_u(l.add_u(qb, one), two), 30);
    let sin_x = l.u_to_f(l.xor_u(l.f_to_u(l.select(swap, cos_r, sin_r)), sin_sign));
    let cos_x = l.u_to_f(l.xor_u(l.f_to_u(l.select(swap, sin_r, cos_r)), cos_sign));

    // ±inf and NaN → NaN (x − x is 0 exactly for finite x).
    let nan_or_zero = l.sub(x, x);
    let finite = l.eq_f(nan_or_zero, l.splat(0.0));
    (
        l.select(finite, sin_x, nan_or_zero),
        l.select(finite, cos_x, nan_or_zero),
    )
}

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// `e^x` per lane.
///
/// Cody–Waite reduction `x = n·ln2 + r` (`n = round(x·log2 e)`, `|r| ≤ ln2/2`), a degree-6
/// minimax polynomial for `e^r` evaluated with fused multiply-adds, and scaling by `2^n` through
/// the exponent bits. Error ≤ [`EXP_MAX_ULP`] ulp against [`libm::expf`] for every input.
///
/// Edge behaviour, identical on every backend and matching `libm::expf` input for input:
/// * `x ≥ 88.72284` (`0x42b17218`, the first `f32` above `ln(f32::MAX) ≈ 88.722839`) and
///   `+inf` → `+inf`; `88.72283` (`0x42b17217`) is the largest input with a finite result;
/// * `-103.97207 ≤ x < -87.33654` (below `ln(2^-126)`): **subnormal** results, correctly scaled
///   (gradual underflow, no flush to zero), within the same ulp bound in units of `2^-149`;
/// * `x ≤ -103.97208` (`0xc2cff1b5`, just below `ln(2^-150)`) and `-inf` → `+0`;
/// * `exp(±0) = 1` exactly; NaN → the same NaN.
#[inline(always)]
pub fn exp_f32s<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    exp_impl(Vector(simd), x)
}

/// `(sin x, cos x)` per lane.
///
/// Reduction by `π/2` with a three-part Cody–Waite constant (exact for
/// `|x| ≤` [`SIN_COS_RANGE`]), minimax polynomials for `sin` (degree 7) and `cos` (degree 8) on
/// `[-π/4, π/4]`, and quadrant selection by selects and sign flips. Absolute error ≤
/// [`SIN_COS_MAX_ABS_ERR`] against [`libm::sinf`] / [`libm::cosf`] for `|x| ≤ SIN_COS_RANGE`;
/// see [`SIN_COS_RANGE`] for larger inputs (accuracy degrades, results stay finite and in
/// `[-1, 1]`). `sin(±0) = ±0` and `cos(0) = 1` exactly; `±inf` and NaN give NaN.
#[inline(always)]
pub fn sin_cos_f32s<S: Simd>(simd: S, x: S::f32s) -> (S::f32s, S::f32s) {
    sin_cos_impl(Vector(simd), x)
}

/// Scalar twin of [`exp_f32s`]: the same operations with a fused multiply-add, so it equals
/// [`exp_f32s`] bit for bit on the FMA backends (AVX2+FMA, AVX-512, NEON). Same bound
/// ([`EXP_MAX_ULP`]) and edge behaviour.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    exp_impl(FusedScalar, x)
}

/// Scalar twin of [`sin_cos_f32s`]: the same operations with a fused multiply-add, so it equals
/// [`sin_cos_f32s`] bit for bit on the FMA backends (AVX2+FMA, AVX-512, NEON). Same bound
/// ([`SIN_COS_MAX_ABS_ERR`] for `|x| ≤` [`SIN_COS_RANGE`]) and edge behaviour.
#[inline(always)]
pub fn sin_cos_f32(x: f32) -> (f32, f32) {
    sin_cos_impl(FusedScalar, x)
}
