//! One harness, every backend: each kernel and each favor-core algorithm run on every
//! backend this CPU has, compared with favor-core's `Scalar` reference (and f64).
//!
//! Tolerances are derived from the operation, not tuned:
//! - a length-k sum of products computed in two different orders differs by at most
//!   `2·γ_k·Σ|aᵢbᵢ|`, γ_k = k·u/(1 − k·u), u the unit roundoff (Higham, Thm 3.1), plus one
//!   rounding of `|c|` when accumulating into C;
//! - elementwise transcendental kernels: the stated bound of `favor_simd::math` plus the
//!   reference libm's own error (< 1 ulp);
//! - end-to-end attention: see `end_to_end` below.

use favor_core::*;
use favor_simd::*;
use favor_testkit::attention::backend_bound;
use favor_testkit::bounds::{gamma, max_abs, ulps, unit};
use favor_testkit::hybrid_paths::Oracle;
use favor_testkit::kernels::c_view;

/// Cases a heavy check runs on backend `K` out of its `n`: all of them, except on
/// [`Detected`], which forwards each call to a backend [`all_backends!`] has already run (or
/// to favor-core's `Scalar`, the reference itself, where no SIMD backend is available): there
/// a few cases prove the forwarding, and the full set would only repeat that backend's run (a third of favor-simd's test time on aarch64
/// under qemu).
fn cases_for<K: 'static>(n: usize) -> usize {
    if std::any::TypeId::of::<K>() == std::any::TypeId::of::<Detected>() {
        n.div_ceil(8)
    } else {
        n
    }
}

/// Runs `$f(backend)` for every backend available here, printing which were skipped.
macro_rules! all_backends {
    ($f:expr) => {{
        $f(Portable::new());
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        match Avx2::new() {
            Some(k) => $f(k),
            None => println!("AVX2+FMA not available on this CPU: skipped"),
        }
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        match Avx512::new() {
            Some(k) => $f(k),
            None => println!("AVX-512 not available on this CPU: skipped"),
        }
        #[cfg(target_arch = "aarch64")]
        match Neon::new() {
            Some(k) => $f(k),
            None => println!("NEON not available on this CPU: skipped"),
        }
        #[cfg(target_arch = "wasm32")]
        match Simd128::new() {
            Some(k) => $f(k),
            None => println!("simd128 not enabled in this build: skipped"),
        }
        $f(Detected::new());
    }};
}

/// `x` in f64, exactly.
fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&a| f64::from(a)).collect()
}

fn data<T: Float>(seed: u64, n: usize, scale: f64) -> Vec<T> {
    let mut g = Normals::new(0x5EED_0000 + seed);
    (0..n).map(|_| T::from_f64(g.next_f64() * scale)).collect()
}

#[derive(Clone, Copy, Debug)]
enum Layout {
    /// B viewed transposed (stored n×k).
    Nt,
    /// Plain row-major views.
    Nn,
    /// A viewed transposed (stored k×m).
    Tn,
    /// C viewed transposed (stored n×m): adjacent rows, strided columns.
    Ct,
}

/// Runs one GEMM layout on `k` and on Scalar with padded leading dimensions and a sentinel
/// outside C's m×n window; checks the window against the derived bound and that nothing
/// outside it was written.
fn check_gemm_case<T: Float, K: Kernels<T>>(
    kern: &K,
    layout: Layout,
    m: usize,
    n: usize,
    k: usize,
) {
    let (pad_a, pad_b, pad_c) = (3, 5, 2);
    // Stored shapes: nt: A m×k, B n×k; nn, ct: A m×k, B k×n; tn: A k×m, B k×n; ct: C n×m.
    let (a_rows, a_cols, b_rows, b_cols) = match layout {
        Layout::Nt => (m, k, n, k),
        Layout::Nn | Layout::Ct => (m, k, k, n),
        Layout::Tn => (k, m, k, n),
    };
    let (c_rows, c_cols) = match layout {
        Layout::Ct => (n, m),
        _ => (m, n),
    };
    let (lda, ldb, ldc) = (a_cols + pad_a, b_cols + pad_b, c_cols + pad_c);
    let a: Vec<T> = data(1 + (m * 31 + n * 7 + k) as u64, a_rows * lda, 1.0);
    let b: Vec<T> = data(2 + (m * 13 + n * 3 + k) as u64, b_rows * ldb, 1.0);
    let a_at = |i: usize, p: usize| match layout {
        Layout::Tn => a[p * lda + i],
        _ => a[i * lda + p],
    };
    let b_at = |p: usize, j: usize| match layout {
        Layout::Nt => b[j * ldb + p],
        _ => b[p * ldb + j],
    };
    for accumulate in [false, true] {
        let sentinel = T::from_f64(-1234.5);
        let c0: Vec<T> = data::<T>(3, c_rows * ldc, 1.0)
            .into_iter()
            .enumerate()
            .map(|(idx, x)| if idx % ldc < c_cols { x } else { sentinel })
            .collect();
        let mut got = c0.clone();
        let mut want = c0.clone();
        let am = MatRef::new(&a, a_rows, a_cols, lda);
        let am = if let Layout::Tn = layout { am.t() } else { am };
        let bm = MatRef::new(&b, b_rows, b_cols, ldb);
        let bm = if let Layout::Nt = layout { bm.t() } else { bm };
        let accum = if accumulate {
            Accum::Add
        } else {
            Accum::Overwrite
        };
        let transposed = matches!(layout, Layout::Ct);
        kern.gemm(
            c_view(&mut got, (c_rows, c_cols, ldc), transposed),
            accum,
            am,
            bm,
        );
        Scalar.gemm(
            c_view(&mut want, (c_rows, c_cols, ldc), transposed),
            accum,
            am,
            bm,
        );
        // (i, j) of C sits at `at(i, j)`; every other element must keep the sentinel.
        let at = |i: usize, j: usize| if transposed { j * ldc + i } else { i * ldc + j };
        for (idx, g) in got.iter().enumerate() {
            if idx % ldc >= c_cols {
                assert_eq!(
                    g.to_bits_u64(),
                    sentinel.to_bits_u64(),
                    "{layout:?} wrote outside C"
                );
            }
        }
        for i in 0..m {
            for j in 0..n {
                let (g, w) = (got[at(i, j)], want[at(i, j)]);
                let mut mag: f64 = (0..k)
                    .map(|p| (a_at(i, p) * b_at(p, j)).abs().to_f64())
                    .sum();
                let mut tol = 2.0 * gamma(k, unit::<T>()) * mag;
                if accumulate {
                    mag = c0[at(i, j)].abs().to_f64();
                    tol += 2.0 * unit::<T>() * (mag + tol);
                }
                let err = (g - w).abs().to_f64();
                assert!(
                    err <= tol,
                    "{} {layout:?} m={m} n={n} k={k} acc={accumulate} ({i},{j}): {g} vs {w}, err {err:e} > {tol:e}",
                    kern.name()
                );
            }
        }
    }
}

trait Bits {
    fn to_bits_u64(self) -> u64;
}
impl<T: Float> Bits for T {
    fn to_bits_u64(self) -> u64 {
        self.to_f64().to_bits()
    }
}

fn gemm_shapes() -> Vec<(usize, usize, usize)> {
    let mut v = Vec::new();
    for s in 0..=70 {
        v.push((s, 19, 13));
        v.push((7, s, 11));
        v.push((9, 17, s));
    }
    v.extend([
        (97, 70, 130),
        (200, 257, 64),
        (1, 256, 64),
        (256, 64, 1),
        (4, 300, 200),
        (64, 64, 256),
    ]);
    v
}

fn check_gemm<T: Float, K: Kernels<T> + 'static>(kern: K) {
    let shapes = gemm_shapes();
    // The large shapes (the last ones) exercise the packed path; Detected gets those.
    for &(m, n, k) in shapes.iter().rev().take(cases_for::<K>(shapes.len())) {
        for layout in [Layout::Nt, Layout::Nn, Layout::Tn, Layout::Ct] {
            check_gemm_case(&kern, layout, m, n, k);
        }
    }
}

#[test]
fn gemm_f32_every_backend() {
    all_backends!(check_gemm::<f32, _>);
}

#[test]
fn gemm_f64_every_backend() {
    all_backends!(check_gemm::<f64, _>);
}

fn check_tril<T: Float, K: Kernels<T>>(kern: K) {
    for m in 0..=70 {
        let n = 1 + m % 23;
        let lda = m + 1;
        // Garbage above the diagonal (NaN): a correct kernel never reads it.
        let mut a: Vec<T> = data(10 + m as u64, m * lda, 1.0);
        for i in 0..m {
            for j in i + 1..lda {
                a[i * lda + j] = T::nan();
            }
        }
        let b: Vec<T> = data(20 + m as u64, m * n, 1.0);
        for accumulate in [false, true] {
            let c0: Vec<T> = data(30, m * n, 1.0);
            let (mut got, mut want) = (c0.clone(), c0.clone());
            let (am, bm) = (MatRef::new(&a, m, m, lda), MatRef::row_major(&b, m, n));
            let accum = if accumulate {
                Accum::Add
            } else {
                Accum::Overwrite
            };
            kern.gemm_tril(MatMut::row_major(&mut got, m, n), accum, am, bm);
            Scalar.gemm_tril(MatMut::row_major(&mut want, m, n), accum, am, bm);
            for i in 0..m {
                for j in 0..n {
                    let mag: f64 = (0..=i)
                        .map(|p| (a[i * lda + p] * b[p * n + j]).abs().to_f64())
                        .sum();
                    let mut tol = 2.0 * gamma(i + 1, unit::<T>()) * mag;
                    if accumulate {
                        tol += 2.0 * unit::<T>() * (c0[i * n + j].abs().to_f64() + tol);
                    }
                    let err = (got[i * n + j] - want[i * n + j]).abs().to_f64();
                    assert!(
                        err <= tol,
                        "{} tril m={m} ({i},{j}) err {err:e} > {tol:e}",
                        kern.name()
                    );
                }
            }
        }
    }
}

#[test]
fn tril_gemm_every_backend() {
    all_backends!(check_tril::<f32, _>);
    all_backends!(check_tril::<f64, _>);
}

fn blas1_sizes() -> impl Iterator<Item = usize> {
    (0..=70).chain([255, 1000, 4099])
}

fn check_blas1<T: Float, K: Kernels<T>>(kern: K) {
    let u = unit::<T>();
    for n in blas1_sizes() {
        let x: Vec<T> = data(40 + n as u64, n, 1.0);
        let y: Vec<T> = data(50 + n as u64, n, 1.0);
        // dot: two summation orders of the same n products.
        let mag: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (*a * *b).abs().to_f64())
            .sum();
        let err = (kern.dot(&x, &y) - Scalar.dot(&x, &y)).abs().to_f64();
        assert!(
            err <= 2.0 * gamma(n, unit::<T>()) * mag,
            "{} dot n={n}",
            kern.name()
        );
        // axpy: one fused or two rounded operations per element.
        let alpha = T::from_f64(0.7);
        let (mut g, mut w) = (y.clone(), y.clone());
        kern.axpy(alpha, &x, &mut g);
        Scalar.axpy(alpha, &x, &mut w);
        for i in 0..n {
            let tol = 3.0 * u * ((alpha * x[i]).abs() + y[i].abs()).to_f64();
            assert!(
                (g[i] - w[i]).abs().to_f64() <= tol,
                "{} axpy n={n} i={i}",
                kern.name()
            );
        }
        // scale: one correctly rounded multiply, so bit-identical.
        let (mut g, mut w) = (x.clone(), x.clone());
        kern.scale(alpha, &mut g);
        Scalar.scale(alpha, &mut w);
        assert_eq!(g, w, "{} scale n={n}", kern.name());
        // max: exact.
        assert_eq!(
            Kernels::<T>::max(&kern, &x).to_bits_u64(),
            Kernels::<T>::max(&Scalar, &x).to_bits_u64()
        );
        // sum: any order, so within the summation bound against the scalar backend's order
        // (each within γ_n·Σ|x| of the true sum).
        let mag: f64 = x.iter().map(|a| a.abs().to_f64()).sum();
        let err = (Kernels::<T>::sum(&kern, &x) - Kernels::<T>::sum(&Scalar, &x))
            .abs()
            .to_f64();
        assert!(
            err <= 2.0 * gamma(n, unit::<T>()) * mag,
            "{} sum n={n}: {err}",
            kern.name()
        );
    }
}

#[test]
fn blas1_every_backend() {
    all_backends!(check_blas1::<f32, _>);
    all_backends!(check_blas1::<f64, _>);
}

/// Inputs of one end-to-end case: f32 data and the same values widened to f64.
struct Case {
    l: usize,
    d: usize,
    dv: usize,
    m: usize,
    w: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Case {
    fn new(l: usize, d: usize, dv: usize, m: usize, norm: f64) -> Self {
        let mut w = vec![0f32; m * d];
        projection(ProjectionKind::default(), 77, m, d, &mut w).unwrap();
        // Entries N(0, norm²/d): rows of norm ≈ `norm`.
        let sd = norm / (d as f64).sqrt();
        Self {
            l,
            d,
            dv,
            m,
            w,
            q: data(61, l * d, sd),
            k: data(62, l * d, sd),
            v: data(63, l * dv, 1.0),
        }
    }

    /// Derived bound on |out_a − out_b| for two evaluations of the same normalised
    /// positive-feature attention whose kernels round differently: favor-testkit's
    /// `backend_bound` (derivation there), with scores of 2m terms (the hyperbolic map's M).
    fn bound(&self) -> f64 {
        backend_bound(
            &widen(&self.w),
            (self.d, (self.d as f64).powf(-0.25)),
            &widen(&self.q),
            &widen(&self.k),
            2 * self.m,
            max_abs(&widen(&self.v)),
            unit::<f32>(),
        )
    }
}

/// Every favor-core attention path, run with kernels `K`, in a fixed order.
fn run_all<K: Kernels<f32>, F: FeatureMap<f32>>(kern: &K, phi: &F, c: &Case) -> Vec<Vec<f32>> {
    let shape = Shape::new(c.l, c.d, c.dv);
    let mut outs = Vec::new();
    let mut out = vec![0f32; c.l * c.dv];
    for block in [1, 7, 64] {
        let opts = Options {
            block,
            ..Default::default()
        };
        for kind in [
            PlanKind::Bidirectional,
            PlanKind::CausalPrefix,
            PlanKind::CausalChunked,
        ] {
            let plan = Plan::new(kind, *kern, phi, shape, opts).unwrap();
            let mut scratch = vec![0f32; plan.scratch_len()];
            plan.run(&c.q, &c.k, &c.v, &mut out, &mut scratch).unwrap();
            outs.push(out.clone());
        }
    }
    let mut buf = vec![0f32; Stream::<f32, F, K>::buffer_len(phi, c.dv).unwrap()];
    let mut stream = Stream::new(*kern, phi, c.dv, &mut buf).unwrap();
    for t in 0..c.l {
        let (r, rv) = (t * c.d..(t + 1) * c.d, t * c.dv..(t + 1) * c.dv);
        stream
            .step(&c.q[r.clone()], &c.k[r], &c.v[rv.clone()], &mut out[rv])
            .unwrap();
    }
    outs.push(out.clone());
    outs
}

/// One end-to-end case with its backend-independent references, computed once for every
/// backend (under qemu they were a third of the test).
struct EndToEnd {
    case: Case,
    bound: f64,
    /// Every path of `run_all` on the Scalar backend, positive and hyperbolic features.
    positive: Vec<Vec<f32>>,
    hyperbolic: Vec<Vec<f32>>,
    /// The causal chunked plan on the Scalar backend in f64 (same projection bits).
    f64_chunked: Vec<f64>,
}

fn end_to_end_cases() -> &'static [EndToEnd] {
    static CASES: std::sync::OnceLock<Vec<EndToEnd>> = std::sync::OnceLock::new();
    CASES.get_or_init(|| {
        [
            Case::new(67, 16, 9, 40, 1.5),
            Case::new(300, 64, 64, 256, 2.0),
        ]
        .into_iter()
        .map(|case| {
            let phi = PositiveSoftmax::new(&case.w, case.m, case.d).unwrap();
            let hyp = HyperbolicSoftmax::new(&case.w, case.m, case.d).unwrap();
            let w64 = widen(&case.w);
            let phi64 = PositiveSoftmax::new(&w64, case.m, case.d).unwrap();
            let shape = Shape::new(case.l, case.d, case.dv);
            let plan = Plan::new(
                PlanKind::CausalChunked,
                Scalar,
                &phi64,
                shape,
                Options::default(),
            )
            .unwrap();
            let mut scratch = vec![0f64; plan.scratch_len()];
            let mut f64_chunked = vec![0f64; case.l * case.dv];
            let (q64, k64, v64) = (widen(&case.q), widen(&case.k), widen(&case.v));
            plan.run(&q64, &k64, &v64, &mut f64_chunked, &mut scratch)
                .unwrap();
            EndToEnd {
                bound: case.bound(),
                positive: run_all(&Scalar, &phi, &case),
                hyperbolic: run_all(&Scalar, &hyp, &case),
                f64_chunked,
                case,
            }
        })
        .collect()
    })
}

/// End-to-end: every attention path on every backend agrees with the Scalar backend (f32)
/// and with the f64 reference within `Case::bound`.
fn check_end_to_end<K: Kernels<f32> + 'static>(kern: K) {
    let cases = end_to_end_cases();
    for e in cases.iter().take(cases_for::<K>(cases.len())) {
        let case = &e.case;
        let phi = PositiveSoftmax::new(&case.w, case.m, case.d).unwrap();
        let hyp = HyperbolicSoftmax::new(&case.w, case.m, case.d).unwrap();
        let bound = e.bound;
        let positive = run_all(&kern, &phi, case);
        for (label, got, want) in [
            ("positive", &positive, &e.positive),
            ("hyperbolic", &run_all(&kern, &hyp, case), &e.hyperbolic),
        ] {
            for (path, (g, w)) in got.iter().zip(want).enumerate() {
                let err = g
                    .iter()
                    .zip(w)
                    .fold(0f64, |a, (x, y)| a.max(f64::from(x - y).abs()));
                assert!(
                    err <= bound,
                    "{} {label} path {path} L={}: max err {err:e} > bound {bound:e}",
                    kern.name(),
                    case.l
                );
            }
        }
        // And against the f64 evaluation of the same estimator: the causal chunked plan
        // (run_all's third path) at block 1.
        let err = positive[2]
            .iter()
            .zip(&e.f64_chunked)
            .fold(0f64, |a, (x, y)| a.max((f64::from(*x) - y).abs()));
        assert!(
            err <= bound / 2.0 + 1e-12,
            "{} vs f64: {err:e} > {:e}",
            kern.name(),
            bound / 2.0
        );
    }
}

#[test]
fn end_to_end_every_backend() {
    all_backends!(check_end_to_end);
}

/// A SORF layer's map over W's structured form (signs, `with_structured_projection`: every
/// projection three fast Walsh–Hadamard transforms) through every path of `run_all` on
/// every backend, against the same paths over the dense W on Scalar, within the end-to-end
/// bound. Its projection term allows a length-d dot product's rounding, γ_d·Σ|wⱼxⱼ|; the
/// transforms round 3·log₂d' butterfly levels of partial sums at most √d'·‖x‖₂ once scaled
/// by the exact 1/d' (favor-core's tests/structured.rs), within it for this case's d = d' =
/// 16 (12 levels against 16 products; not for every d: at d = 4, 6 against 4).
struct Structured {
    case: Case,
    signs: Vec<f32>,
    bound: f64,
    dense: Vec<Vec<f32>>,
}

fn structured_case() -> &'static Structured {
    static CASE: std::sync::OnceLock<Structured> = std::sync::OnceLock::new();
    CASE.get_or_init(|| {
        let mut case = Case::new(67, 16, 9, 40, 1.5);
        projection(ProjectionKind::Sorf, 78, case.m, case.d, &mut case.w).unwrap();
        let mut signs = vec![0f32; sorf_signs_len(case.m, case.d).unwrap()];
        sorf_signs(78, case.m, case.d, &mut signs).unwrap();
        let dense = PositiveSoftmax::new(&case.w, case.m, case.d).unwrap();
        Structured {
            bound: case.bound(),
            dense: run_all(&Scalar, &dense, &case),
            signs,
            case,
        }
    })
}

fn check_structured<K: Kernels<f32> + 'static>(kern: K) {
    let e = structured_case();
    let case = &e.case;
    let phi = PositiveSoftmax::new(&case.w, case.m, case.d)
        .and_then(|p| p.with_structured_projection(&e.signs))
        .unwrap();
    for (path, (g, w)) in run_all(&kern, &phi, case).iter().zip(&e.dense).enumerate() {
        let err = g
            .iter()
            .zip(w)
            .fold(0f64, |a, (x, y)| a.max(f64::from(x - y).abs()));
        assert!(
            err <= e.bound,
            "{} structured path {path}: max err {err:e} > bound {:e}",
            kern.name(),
            e.bound
        );
    }
}

#[test]
fn structured_projection_every_backend() {
    all_backends!(check_structured);
}

/// Exact softmax attention on every backend vs f64: an online softmax of L terms; each
/// logit is a length-d dot (abs error γ_d·τ·Σ|q||k|), which perturbs each weight by that
/// relative amount; the weighted average then moves ≤ 2·(that + γ_L)·max|v|.
fn check_exact<K: Kernels<f32>>(kern: K) {
    let c = Case::new(90, 32, 17, 8, 3.0);
    let shape = Shape::new(c.l, c.d, c.dv);
    for causal in [false, true] {
        let opts = ExactOptions {
            causal,
            ..Default::default()
        };
        let mut got = vec![0f32; c.l * c.dv];
        softmax_attention(&kern, &c.q, &c.k, &c.v, shape, &opts, &mut got).unwrap();
        // The tiled (GEMM) schedule sums the same terms in another order: same bound.
        let mut tiled = vec![0f32; c.l * c.dv];
        let mut scratch = vec![0f32; softmax_attention_tiled_scratch_len(16).unwrap()];
        softmax_attention_tiled(
            &kern,
            &c.q,
            &c.k,
            &c.v,
            shape,
            &opts,
            16,
            &mut tiled,
            &mut scratch,
        )
        .unwrap();
        let mut want = vec![0f64; c.l * c.dv];
        let opts64 = ExactOptions {
            causal,
            ..Default::default()
        };
        softmax_attention(
            &Scalar,
            &widen(&c.q),
            &widen(&c.k),
            &widen(&c.v),
            shape,
            &opts64,
            &mut want,
        )
        .unwrap();
        let tau = 1.0 / (c.d as f64).sqrt();
        let mut b_logit: f64 = 0.0;
        for qi in c.q.chunks(c.d) {
            for kj in c.k.chunks(c.d) {
                let t: f64 = qi
                    .iter()
                    .zip(kj)
                    .map(|(&a, &b)| f64::from(a * b).abs())
                    .sum();
                b_logit = b_logit.max(tau * t);
            }
        }
        let vmax = c.v.iter().fold(0f64, |a, &b| a.max(f64::from(b).abs()));
        let u = unit::<f32>();
        let bound = 2.0 * (2.0 * (gamma(c.d, u) * b_logit + 4.0 * u) + gamma(c.l, u)) * vmax;
        for (name, got) in [("row", &got), ("tiled", &tiled)] {
            let err = got
                .iter()
                .zip(&want)
                .fold(0f64, |a, (x, y)| a.max((f64::from(*x) - y).abs()));
            assert!(
                err <= bound,
                "{} exact ({name}) causal={causal}: {err:e} > {bound:e}",
                kern.name()
            );
        }
    }
}

#[test]
fn exact_softmax_every_backend() {
    all_backends!(check_exact);
}

/// The fused projection (`scale · X·Wᵀ` and row maxima), with and without Wᵀ, against the
/// scalar reference: a length-d dot product plus one scaling, so the bound is
/// `2·γ_{d+1}·|scale|·Σ|xⱼwᵢⱼ|` per element; a row maximum of perturbed values moves by at
/// most the largest perturbation of its row.
fn check_project<T: Float, K: Kernels<T>>(kern: K) {
    for (rows, m, d) in [
        (0, 8, 4),
        (1, 256, 64),
        (5, 33, 7),
        (64, 256, 64),
        (70, 19, 70),
        (200, 40, 3),
    ] {
        let w: Vec<T> = data(70 + m as u64, m * d, 1.0);
        let mut wt = vec![T::zero(); m * d];
        transpose_projection(&w, m, d, &mut wt).unwrap();
        let x: Vec<T> = data(80 + rows as u64, rows * d, 1.0);
        let scale = T::from_f64(0.3);
        let ldo = m + 3;
        let (mut want, mut want_max) = (vec![T::zero(); rows * ldo], vec![T::zero(); rows]);
        let p = ProjectionRef {
            w: &w,
            wt: None,
            features: m,
            dim: d,
        };
        let xm = MatRef::row_major(&x, rows, d);
        let out = MatMut::new(&mut want, rows, m, ldo);
        Scalar.project(xm, p, scale, out, &mut want_max);
        for wt in [None, Some(&wt[..])] {
            let p = ProjectionRef {
                w: &w,
                wt,
                features: m,
                dim: d,
            };
            let (mut got, mut got_max) = (vec![T::zero(); rows * ldo], vec![T::zero(); rows]);
            let out = MatMut::new(&mut got, rows, m, ldo);
            kern.project(xm, p, scale, out, &mut got_max);
            for r in 0..rows {
                let mut row_tol: f64 = 0.0;
                for i in 0..m {
                    let mag: f64 = (0..d)
                        .map(|j| (x[r * d + j] * w[i * d + j]).abs().to_f64())
                        .sum();
                    let tol = 2.0 * gamma(d + 1, unit::<T>()) * scale.to_f64() * mag;
                    row_tol = row_tol.max(tol);
                    let err = (got[r * ldo + i] - want[r * ldo + i]).abs().to_f64();
                    assert!(
                        err <= tol,
                        "{} project rows={rows} m={m} d={d} ({r},{i})",
                        kern.name()
                    );
                }
                let err = (got_max[r] - want_max[r]).abs().to_f64();
                assert!(err <= row_tol, "{} project row max {r}", kern.name());
            }
        }
    }
}

#[test]
fn project_every_backend() {
    all_backends!(check_project::<f32, _>);
    all_backends!(check_project::<f64, _>);
}

/// The structured (SORF) projection against the scalar reference, bit for bit: every
/// backend runs the reference's operations per element in its order (sign flips, the
/// butterflies, the exact 1/d', then the scale). Partial lane groups (rows not a multiple of
/// the lanes), padded dims, a partial last block, strided x and output rows, scale 1 (no
/// multiply) and d' above the SIMD path's 128 (the scalar fallback).
fn check_sorf_project<T: Float, K: Kernels<T>>(kern: K) {
    for (rows, m, d) in [
        (0, 8, 4),
        (1, 256, 64),
        (5, 33, 7),
        (16, 256, 64),
        (17, 100, 12),
        (70, 40, 3),
        (9, 64, 20),
        (4, 200, 100),
        (3, 300, 200),
        (18, 5, 1),
        (18, 6, 2),
    ] {
        let mut signs = vec![T::zero(); sorf_signs_len(m, d).unwrap()];
        sorf_signs(11 + d as u64, m, d, &mut signs).unwrap();
        let ldx = d + 2;
        let x: Vec<T> = data(90 + rows as u64, rows * ldx, 1.0);
        let xm = MatRef::new(&x, rows, d, ldx);
        for scale in [T::from_f64(0.3), T::one()] {
            let ldo = m + 3;
            let s = T::from_f64(-7.0);
            let (mut want, mut want_max) = (vec![s; rows * ldo], vec![s; rows + 1]);
            let (mut got, mut got_max) = (vec![s; rows * ldo], vec![s; rows + 1]);
            Scalar.sorf_project(
                xm,
                &signs,
                scale,
                MatMut::new(&mut want, rows, m, ldo),
                &mut want_max,
            );
            kern.sorf_project(
                xm,
                &signs,
                scale,
                MatMut::new(&mut got, rows, m, ldo),
                &mut got_max,
            );
            let bits = |v: &[T]| {
                v.iter()
                    .map(|&x| Float::to_f64(x).to_bits())
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                bits(&got),
                bits(&want),
                "{} sorf_project rows={rows} m={m} d={d}",
                kern.name()
            );
            assert_eq!(
                bits(&got_max),
                bits(&want_max),
                "{} row maxima",
                kern.name()
            );
            assert_eq!(got_max[rows], s, "a row maximum past the rows was written");
        }
    }
}

#[test]
fn sorf_project_every_backend() {
    all_backends!(check_sorf_project::<f32, _>);
    all_backends!(check_sorf_project::<f64, _>);
}

/// The elementwise feature-map kernels on every backend, all lengths 0..=70 (every tail) and
/// a long one, against Scalar (libm). Bounds: `exp_shift` computes the same `x − shift` and
/// then an exp within `EXP_MAX_ULP` ulps of libm's; `mul_exp` adds one rounding of the
/// product; `sin_cos` is within `SIN_COS_MAX_ABS_ERR` of libm for |u| ≤ `SIN_COS_RANGE`;
/// ReLU, |·| and custom functions are exact; x² + ε may be fused (one rounding apart).
fn check_elementwise<K: Kernels<f32>>(kern: K) {
    use favor_simd::math::{EXP_MAX_ULP, SIN_COS_MAX_ABS_ERR};
    let eps32 = f64::from(f32::EPSILON);
    for n in (0..=70).chain([1000]) {
        // Inputs spread over the whole exp domain, clamp ends included.
        let x: Vec<f32> = (0..n)
            .map(|i| -110.0 + 205.0 * (i as f32 / n.max(1) as f32))
            .collect();
        for shift in [0.0f32, 3.5] {
            let (mut g, mut w) = (x.clone(), x.clone());
            kern.exp_shift(&mut g, shift);
            Scalar.exp_shift(&mut w, shift);
            for i in 0..n {
                assert!(
                    ulps(g[i], w[i]) <= u64::from(EXP_MAX_ULP),
                    "{} exp_shift n={n} i={i}: {} vs {}",
                    kern.name(),
                    g[i],
                    w[i]
                );
            }
        }
        let logs: Vec<f32> = data(90 + n as u64, n, 20.0);
        let vals: Vec<f32> = data(91 + n as u64, n, 1.0);
        let (mut g, mut w) = (vals.clone(), vals.clone());
        kern.mul_exp(&mut g, &logs, 5.0);
        Scalar.mul_exp(&mut w, &logs, 5.0);
        for i in 0..n {
            let tol = f64::from(EXP_MAX_ULP + 1) * eps32 * f64::from(w[i].abs())
                + f64::from(f32::MIN_POSITIVE);
            assert!(
                f64::from((g[i] - w[i]).abs()) <= tol,
                "{} mul_exp n={n} i={i}",
                kern.name()
            );
        }
        let mut g = vec![0f32; 2 * n];
        for (i, u) in g[..n].iter_mut().enumerate() {
            *u = (i as f32 - 35.0) * 3.7;
        }
        let mut w = g.clone();
        kern.sin_cos(&mut g, n);
        Kernels::<f32>::sin_cos(&Scalar, &mut w, n);
        for i in 0..2 * n {
            assert!(
                (g[i] - w[i]).abs() <= SIN_COS_MAX_ABS_ERR,
                "{} sin_cos n={n} i={i}",
                kern.name()
            );
        }
        let u: Vec<f32> = data(92 + n as u64, n, 3.0);
        for f in [
            Activation::Relu,
            Activation::Abs,
            Activation::Square,
            Activation::Exp,
            Activation::EluPlusOne,
            Activation::Custom(|v: f32| v * 0.5),
        ] {
            let (mut g, mut w) = (u.clone(), u.clone());
            kern.activation(&mut g, f, 1e-3);
            Scalar.activation(&mut w, f, 1e-3);
            let ulps_allowed = match f {
                Activation::Relu | Activation::Abs | Activation::Custom(_) => 0.0,
                Activation::Square => 1.0,
                _ => f64::from(EXP_MAX_ULP + 1),
            };
            for i in 0..n {
                let tol = ulps_allowed * eps32 * f64::from(w[i].abs());
                assert!(
                    f64::from((g[i] - w[i]).abs()) <= tol,
                    "{} {f:?} n={n} i={i}",
                    kern.name()
                );
            }
        }
    }
}

#[test]
fn elementwise_every_backend() {
    all_backends!(check_elementwise);
}

/// The partition-function estimator on every backend against Scalar: ln Ẑ is a log of a
/// positive sum of M products of features, each within the feature bound of `Case::bound`,
/// so it moves by at most that relative amount (plus the rounding of the log).
fn check_estimator<K: Kernels<f32>>(kern: K) {
    let c = Case::new(50, 16, 1, 128, 1.0);
    let phi = PositiveSoftmax::new(&c.w, c.m, c.d).unwrap();
    let len = PartitionEstimator::<f32, _, K>::buffer_len(&phi);
    let (mut b1, mut b2) = (vec![0f32; len], vec![0f32; len]);
    let mut fast = PartitionEstimator::new(kern, &phi, &mut b1).unwrap();
    let mut reference = PartitionEstimator::new(Scalar, &phi, &mut b2).unwrap();
    fast.add_items(&c.k, c.l).unwrap();
    reference.add_items(&c.k, c.l).unwrap();
    let rel = c.bound();
    for q in c.q.chunks(c.d) {
        let (g, w) = (
            fast.log_partition(q).unwrap(),
            reference.log_partition(q).unwrap(),
        );
        assert!(
            f64::from((g - w).abs()) <= rel + 4.0 * f64::from(f32::EPSILON) * f64::from(w.abs()),
            "{} ln Z",
            kern.name()
        );
    }
}

#[test]
fn partition_estimator_every_backend() {
    all_backends!(check_estimator);
}

/// The fold is specified operation by operation (TwoSum): every backend equals Scalar bit for
/// bit, and the result is error-free: `hi + lo` is unchanged exactly. The inputs are multiples
/// of 2⁻²⁰ below 2⁴ (lo as large as a GEMM's sums added to it, or as small as a rounding
/// error), so both sides are exact in f64.
fn check_fold<T: Float, K: Kernels<T>>(kern: K) {
    let grid = |seed: u64, n: usize, scale: f64| -> Vec<T> {
        data::<T>(seed, n, scale)
            .iter()
            .map(|&x| T::from_f64((Float::to_f64(x) * 2f64.powi(20)).round() / 2f64.powi(20)))
            .collect()
    };
    for n in (0..=70).chain([1000, 16448]) {
        for scale in [1.0, 1e-5] {
            let h0 = grid(200 + n as u64, n, 1.0);
            let l0 = grid(201 + n as u64, n, scale);
            let (mut hg, mut lg) = (h0.clone(), l0.clone());
            let (mut hw, mut lw) = (h0.clone(), l0.clone());
            kern.fold(&mut hg, &mut lg);
            Scalar.fold(&mut hw, &mut lw);
            for i in 0..n {
                let same = hg[i].to_bits_u64() == hw[i].to_bits_u64()
                    && lg[i].to_bits_u64() == lw[i].to_bits_u64();
                assert!(same, "{} fold n={n} i={i}", kern.name());
                assert_eq!(
                    hw[i].to_f64() + lw[i].to_f64(),
                    h0[i].to_f64() + l0[i].to_f64(),
                    "fold n={n} i={i}"
                );
                let half_ulp = hw[i].abs().to_f64() * unit::<T>();
                assert!(
                    lw[i].abs().to_f64() <= half_ulp,
                    "fold n={n} i={i}: lo not settled"
                );
            }
        }
    }
}

#[test]
fn fold_every_backend() {
    all_backends!(check_fold::<f32, _>);
    all_backends!(check_fold::<f64, _>);
}

/// Shapes of the decode-state kernels: features m and value widths dv off every register
/// block (R rows of four vectors) and lane count, and ring fills from empty to full.
fn ring_shapes() -> impl Iterator<Item = (usize, usize, usize)> {
    [1, 3, 5, 17, 40, 67].into_iter().flat_map(|m| {
        [1, 7, 16, 33, 64, 70]
            .into_iter()
            .flat_map(move |dv| [0, 1, 5, RING].into_iter().map(move |r| (m, dv, r)))
    })
}

/// `ring_query` against the exact f64 sums: `out = qᵀS + Σ_b (q·k_b) v_b`, returning
/// `q·z + Σ_b q·k_b`, within the rounding of a dot product of `2m + r` terms (each score is
/// itself a dot of m terms) relative to the sum of the terms' magnitudes.
fn check_ring_query<T: Float, K: Kernels<T>>(kern: K) {
    for (m, dv, r) in ring_shapes() {
        let seed = (m * 1000 + dv * 10 + r) as u64;
        let hi: Vec<T> = data(seed, m * dv + m, 1.0);
        let keys: Vec<T> = data(seed + 1, RING * m, 1.0);
        let values: Vec<T> = data(seed + 2, RING * dv, 1.0);
        let q: Vec<T> = data(seed + 3, m, 1.0);
        let mut out = vec![T::zero(); dv];
        let den = kern.ring_query(&hi, Ring::new(&keys, &values, r, m, dv), &q, &mut out);
        let f = |x: T| x.to_f64();
        let score = |b: usize| -> (f64, f64) {
            let k = &keys[b * m..(b + 1) * m];
            let exact = q.iter().zip(k).map(|(a, c)| f(*a) * f(*c)).sum::<f64>();
            let mag = q
                .iter()
                .zip(k)
                .map(|(a, c)| (f(*a) * f(*c)).abs())
                .sum::<f64>();
            (exact, mag)
        };
        let bound = gamma(2 * m + r + 2, unit::<T>());
        for j in 0..dv {
            let (mut exact, mut mag) = (0.0, 0.0);
            for i in 0..m {
                exact += f(q[i]) * f(hi[i * dv + j]);
                mag += (f(q[i]) * f(hi[i * dv + j])).abs();
            }
            for b in 0..r {
                let (s, sm) = score(b);
                exact += s * f(values[b * dv + j]);
                mag += sm * f(values[b * dv + j]).abs();
            }
            let err = (f(out[j]) - exact).abs();
            assert!(
                err <= bound * mag,
                "{} ring_query m={m} dv={dv} r={r} j={j}: {err:e} > {:e}",
                kern.name(),
                bound * mag
            );
        }
        let z = &hi[m * dv..];
        let (mut exact, mut mag) = (0.0, 0.0);
        for i in 0..m {
            exact += f(q[i]) * f(z[i]);
            mag += (f(q[i]) * f(z[i])).abs();
        }
        for b in 0..r {
            let (s, sm) = score(b);
            exact += s;
            mag += sm;
        }
        let err = (f(den) - exact).abs();
        assert!(
            err <= bound * mag,
            "{} ring_query den m={m} dv={dv} r={r}",
            kern.name()
        );
    }
}

/// `fold_rank` against the exact f64 sums: afterwards `hi + lo` is the old `hi + lo` plus
/// `Σ_b k_b vᵦᵀ` (S) and `Σ_b k_b` (z) up to the rounding of the r-term sum and its one
/// addition to `lo` (TwoSum then moves it into `hi` exactly), and `lo` is settled.
fn check_fold_rank<T: Float, K: Kernels<T>>(kern: K) {
    for (m, dv, r) in ring_shapes() {
        let seed = (m * 1000 + dv * 10 + r) as u64 + 7;
        let hi0: Vec<T> = data(seed, m * dv + m, 1.0);
        let lo0: Vec<T> = data(seed + 1, m * dv + m, 1e-7);
        let keys: Vec<T> = data(seed + 2, RING * m, 1.0);
        let values: Vec<T> = data(seed + 3, RING * dv, 1.0);
        let (mut hi, mut lo) = (hi0.clone(), lo0.clone());
        kern.fold_rank(&mut hi, &mut lo, Ring::new(&keys, &values, r, m, dv));
        let f = |x: T| x.to_f64();
        let bound = gamma(r + 1, unit::<T>());
        for at in 0..m * dv + m {
            let terms: Vec<f64> = (0..r)
                .map(|b| {
                    if at < m * dv {
                        let (i, j) = (at / dv, at % dv);
                        f(keys[b * m + i]) * f(values[b * dv + j])
                    } else {
                        f(keys[b * m + at - m * dv])
                    }
                })
                .collect();
            let exact = f(hi0[at]) + f(lo0[at]) + terms.iter().sum::<f64>();
            let mag = terms.iter().map(|t| t.abs()).sum::<f64>() + f(lo0[at]).abs();
            let err = (f(hi[at]) + f(lo[at]) - exact).abs();
            // The oracle's own rounding in f64 (negligible next to f32's bound; for f64 it
            // is the size of hi's last bit).
            let oracle = 4.0 * f64::EPSILON * (f(hi0[at]).abs() + f(hi[at]).abs() + mag);
            assert!(
                err <= bound * mag + oracle,
                "{} fold_rank m={m} dv={dv} r={r} at={at}: {err:e} > {:e}",
                kern.name(),
                bound * mag + oracle
            );
            assert!(
                f(lo[at]).abs() <= f(hi[at]).abs() * unit::<T>(),
                "{} fold_rank m={m} dv={dv} r={r} at={at}: lo not settled",
                kern.name()
            );
        }
    }
}

#[test]
fn ring_query_every_backend() {
    all_backends!(check_ring_query::<f32, _>);
    all_backends!(check_ring_query::<f64, _>);
}

#[test]
fn fold_rank_every_backend() {
    all_backends!(check_fold_rank::<f32, _>);
    all_backends!(check_fold_rank::<f64, _>);
}

/// Regression: a stride so large that `rows · stride` wraps `usize` once passed the
/// microkernel's bounds check and read out of bounds (a segfault from safe code). It must be
/// a panic — the `Kernels` contract for violated preconditions — on every backend (now the
/// view refuses it when it is made: `MatRef::strided` checks its span without wrapping).
fn check_huge_stride<K: Kernels<f32>>(kern: K) {
    let a = [1f32; 64];
    let b = [1f32; 64];
    let lda = (usize::MAX / 5) + 1; // 5·lda wraps to a small number
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let mut c = [0f32; 6 * 16];
        let (am, bm) = (MatRef::new(&a, 6, 3, lda), MatRef::row_major(&b, 3, 16));
        kern.gemm(MatMut::row_major(&mut c, 6, 16), Accum::Overwrite, am, bm);
    }));
    assert!(
        r.is_err(),
        "{}: an impossible stride must panic",
        kern.name()
    );
}

#[test]
#[cfg_attr(
    target_arch = "wasm32",
    ignore = "wasm aborts on panic: catch_unwind cannot observe it"
)]
fn huge_strides_panic_instead_of_reading_out_of_bounds() {
    all_backends!(check_huge_stride);
}

/// One larger hybrid case than the fuzz decoder makes: d = 64 and m = 128 reach the vector
/// bodies (not just the tails) of every kernel the hybrid paths use, with Wᵀ attached.
fn wide_hybrid_case(window: usize, sinks: usize) -> favor_testkit::hybrid_paths::HybridCase {
    use favor_testkit::hybrid_paths::{BadStep, HybridCase};
    use favor_testkit::maps::{MapKind, MapSpec};
    let (l, d, dv, m) = (150, 64, 48, 128);
    let mut w = vec![0f64; m * d];
    projection(ProjectionKind::default(), 21, m, d, &mut w).unwrap();
    // Rows of norm ≈ 2 (exact logits up to about 4), rounded to f32 so both precisions
    // see the same values.
    let f32s = |x: Vec<f64>| -> Vec<f64> { x.iter().map(|&a| f64::from(a as f32)).collect() };
    HybridCase {
        f64: false,
        map: MapSpec {
            kind: MapKind::Positive,
            normalizer: true,
            transposed: true,
            d,
            m,
            eps: 0.0,
            w: f32s(w),
        },
        l,
        dv,
        window,
        sinks,
        chunk: 64,
        block: 32,
        q: f32s(data::<f64>(71, l * d, 0.25)),
        k: f32s(data::<f64>(72, l * d, 0.25)),
        v: f32s(data::<f64>(73, l * dv, 1.0)),
        cut: 0,
        junk: 0.0,
        bad: BadStep::ShortValue,
        mutation: (0, 1, false),
    }
}

/// Hybrid attention (stream, causal chunked and bidirectional plans) on every backend, f32
/// and f64, against favor-testkit's f64 definition within its derived budget
/// (`hybrid_paths::check_backend`: the fuzz target's model, with the vector exp's extra ulp):
/// small decoded cases that hit every window/sink/chunk/block corner, and wide ones for the
/// vector bodies.
/// The hybrid cases, each with its f64 oracle, built once for every backend: the oracle is
/// about 95 % of checking a case (60 % of this test's time went to libm's `exp`, 50 s of the
/// aarch64 run under qemu when every backend rebuilt it in both precisions).
fn hybrid_cases() -> &'static [(favor_testkit::hybrid_paths::HybridCase, Oracle)] {
    use favor_testkit::hybrid_paths::HybridCase;
    static CASES: std::sync::OnceLock<Vec<(HybridCase, Oracle)>> = std::sync::OnceLock::new();
    CASES.get_or_init(|| {
        // (40, 0) takes the bidirectional path's band form at block 32, (140, 1) its prefix
        // form with a far field at both ends of the sequence.
        let mut cases: Vec<HybridCase> = [(16, 1), (0, 2), (40, 0), (140, 1)]
            .map(|(w, s)| wide_hybrid_case(w, s))
            .into();
        let mut mix = favor_testkit::input::Mix::new(0x4859_4244);
        while cases.len() < 40 {
            let bytes: Vec<u8> = (0..400).map(|_| mix.next_u64() as u8).collect();
            if let Some(c) = HybridCase::decode(&bytes) {
                cases.push(c);
            }
        }
        cases
            .into_iter()
            .map(|c| {
                let o = Oracle::new(&c);
                (c, o)
            })
            .collect()
    })
}

fn check_hybrid<K: Kernels<f32> + Kernels<f64> + 'static>(kern: K) {
    use favor_testkit::hybrid_paths::check_backend_with;
    let cases = hybrid_cases();
    // The wide cases come first and cost the most; Detected gets the last (decoded) ones.
    for (c, o) in &cases[cases.len() - cases_for::<K>(cases.len())..] {
        check_backend_with::<f32, K>(c, o, kern);
        check_backend_with::<f64, K>(c, o, kern);
    }
}

#[test]
fn hybrid_every_backend() {
    all_backends!(check_hybrid);
}

/// Hybrid attention with a key mask, in the forms `HybridCase` (no mask) does not reach with
/// one: the bidirectional plan's prefix form (w = 140 at block 32, which `FarForm::choose`
/// takes at this shape) and band form (w = 40), and the causal chunked plan, each with keys
/// masked singly (every fifth) and as a run that is far from some queries and inside others'
/// windows. Reference: favor-core's `Scalar` in f64, itself checked against the definition
/// with masks (favor-core's tests/hybrid.rs, every path and both far forms).
///
/// Budgets: both sides compute the same weights with sums in different orders, so each
/// weight differs by a relative `η ≤ γ_{d+4}·τ|q||k| + γ_{2(L+M)}` (logits below 4 here) and
/// the normalised output by at most `2η(max|v| + |out|) ≤ 4η·max|v|`: at most 3·10⁻¹³·max|v|
/// in f64 (checked at 10⁻¹¹) and, in f32, 3·10⁻⁵·max|v| plus the vector exp's extra ulp
/// (checked at 10⁻³: a key in the wrong set moves an output by its weight, above 10⁻² here).
/// The mask must move the outputs by ten times the f32 budget, so ignoring it fails.
fn check_masked_hybrid<K: Kernels<f32> + Kernels<f64> + 'static>(kern: K) {
    let (l, d, dv, m) = (150, 64, 48, 128);
    let mut w = vec![0f64; m * d];
    projection(ProjectionKind::default(), 21, m, d, &mut w).unwrap();
    let mut wt = vec![0f64; m * d];
    transpose_projection(&w, m, d, &mut wt).unwrap();
    let (q, k, v) = (
        data::<f64>(81, l * d, 0.25),
        data::<f64>(82, l * d, 0.25),
        data::<f64>(83, l * dv, 1.0),
    );
    let mask: Vec<bool> = (0..l)
        .map(|j| j % 5 != 3 && !(60..76).contains(&j))
        .collect();
    let vmax = max_abs(&v);
    let f32s = |x: &[f64]| -> Vec<f32> { x.iter().map(|&a| a as f32).collect() };
    let (w32, wt32, q32, k32, v32) = (f32s(&w), f32s(&wt), f32s(&q), f32s(&k), f32s(&v));
    fn run<T: Float, K: Kernels<T>>(
        kern: K,
        (w, wt): (&[T], &[T]),
        (q, k, v): (&[T], &[T], &[T]),
        (l, d, dv, m): (usize, usize, usize, usize),
        (kind, block, window): (PlanKind, usize, usize),
        key_mask: Option<&[bool]>,
    ) -> Vec<T> {
        let map = PositiveSoftmax::new(w, m, d)
            .and_then(|p| p.with_transposed_projection(wt))
            .unwrap();
        let opts = Options {
            block,
            key_mask,
            ..Options::default()
        };
        let plan = Plan::new(kind, kern, &map, Shape::new(l, d, dv), opts)
            .and_then(|p| p.with_hybrid(HybridShape { window, sinks: 1 }))
            .unwrap();
        let mut scratch = vec![T::zero(); plan.scratch_len()];
        let mut out = vec![T::zero(); l * dv];
        plan.run(q, k, v, &mut out, &mut scratch).unwrap();
        out
    }
    let dims = (l, d, dv, m);
    for path in [
        (PlanKind::Bidirectional, 32, 140),
        (PlanKind::Bidirectional, 32, 40),
        (PlanKind::CausalChunked, 64, 40),
    ] {
        let reference = run(Scalar, (&w, &wt), (&q, &k, &v), dims, path, Some(&mask));
        let unmasked = run(Scalar, (&w, &wt), (&q, &k, &v), dims, path, None);
        let moved = reference
            .iter()
            .zip(&unmasked)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            moved > 1e-2 * vmax,
            "{path:?}: the mask moved outputs by {moved:e} only"
        );
        let got64 = run(kern, (&w, &wt), (&q, &k, &v), dims, path, Some(&mask));
        let got32 = run(
            kern,
            (&w32, &wt32),
            (&q32, &k32, &v32),
            dims,
            path,
            Some(&mask),
        );
        for (i, want) in reference.iter().enumerate() {
            let (e64, e32) = ((got64[i] - want).abs(), (f64::from(got32[i]) - want).abs());
            assert!(
                e64 <= 1e-11 * vmax && e32 <= 1e-3 * vmax,
                "{} {path:?} out[{i}] = {} (f64), {} (f32); scalar f64 {want}",
                Kernels::<f32>::name(&kern),
                got64[i],
                got32[i]
            );
        }
    }
}

#[test]
fn masked_hybrid_every_backend() {
    all_backends!(check_masked_hybrid);
}

/// Stack a host thread must offer to every attention path (the crate docs promise it): musl's
/// default thread stack, the smallest common one. The packed GEMM keeps its blocks on the
/// stack; at 112 KiB (f32) and 224 KiB (f64) they overflowed such a thread.
const SMALL_STACK: usize = 128 << 10;

/// Every plan kind (plain and hybrid), with and without Wᵀ attached and a key mask, both
/// decoding streams, tiled exact attention and the structured projection in precision T with
/// kernels `K`, at a shape whose GEMMs take the packed path (A transposed, many rows and
/// columns).
fn run_paths<T: Float, K: Kernels<T>>(kern: K) -> Vec<T> {
    let (l, d, m) = (150, 64, 256);
    let mut w = vec![T::zero(); m * d];
    projection(ProjectionKind::default(), 5, m, d, &mut w).unwrap();
    let (q, k, v) = (
        data::<T>(1, l * d, 0.3),
        data::<T>(2, l * d, 0.3),
        data::<T>(3, l * d, 1.0),
    );
    let mut wt = vec![T::zero(); m * d];
    transpose_projection(&w, m, d, &mut wt).unwrap();
    // With Wᵀ attached the projection reads it in place; without, it packs W transposed.
    let bare = PositiveSoftmax::new(&w, m, d).unwrap();
    let phi = bare.with_transposed_projection(&wt).unwrap();
    let shape = Shape::new(l, d, d);
    let mut outs = Vec::new();
    let mut out = vec![T::zero(); l * d];
    let mask: Vec<bool> = (0..l).map(|j| j % 7 != 3).collect();
    let masked = Options {
        key_mask: Some(&mask),
        ..Options::default()
    };
    for map in [&bare, &phi] {
        let plan = Plan::new(PlanKind::Bidirectional, kern, map, shape, masked).unwrap();
        let mut scratch = vec![T::zero(); plan.scratch_len()];
        plan.run(&q, &k, &v, &mut out, &mut scratch).unwrap();
        outs.extend_from_slice(&out);
    }
    // The structured projection, a kernel of its own (its blocks live on the stack too).
    let mut signs = vec![T::zero(); sorf_signs_len(m, d).unwrap()];
    sorf_signs(5, m, d, &mut signs).unwrap();
    let mut row_max = vec![T::zero(); 32];
    let x = MatRef::row_major(&q[..32 * d], 32, d);
    kern.sorf_project(
        x,
        &signs,
        T::one(),
        MatMut::row_major(&mut out[..32 * m], 32, m),
        &mut row_max,
    );
    outs.extend_from_slice(&out[..32 * m]);
    let hybrid = HybridShape {
        window: 24,
        sinks: 2,
    };
    let kinds = [
        PlanKind::Bidirectional,
        PlanKind::CausalPrefix,
        PlanKind::CausalChunked,
    ];
    for (kind, map) in kinds.into_iter().flat_map(|k| [(k, &bare), (k, &phi)]) {
        let plain = Plan::new(kind, kern, map, shape, Options::default()).unwrap();
        // The token loop's hybrid is HybridStream, below.
        let hybrid_plan =
            (kind != PlanKind::CausalPrefix).then(|| plain.with_hybrid(hybrid).unwrap());
        for plan in std::iter::once(plain).chain(hybrid_plan) {
            let mut scratch = vec![T::zero(); plan.scratch_len()];
            plan.run(&q, &k, &v, &mut out, &mut scratch).unwrap();
            outs.extend_from_slice(&out);
        }
    }
    let mut buf = vec![T::zero(); Stream::<T, _, K>::buffer_len(&phi, d).unwrap()];
    let mut stream = Stream::new(kern, &phi, d, &mut buf).unwrap();
    let len = HybridStream::<T, _, K>::buffer_len(&phi, d, hybrid).unwrap();
    let mut hbuf = vec![T::zero(); len];
    let mut hstream = HybridStream::new(kern, &phi, d, hybrid, &mut hbuf).unwrap();
    let mut hout = vec![T::zero(); l * d];
    for t in 0..l {
        let r = t * d..(t + 1) * d;
        let (qt, kt, vt) = (&q[r.clone()], &k[r.clone()], &v[r.clone()]);
        stream.step(qt, kt, vt, &mut out[r.clone()]).unwrap();
        hstream.step(qt, kt, vt, &mut hout[r]).unwrap();
    }
    outs.extend_from_slice(&out);
    outs.extend_from_slice(&hout);
    let mut scratch = vec![T::zero(); softmax_attention_tiled_scratch_len(64).unwrap()];
    let opts = ExactOptions::default();
    softmax_attention_tiled(&kern, &q, &k, &v, shape, &opts, 64, &mut out, &mut scratch).unwrap();
    outs.extend_from_slice(&out);
    outs
}

fn check_small_stack<K: Kernels<f32> + Kernels<f64> + Send + 'static>(kern: K) {
    let name = Kernels::<f32>::name(&kern);
    let (f32s, f64s) = std::thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(move || (run_paths::<f32, K>(kern), run_paths::<f64, K>(kern)))
        .unwrap()
        .join()
        .unwrap();
    // Completing is the test (an overflow aborts the process); the outputs' values are checked
    // against references elsewhere, so here only that they are finite.
    assert!(f32s.iter().all(|x| x.is_finite()), "{name}: f32 not finite");
    assert!(f64s.iter().all(|x| x.is_finite()), "{name}: f64 not finite");
}

#[test]
#[cfg_attr(target_arch = "wasm32", ignore = "wasm32-wasip1 has no threads")]
fn every_path_runs_on_a_small_thread_stack() {
    all_backends!(check_small_stack);
}
