//! The primitives of [`Kernels`] at the shapes the benchmark workload gives them (a block of
//! 256 rows, m = 256 features, d = dv = 64, f32), for each of [`backends`] (scalar, the
//! detected backend and forced AVX2+FMA where the detected one is wider), and the feature maps'
//! `map_rows` on one block. Run: `cargo bench -p favor-benches --bench kernels`.
//!
//! Throughput, per group:
//! - GEMMs (each group also runs the `gemm` crate, faer's, on one thread: `gemm_crate`, the
//!   reference issue 16 asks ours to match), `project` and the feature maps: elements = FLOPs (2·m·n·k; for the maps, the
//!   projection's 2·rows·m·d), so `elem/s` compares with the `roof` group of `workloads`;
//! - `prefix_state`: the decode state's kernels — `fold` (TwoSum settling the sums: the bytes
//!   of the total and its compensation read and written), `fold_rank` (a full ring folded in:
//!   FLOPs, 2·RING·(m·dv + m)) and `ring_query` (one query over the total and a full ring:
//!   FLOPs, 2·(m·dv + m + RING·(m + dv))); the decode step itself is in `workloads`;
//! - elementwise (`exp_shift`, `sin_cos`, `activation`): elements written. Each row is first
//!   copied from an untouched source block (so every call sees the same data), and the copy
//!   of 1 KiB per row is part of the time;
//! - `dot`, `axpy`: elements and the bytes read (and written) at a length of m·dv = 16384
//!   (the state size, 64 KiB per vector: L2-resident, bound by cache bandwidth).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use favor_benches::reference::gemm_crate;
use favor_benches::*;
use favor_core::*;
use favor_simd::Detected;
use std::hint::black_box;
use std::time::Duration;

/// Rows per block: the bidirectional block.
const ROWS: usize = BIDIR_BLOCK;
const M: usize = FEATURES;
const D: usize = DIM;

/// Deterministic values in [-scale, scale).
fn data(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut g = Normals::new(seed);
    (0..n)
        .map(|_| (g.sample::<f32>() * 0.5 * scale).clamp(-scale, scale))
        .collect()
}

/// One head's projection W (m×d) and Wᵀ.
fn projection_pair() -> (Vec<f32>, Vec<f32>) {
    let mut w = vec![0f32; M * D];
    projection(ProjectionKind::default(), 0, M, D, &mut w).unwrap();
    let mut wt = vec![0f32; M * D];
    transpose_projection(&w, M, D, &mut wt).unwrap();
    (w, wt)
}

fn gemm(c: &mut Criterion) {
    let x = data(ROWS * D, 1, 0.5);
    let (w, wt) = projection_pair();
    let feats: Vec<f32> = data(ROWS * M, 2, 1.0).iter().map(|x| x.abs()).collect();
    let s_in = data(M * D, 3, 1.0);
    let v = data(ROWS * D, 4, 1.0);
    let chunk = CAUSAL_CHUNK;
    let mut out = vec![0f32; ROWS * M];
    let mut s = s_in.clone();
    let mut row_max = vec![0f32; ROWS];
    let flops = |m: usize, n: usize, k: usize| Throughput::Elements(2 * (m * n * k) as u64);

    // X·Wᵀ (the projection without Wᵀ) and the causal chunk's tile Q'K'ᵀ (C×C, k = m).
    let mut g = c.benchmark_group("gemm_nt");
    for k in backends() {
        g.throughput(flops(ROWS, M, D));
        g.bench_function(BenchmarkId::new(name(&k), "256x256x64_xwt"), |b| {
            b.iter(|| {
                let (xm, wm) = (
                    MatRef::row_major(black_box(&x), ROWS, D),
                    MatRef::row_major(&w, M, D),
                );
                k.gemm(
                    MatMut::row_major(&mut out, ROWS, M),
                    Accum::Overwrite,
                    xm,
                    wm.t(),
                )
            })
        });
        g.throughput(flops(chunk, chunk, M));
        g.bench_function(BenchmarkId::new(name(&k), "64x64x256_tile"), |b| {
            b.iter(|| {
                let q = MatRef::row_major(black_box(&feats), chunk, M);
                let keys = MatRef::row_major(&feats[chunk * M..], chunk, M);
                let tile = MatMut::row_major(&mut out, chunk, chunk);
                k.gemm(tile, Accum::Overwrite, q, keys.t())
            })
        });
    }
    g.throughput(flops(ROWS, M, D));
    g.bench_function(BenchmarkId::new("gemm_crate", "256x256x64_xwt"), |b| {
        b.iter(|| {
            let (xm, wm) = (
                MatRef::row_major(black_box(&x), ROWS, D),
                MatRef::row_major(&w, M, D),
            );
            gemm_crate(
                MatMut::row_major(&mut out, ROWS, M),
                Accum::Overwrite,
                xm,
                wm.t(),
            )
        })
    });
    g.finish();

    // Q'S: (rows×m)·(m×dv).
    let mut g = c.benchmark_group("gemm_nn");
    g.throughput(flops(ROWS, D, M));
    for k in backends() {
        g.bench_function(BenchmarkId::new(name(&k), "256x64x256_qs"), |b| {
            b.iter(|| {
                let q = MatRef::row_major(black_box(&feats), ROWS, M);
                let sm = MatRef::row_major(&s_in, M, D);
                k.gemm(
                    MatMut::row_major(&mut out, ROWS, D),
                    Accum::Overwrite,
                    q,
                    sm,
                )
            })
        });
    }
    g.bench_function(BenchmarkId::new("gemm_crate", "256x64x256_qs"), |b| {
        b.iter(|| {
            let q = MatRef::row_major(black_box(&feats), ROWS, M);
            let sm = MatRef::row_major(&s_in, M, D);
            gemm_crate(
                MatMut::row_major(&mut out, ROWS, D),
                Accum::Overwrite,
                q,
                sm,
            )
        })
    });
    g.finish();

    // K'ᵀV accumulated into S: (m×rows)·(rows×dv). S grows by a bounded amount per call.
    let mut g = c.benchmark_group("gemm_tn");
    g.throughput(flops(M, D, ROWS));
    for k in backends() {
        g.bench_function(BenchmarkId::new(name(&k), "256x64x256_ktv"), |b| {
            b.iter(|| {
                let keys = MatRef::row_major(black_box(&feats), ROWS, M);
                let vm = MatRef::row_major(&v, ROWS, D);
                k.gemm(MatMut::row_major(&mut s, M, D), Accum::Add, keys.t(), vm)
            })
        });
    }
    g.bench_function(BenchmarkId::new("gemm_crate", "256x64x256_ktv"), |b| {
        b.iter(|| {
            let keys = MatRef::row_major(black_box(&feats), ROWS, M);
            let vm = MatRef::row_major(&v, ROWS, D);
            gemm_crate(MatMut::row_major(&mut s, M, D), Accum::Add, keys.t(), vm)
        })
    });
    g.finish();

    // The fused projection with Wᵀ: scale and row maximum in the epilogue.
    let mut g = c.benchmark_group("project");
    g.throughput(flops(ROWS, M, D));
    let p = ProjectionRef {
        w: &w,
        wt: Some(&wt),
        features: M,
        dim: D,
    };
    for k in backends() {
        g.bench_function(BenchmarkId::new(name(&k), "256x256x64"), |b| {
            b.iter(|| {
                let xm = MatRef::row_major(black_box(&x), ROWS, D);
                k.project(
                    xm,
                    p,
                    0.35,
                    MatMut::row_major(&mut out, ROWS, M),
                    &mut row_max,
                )
            })
        });
    }
    g.finish();
}

fn prefix_state(c: &mut Criterion) {
    // The prefix state's compensated total `[S | z]`, its compensation, a full ring, a query.
    let mut hi = data(M * D + M, 5, 0.1);
    let mut lo = data(M * D + M, 6, 1e-3);
    let keys = data(RING * M, 7, 0.1);
    let values = data(RING * D, 8, 1.0);
    let q = data(M, 9, 0.1);
    let mut out = vec![0f32; D];
    let mut g = c.benchmark_group("prefix_state");
    // The settling of a ring's (or chunk's) sums into the total: TwoSum over both parts.
    g.throughput(Throughput::Bytes(
        4 * ((M * D + M) * size_of::<f32>()) as u64,
    ));
    for k in backends() {
        g.bench_function(BenchmarkId::new(name(&k), "fold_m256_dv64"), |b| {
            b.iter(|| k.fold(&mut hi, black_box(&mut lo)))
        });
    }
    g.throughput(Throughput::Elements((2 * RING * (M * D + M)) as u64));
    for k in backends() {
        g.bench_function(BenchmarkId::new(name(&k), "fold_rank_m256_dv64"), |b| {
            b.iter(|| {
                k.fold_rank(
                    &mut hi,
                    black_box(&mut lo),
                    Ring::new(&keys, &values, RING, M, D),
                )
            })
        });
    }
    g.throughput(Throughput::Elements(
        (2 * (M * D + M + RING * (M + D))) as u64,
    ));
    for k in backends() {
        g.bench_function(BenchmarkId::new(name(&k), "ring_query_m256_dv64"), |b| {
            b.iter(|| {
                k.ring_query(
                    black_box(&hi),
                    Ring::new(&keys, &values, RING, M, D),
                    &q,
                    &mut out,
                )
            })
        });
    }
    g.finish();
}

/// Elementwise kernels over one feature block (256 rows × m), row by row from a source.
fn elementwise(c: &mut Criterion) {
    // Exponents after the row-maximum shift lie in [-20, 0]; sin/cos arguments w·x in [-8, 8].
    let src_exp: Vec<f32> = data(ROWS * M, 10, 20.0).iter().map(|x| -x.abs()).collect();
    let src_trig = data(ROWS * M, 11, 8.0);
    let src_act = data(ROWS * M, 12, 4.0);
    let y = &mut vec![0f32; ROWS * 2 * M][..];
    /// Copies each m-element row of `src` to the start of a `width`-element row of `y`,
    /// then applies `f` to that row.
    fn rows(
        b: &mut criterion::Bencher<'_>,
        y: &mut [f32],
        src: &[f32],
        width: usize,
        f: impl Fn(&mut [f32]),
    ) {
        b.iter(|| {
            for (row, dst) in src.chunks_exact(M).zip(y.chunks_exact_mut(width)) {
                dst[..M].copy_from_slice(row);
                f(black_box(dst));
            }
        })
    }
    let mut g = c.benchmark_group("exp_shift");
    g.throughput(Throughput::Elements((ROWS * M) as u64));
    for k in backends() {
        g.bench_function(BenchmarkId::new(name(&k), "256x256"), |b| {
            rows(b, y, &src_exp, M, |x| k.exp_shift(x, 0.0))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("sin_cos");
    g.throughput(Throughput::Elements((ROWS * 2 * M) as u64));
    for k in backends() {
        g.bench_function(BenchmarkId::new(name(&k), "256x256"), |b| {
            rows(b, y, &src_trig, 2 * M, |x| {
                Kernels::<f32>::sin_cos(&k, x, M)
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("activation");
    g.throughput(Throughput::Elements((ROWS * M) as u64));
    for k in backends() {
        for (label, f) in [
            ("relu", Activation::Relu),
            ("elu_plus_one", Activation::EluPlusOne),
        ] {
            g.bench_function(BenchmarkId::new(name(&k), label), |b| {
                rows(b, y, &src_act, M, |x| k.activation(x, f, 1e-3))
            });
        }
    }
    g.finish();
}

fn blas1(c: &mut Criterion) {
    let n = M * D;
    let a = data(n, 13, 1.0);
    let mut y = data(n, 14, 1.0);
    let bytes = (n * size_of::<f32>()) as u64;
    let mut g = c.benchmark_group("dot");
    g.throughput(Throughput::ElementsAndBytes {
        elements: n as u64,
        bytes: 2 * bytes,
    });
    for k in backends() {
        g.bench_function(BenchmarkId::new(name(&k), n), |b| {
            b.iter(|| k.dot(black_box(&a), &y))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("axpy");
    g.throughput(Throughput::ElementsAndBytes {
        elements: n as u64,
        bytes: 3 * bytes,
    });
    // A tiny alpha leaves y (nearly) unchanged however many iterations run; no kernel
    // special-cases it.
    for k in backends() {
        g.bench_function(BenchmarkId::new(name(&k), n), |b| {
            b.iter(|| k.axpy(black_box(1e-30), &a, &mut y))
        });
    }
    g.finish();
}

/// `map_rows` of one block (256 rows, d = 64) into m = 256 random features, each map with Wᵀ.
fn feature_maps(c: &mut Criterion) {
    let x = data(ROWS * D, 15, 1.0)
        .iter()
        .map(|x| x * 0.25)
        .collect::<Vec<_>>();
    let (w, wt) = projection_pair();
    let mut out = vec![0f32; ROWS * 2 * M];
    let mut logs = vec![0f32; ROWS];
    let mut g = c.benchmark_group("feature_map");
    g.throughput(Throughput::Elements(2 * (ROWS * M * D) as u64));
    let det = Detected::new();
    let mut ks = vec![det];
    if name(&det) != "scalar" {
        ks.push(Detected::Scalar(Scalar));
    }
    fn run<F: FeatureMap<f32>>(
        g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        label: &str,
        phi: &F,
        k: &Detected,
        x: &[f32],
        out: &mut [f32],
        logs: &mut [f32],
    ) {
        g.bench_function(BenchmarkId::new(label, name(k)), |b| {
            b.iter(|| phi.map_rows(k, black_box(x), ROWS, out, logs).unwrap())
        });
    }
    let positive = PositiveSoftmax::new(&w, M, D)
        .and_then(|p| p.with_transposed_projection(&wt))
        .unwrap();
    let hyperbolic = HyperbolicSoftmax::new(&w, M, D)
        .and_then(|p| p.with_transposed_projection(&wt))
        .unwrap();
    let trig = TrigonometricSoftmax::new(&w, M, D)
        .and_then(|p| p.with_transposed_projection(&wt))
        .unwrap();
    let relu = Generalized::new(&w, M, D, Activation::Relu)
        .and_then(|p| p.with_transposed_projection(&wt))
        .unwrap();
    for k in &ks {
        run(&mut g, "positive", &positive, k, &x, &mut out, &mut logs);
        run(
            &mut g,
            "hyperbolic",
            &hyperbolic,
            k,
            &x,
            &mut out,
            &mut logs,
        );
        run(&mut g, "trigonometric", &trig, k, &x, &mut out, &mut logs);
        run(&mut g, "relu", &relu, k, &x, &mut out, &mut logs);
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // Microsecond kernels: short windows give thousands of iterations per sample.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(500));
    targets = gemm, prefix_state, elementwise, blas1, feature_maps
}
criterion_main!(benches);
