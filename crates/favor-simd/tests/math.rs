//! Accuracy and edge-case tests for `favor_simd::math`, on every backend this machine can run.
//!
//! The sweeps walk the `f32` values of an interval in order, taking every `stride`-th one.
//! CI uses a prime stride so a run takes well under a second; `FAVOR_MATH_STRIDE=1` makes the
//! sweeps exhaustive (every `f32` of the domain), which is how the bounds in the docs were
//! measured:
//!
//! ```text
//! FAVOR_MATH_STRIDE=1 cargo test --release -p favor-simd --test integration math:: -- --nocapture
//! ```

use favor_simd::math::{
    EXP_MAX_ULP, SIN_COS_MAX_ABS_ERR, SIN_COS_RANGE, exp_f32, exp_f32s, sin_cos_f32, sin_cos_f32s,
};
use favor_testkit::bounds::{Real, ulps};
use pulp::{Simd, WithSimd};

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Backend {
    Scalar(pulp::Scalar),
    #[cfg(target_arch = "x86_64")]
    V3(pulp::x86::V3),
    #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
    V4(pulp::x86::V4),
    #[cfg(target_arch = "aarch64")]
    Neon(pulp::aarch64::Neon),
    #[cfg(target_arch = "wasm32")]
    Simd128(pulp::wasm::Simd128),
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Scalar(_) => "Scalar",
            #[cfg(target_arch = "x86_64")]
            Backend::V3(_) => "V3 (AVX2+FMA)",
            #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
            Backend::V4(_) => "V4 (AVX-512)",
            #[cfg(target_arch = "aarch64")]
            Backend::Neon(_) => "NEON",
            #[cfg(target_arch = "wasm32")]
            Backend::Simd128(_) => "simd128",
        }
    }

    /// Whether `mul_add_e_f32s` is fused, i.e. whether the results must equal the scalar twins
    /// bit for bit. pulp's `Scalar` computes it as `a * b + c`, and so does simd128 (no FMA).
    fn fused(self) -> bool {
        match self {
            Backend::Scalar(_) => false,
            #[cfg(target_arch = "wasm32")]
            Backend::Simd128(_) => false,
            #[allow(unreachable_patterns)]
            _ => true,
        }
    }

    fn run<Op: WithSimd>(self, op: Op) -> Op::Output {
        match self {
            Backend::Scalar(s) => Simd::vectorize(s, op),
            #[cfg(target_arch = "x86_64")]
            Backend::V3(s) => Simd::vectorize(s, op),
            #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
            Backend::V4(s) => Simd::vectorize(s, op),
            #[cfg(target_arch = "aarch64")]
            Backend::Neon(s) => Simd::vectorize(s, op),
            #[cfg(target_arch = "wasm32")]
            Backend::Simd128(s) => Simd::vectorize(s, op),
        }
    }
}

fn backends() -> Vec<Backend> {
    #[allow(unused_mut)]
    let mut v = vec![Backend::Scalar(pulp::Scalar::new())];
    #[cfg(target_arch = "x86_64")]
    {
        match pulp::x86::V3::try_new() {
            Some(s) => v.push(Backend::V3(s)),
            None => eprintln!("AVX2+FMA not available: skipped"),
        }
        #[cfg(feature = "x86-v4")]
        match pulp::x86::V4::try_new() {
            Some(s) => v.push(Backend::V4(s)),
            None => eprintln!("AVX-512 not available: skipped"),
        }
    }
    #[cfg(target_arch = "aarch64")]
    match pulp::aarch64::Neon::try_new() {
        Some(s) => v.push(Backend::Neon(s)),
        None => eprintln!("NEON not available: skipped"),
    }
    #[cfg(target_arch = "wasm32")]
    match pulp::wasm::Simd128::try_new() {
        Some(s) => v.push(Backend::Simd128(s)),
        None => eprintln!("simd128 not enabled in this build: skipped"),
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Slice kernels: SIMD body plus a masked tail, as real callers do it
// ---------------------------------------------------------------------------------------------

struct ExpOp<'a> {
    x: &'a [f32],
    out: &'a mut [f32],
}

impl WithSimd for ExpOp<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        assert_eq!(self.x.len(), self.out.len());
        let (x_body, x_tail) = S::as_simd_f32s(self.x);
        let (out_body, out_tail) = S::as_mut_simd_f32s(self.out);
        for (o, &x) in out_body.iter_mut().zip(x_body) {
            *o = exp_f32s(simd, x);
        }
        if !x_tail.is_empty() {
            let y = exp_f32s(simd, simd.partial_load_f32s(x_tail));
            simd.partial_store_f32s(out_tail, y);
        }
    }
}

struct SinCosOp<'a> {
    x: &'a [f32],
    sin: &'a mut [f32],
    cos: &'a mut [f32],
}

impl WithSimd for SinCosOp<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        assert_eq!(self.x.len(), self.sin.len());
        assert_eq!(self.x.len(), self.cos.len());
        let (x_body, x_tail) = S::as_simd_f32s(self.x);
        let (sin_body, sin_tail) = S::as_mut_simd_f32s(self.sin);
        let (cos_body, cos_tail) = S::as_mut_simd_f32s(self.cos);
        for ((s, c), &x) in sin_body.iter_mut().zip(cos_body.iter_mut()).zip(x_body) {
            (*s, *c) = sin_cos_f32s(simd, x);
        }
        if !x_tail.is_empty() {
            let (s, c) = sin_cos_f32s(simd, simd.partial_load_f32s(x_tail));
            simd.partial_store_f32s(sin_tail, s);
            simd.partial_store_f32s(cos_tail, c);
        }
    }
}

fn exp_on(b: Backend, x: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    b.run(ExpOp { x, out: &mut out });
    out
}

fn sin_cos_on(b: Backend, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut sin = vec![0.0; x.len()];
    let mut cos = vec![0.0; x.len()];
    b.run(SinCosOp {
        x,
        sin: &mut sin,
        cos: &mut cos,
    });
    (sin, cos)
}

// ---------------------------------------------------------------------------------------------
// Sweeps
// ---------------------------------------------------------------------------------------------

// Positions on the ordered line of `f32` values (`-0.0` and `+0.0` share 0) are
// favor-testkit's `Real::key`, and `x.step(n)` is the value n positions from x.

/// Distance in ulps between two results (bit-pattern distance on the ordered line, so a step
/// between `f32::MAX` and `inf`, or between 0 and the smallest subnormal, counts as 1); NaN is
/// 0 from NaN and infinitely far from anything else.
fn ulp_diff(a: f32, b: f32) -> u64 {
    if a.is_nan() || b.is_nan() {
        return if a.is_nan() && b.is_nan() {
            0
        } else {
            u64::MAX
        };
    }
    ulps(a, b)
}

/// `FAVOR_MATH_STRIDE` if set, else `default` (times 16 under emulation on aarch64).
fn stride(default: u64) -> u64 {
    match std::env::var("FAVOR_MATH_STRIDE") {
        Ok(s) => s
            .parse()
            .expect("FAVOR_MATH_STRIDE must be a positive integer"),
        Err(_) if cfg!(target_arch = "aarch64") => default * 16,
        Err(_) => default,
    }
}

const CHUNK: usize = 1 << 14;

/// Calls `check` on chunks of the `f32` values in `[lo, hi]` taken every `stride` steps (both
/// ends always included), spread over the available cores. Returns the fold of the results.
fn sweep<T: Send>(
    lo: f32,
    hi: f32,
    stride: u64,
    check: impl Fn(&[f32]) -> T + Sync,
    fold: impl Fn(T, T) -> T,
    init: T,
) -> T {
    let (klo, khi) = (lo.key(), hi.key());
    assert!(klo <= khi);
    let count = (khi - klo) as u64 / stride + 1;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let per_thread = count.div_ceil(threads);
    let work = |t: u64| {
        let (start, end) = (t * per_thread, ((t + 1) * per_thread).min(count));
        let mut acc = Vec::new();
        let mut buf = Vec::with_capacity(CHUNK);
        let mut i = start;
        while i < end {
            buf.clear();
            while i < end && buf.len() < CHUNK {
                buf.push(lo.step((i * stride) as i64));
                i += 1;
            }
            acc.push(check(&buf));
        }
        acc
    };
    // One core (or none to ask, as on wasm, which has no threads): run here.
    let results: Vec<T> = if threads == 1 {
        work(0)
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let work = &work;
                    scope.spawn(move || work(t))
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        })
    };
    // The upper end, in case the stride stepped over it.
    let last = check(&[hi]);
    results.into_iter().fold(fold(init, last), fold)
}

/// Largest error seen, with the input that produced it.
#[derive(Clone, Copy, Debug)]
struct Worst<E> {
    err: E,
    x: f32,
}

fn worse<E: PartialOrd>(a: Worst<E>, b: Worst<E>) -> Worst<E> {
    if b.err > a.err { b } else { a }
}

/// Per backend: worst error against the reference, and the number of lanes that differ from
/// the scalar twin.
type ExpStats = Vec<(Worst<u64>, u64)>;

fn exp_sweep(lo: f32, hi: f32, stride: u64) -> ExpStats {
    let backends = backends();
    let zero = vec![(Worst { err: 0, x: 0.0 }, 0); backends.len()];
    sweep(
        lo,
        hi,
        stride,
        |x| {
            let twin: Vec<f32> = x.iter().map(|&x| exp_f32(x)).collect();
            let reference: Vec<f32> = x.iter().map(|&x| libm::expf(x)).collect();
            backends
                .iter()
                .map(|&b| {
                    let y = exp_on(b, x);
                    let mut worst = Worst { err: 0, x: 0.0 };
                    let mut differ = 0;
                    for i in 0..x.len() {
                        let e = ulp_diff(y[i], reference[i]);
                        worst = worse(worst, Worst { err: e, x: x[i] });
                        if y[i].to_bits() != twin[i].to_bits()
                            && !(y[i].is_nan() && twin[i].is_nan())
                        {
                            differ += 1;
                        }
                    }
                    (worst, differ)
                })
                .collect::<ExpStats>()
        },
        |a, b| {
            a.into_iter()
                .zip(b)
                .map(|((wa, da), (wb, db))| (worse(wa, wb), da + db))
                .collect()
        },
        zero,
    )
}

/// Checks the ulp bound and (on FMA backends) bit-equality with the twin over `[lo, hi]`.
fn check_exp(what: &str, lo: f32, hi: f32, stride: u64, bound: u64) {
    let stats = exp_sweep(lo, hi, stride);
    for (b, (worst, differ)) in backends().into_iter().zip(stats) {
        eprintln!(
            "exp {what} [{lo:e}, {hi:e}] stride {stride} {}: max {} ulp at x = {:e} ({:#010x}), \
             {differ} lanes differ from exp_f32",
            b.name(),
            worst.err,
            worst.x,
            worst.x.to_bits()
        );
        assert!(
            worst.err <= bound,
            "{}: exp({:e}) is {} ulp off",
            b.name(),
            worst.x,
            worst.err
        );
        if b.fused() {
            assert_eq!(differ, 0, "{}: differs from exp_f32", b.name());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// exp
// ---------------------------------------------------------------------------------------------

/// `ln(2^-126)` rounded up: from here on `expf` is normal.
const EXP_NORMAL_LO: f32 = -87.336_54;
/// Largest `x` with a finite `expf(x)`.
const EXP_FINITE_HI: f32 = 88.722_83;
/// Largest `x` with `expf(x) == 0`.
const EXP_ZERO_HI: f32 = -103.972_084;

#[test]
fn exp_edges_are_where_libm_has_them() {
    // The constants above, checked against libm itself.
    assert!(libm::expf(EXP_NORMAL_LO) >= f32::MIN_POSITIVE);
    assert!(libm::expf(EXP_NORMAL_LO.step(-1)) < f32::MIN_POSITIVE);
    assert!(libm::expf(EXP_FINITE_HI).is_finite());
    assert_eq!(libm::expf(EXP_FINITE_HI.step(1)), f32::INFINITY);
    assert_eq!(libm::expf(EXP_ZERO_HI), 0.0);
    assert!(libm::expf(EXP_ZERO_HI.step(1)) > 0.0);
}

#[test]
fn exp_normal_range() {
    check_exp(
        "normal",
        EXP_NORMAL_LO,
        EXP_FINITE_HI,
        stride(1021),
        EXP_MAX_ULP.into(),
    );
}

#[test]
fn exp_subnormal_range() {
    // About 2.2 million inputs; every 5th in CI.
    let lo = EXP_ZERO_HI.step(-64);
    check_exp(
        "subnormal",
        lo,
        EXP_NORMAL_LO,
        stride(5),
        EXP_MAX_ULP.into(),
    );
}

#[test]
fn exp_ends_exhaustive_near_the_clamps() {
    // Every input within 2^14 steps of the overflow edge, the underflow-to-zero edge, the
    // clamp bounds, and of ±2^-24 (where 1 + x stops rounding to 1).
    let around = |x: f32| (x.step(-16_384), x.step(16_384));
    for (what, x) in [
        ("overflow edge", EXP_FINITE_HI),
        ("zero edge", EXP_ZERO_HI),
        ("upper clamp", 89.0),
        ("lower clamp", -104.0),
        ("+2^-24", f32::EPSILON / 2.0),
        ("-2^-24", -f32::EPSILON / 2.0),
    ] {
        let (lo, hi) = around(x);
        check_exp(what, lo, hi, 1, EXP_MAX_ULP.into());
    }
}

#[test]
fn exp_saturates_outside_the_finite_range() {
    let s = stride(4099);
    for b in backends() {
        // Above ln(f32::MAX): +inf, exactly.
        let ok = sweep(
            EXP_FINITE_HI.step(1),
            f32::INFINITY,
            s,
            |x| exp_on(b, x).iter().all(|&y| y == f32::INFINITY),
            |a, b| a && b,
            true,
        );
        assert!(ok, "{}: exp above ln(MAX) is not +inf", b.name());
        // At or below ln(2^-150): +0, exactly.
        let ok = sweep(
            f32::NEG_INFINITY,
            EXP_ZERO_HI,
            s,
            |x| exp_on(b, x).iter().all(|&y| y.to_bits() == 0),
            |a, b| a && b,
            true,
        );
        assert!(ok, "{}: exp below ln(2^-150) is not +0", b.name());
        // The edges are exactly libm's: the last finite result, the first nonzero one (the
        // smallest subnormal), and the first normal one.
        let edges = [EXP_FINITE_HI, EXP_ZERO_HI.step(1), EXP_NORMAL_LO];
        let y = exp_on(b, &edges);
        assert!(y[0].is_finite() && y[0] > 3.4e38, "{}: {y:?}", b.name());
        assert_eq!(y[1], f32::from_bits(1), "{}", b.name());
        assert!(y[2] >= f32::MIN_POSITIVE, "{}: {y:?}", b.name());
        // Everything from the smallest subnormal up to the first normal result is subnormal.
        let y = exp_on(b, &[-103.97, -100.0, -90.0, -87.34]);
        assert!(y.iter().all(|&y| y > 0.0 && y < f32::MIN_POSITIVE), "{y:?}");
    }
}

#[test]
fn exp_special_values() {
    use core::f32::consts::E;
    // (x, expected, exact?)
    let cases = [
        (0.0, 1.0, true),
        (-0.0, 1.0, true),
        (f32::from_bits(1), 1.0, true),
        (-f32::from_bits(1), 1.0, true),
        (f32::MIN_POSITIVE, 1.0, true),
        (f32::EPSILON, 1.0 + f32::EPSILON, true),
        (-f32::EPSILON, 1.0 - f32::EPSILON, true),
        (1.0, E, false),
        (-1.0, 1.0 / E, false),
        (f32::INFINITY, f32::INFINITY, true),
        (f32::NEG_INFINITY, 0.0, true),
        (f32::MAX, f32::INFINITY, true),
        (f32::MIN, 0.0, true),
        (-103.98, 0.0, true),
        (-1000.0, 0.0, true),
        (88.73, f32::INFINITY, true),
        (1000.0, f32::INFINITY, true),
        (f32::NAN, f32::NAN, true),
        (-f32::NAN, f32::NAN, true),
    ];
    let x: Vec<f32> = cases.iter().map(|c| c.0).collect();
    for b in backends() {
        let y = exp_on(b, &x);
        for (&(x, expect, exact), &y) in cases.iter().zip(&y) {
            let twin = exp_f32(x);
            assert!(twin.to_bits() == y.to_bits() || (twin.is_nan() && y.is_nan()));
            if expect.is_nan() {
                assert!(y.is_nan(), "{}: exp({x}) = {y}", b.name());
            } else if exact {
                assert_eq!(y.to_bits(), expect.to_bits(), "{}: exp({x})", b.name());
            } else {
                assert!(ulp_diff(y, expect) <= 1, "{}: exp({x}) = {y}", b.name());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// sin / cos
// ---------------------------------------------------------------------------------------------

/// Per backend: worst sin error, worst cos error, lanes differing from the twin.
type SinCosStats = Vec<(Worst<f64>, Worst<f64>, u64)>;

fn sin_cos_sweep(lo: f32, hi: f32, stride: u64) -> SinCosStats {
    let backends = backends();
    let none = Worst { err: 0.0, x: 0.0 };
    sweep(
        lo,
        hi,
        stride,
        |x| {
            let twin: Vec<(f32, f32)> = x.iter().map(|&x| sin_cos_f32(x)).collect();
            let sin_ref: Vec<f32> = x.iter().map(|&x| libm::sinf(x)).collect();
            let cos_ref: Vec<f32> = x.iter().map(|&x| libm::cosf(x)).collect();
            backends
                .iter()
                .map(|&b| {
                    let (s, c) = sin_cos_on(b, x);
                    let (mut ws, mut wc, mut differ) = (none, none, 0);
                    for i in 0..x.len() {
                        let es = (f64::from(s[i]) - f64::from(sin_ref[i])).abs();
                        let ec = (f64::from(c[i]) - f64::from(cos_ref[i])).abs();
                        // NaN where a number is due counts as an infinite error.
                        let es = if es.is_nan() { f64::INFINITY } else { es };
                        let ec = if ec.is_nan() { f64::INFINITY } else { ec };
                        ws = worse(ws, Worst { err: es, x: x[i] });
                        wc = worse(wc, Worst { err: ec, x: x[i] });
                        if s[i].to_bits() != twin[i].0.to_bits()
                            || c[i].to_bits() != twin[i].1.to_bits()
                        {
                            differ += 1;
                        }
                    }
                    (ws, wc, differ)
                })
                .collect::<SinCosStats>()
        },
        |a, b| {
            a.into_iter()
                .zip(b)
                .map(|((sa, ca, da), (sb, cb, db))| (worse(sa, sb), worse(ca, cb), da + db))
                .collect()
        },
        vec![(none, none, 0); backends.len()],
    )
}

fn check_sin_cos(lo: f32, hi: f32, stride: u64, bound: f64) {
    let stats = sin_cos_sweep(lo, hi, stride);
    for (b, (ws, wc, differ)) in backends().into_iter().zip(stats) {
        eprintln!(
            "sin/cos [{lo:e}, {hi:e}] stride {stride} {}: sin max {:.3e} at {:e}, cos max {:.3e} at \
             {:e}, {differ} lanes differ from sin_cos_f32",
            b.name(),
            ws.err,
            ws.x,
            wc.err,
            wc.x
        );
        assert!(
            ws.err <= bound,
            "{}: sin({:e}) off by {:e}",
            b.name(),
            ws.x,
            ws.err
        );
        assert!(
            wc.err <= bound,
            "{}: cos({:e}) off by {:e}",
            b.name(),
            wc.x,
            wc.err
        );
        if b.fused() {
            assert_eq!(differ, 0, "{}: differs from sin_cos_f32", b.name());
        }
    }
}

#[test]
fn sin_cos_within_two_pi() {
    // |x| ≤ 2π: the range most callers use.
    let two_pi = 2.0 * core::f32::consts::PI;
    check_sin_cos(-two_pi, two_pi, stride(4093), SIN_COS_MAX_ABS_ERR.into());
}

#[test]
fn sin_cos_full_range() {
    check_sin_cos(
        -SIN_COS_RANGE,
        SIN_COS_RANGE,
        stride(1021),
        SIN_COS_MAX_ABS_ERR.into(),
    );
}

#[test]
fn sin_cos_exhaustive_at_the_range_ends() {
    // The last 200 000 values inside the range at each end.
    let r = SIN_COS_RANGE;
    check_sin_cos(r.step(-200_000), r, 1, SIN_COS_MAX_ABS_ERR.into());
    check_sin_cos(-r, (-r).step(200_000), 1, SIN_COS_MAX_ABS_ERR.into());
}

#[test]
fn sin_cos_beyond_the_range_stays_finite_and_bounded() {
    let s = stride(4099);
    for b in backends() {
        for (lo, hi) in [
            (SIN_COS_RANGE.step(1), f32::MAX),
            (f32::MIN, (-SIN_COS_RANGE).step(-1)),
        ] {
            let ok = sweep(
                lo,
                hi,
                s,
                |x| {
                    let (s, c) = sin_cos_on(b, x);
                    s.iter().chain(&c).all(|v| v.is_finite() && v.abs() <= 1.0)
                },
                |a, b| a && b,
                true,
            );
            assert!(ok, "{}: sin/cos beyond the range left [-1, 1]", b.name());
        }
    }
}

#[test]
fn sin_cos_special_values() {
    let x = [
        0.0,
        -0.0,
        f32::from_bits(1),
        -f32::from_bits(1),
        f32::MIN_POSITIVE,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MAX,
        f32::MIN,
    ];
    for b in backends() {
        let (s, c) = sin_cos_on(b, &x);
        // sin(±0) = ±0, cos(±0) = 1; sin(tiny) = tiny, cos(tiny) = 1, exactly.
        for i in 0..5 {
            assert_eq!(
                s[i].to_bits(),
                x[i].to_bits(),
                "{}: sin({:e})",
                b.name(),
                x[i]
            );
            assert_eq!(c[i], 1.0, "{}: cos({:e})", b.name(), x[i]);
        }
        for i in 5..8 {
            assert!(
                s[i].is_nan() && c[i].is_nan(),
                "{}: sin/cos({})",
                b.name(),
                x[i]
            );
        }
        for i in 8..10 {
            assert!(
                s[i].abs() <= 1.0 && c[i].abs() <= 1.0,
                "{}: sin/cos({})",
                b.name(),
                x[i]
            );
        }
        for i in 0..x.len() {
            let (ts, tc) = sin_cos_f32(x[i]);
            assert!(ts.to_bits() == s[i].to_bits() || (ts.is_nan() && s[i].is_nan()));
            assert!(tc.to_bits() == c[i].to_bits() || (tc.is_nan() && c[i].is_nan()));
        }
    }
}

#[test]
fn tails_of_every_length_match_the_body() {
    // Each length from 0 to 40 puts a different number of values through the
    // partial_load/partial_store tail; the results must not depend on where a value lands.
    let xs: Vec<f32> = (0..40).map(|i| (i as f32 - 20.0) * 0.37).collect();
    for b in backends() {
        let full_exp = exp_on(b, &xs);
        let (full_sin, full_cos) = sin_cos_on(b, &xs);
        for n in 0..=xs.len() {
            assert_eq!(exp_on(b, &xs[..n]), full_exp[..n], "{} len {n}", b.name());
            let (s, c) = sin_cos_on(b, &xs[..n]);
            assert_eq!(s, full_sin[..n], "{} len {n}", b.name());
            assert_eq!(c, full_cos[..n], "{} len {n}", b.name());
        }
    }
}
