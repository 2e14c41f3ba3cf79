//! Attention over the whole benchmark workload (batch 1, 8 heads, d = 64, m = 256, f32, one
//! thread) against the sequence length L. Run: `cargo bench -p favor-benches --bench attention`.
//!
//! | group | what | elements (per call) |
//! |---|---|---|
//! | `bidirectional_8heads` | [`bidirectional_all`] at L = 1024, 4096, 16384 (detected backend), and 1024 (scalar) | FLOPs 8·H·L·m·d |
//! | `causal_8heads` | [`causal_all`] (chunks of 64), the same points | FLOPs 8·H·L·m·d |
//! | `exact_8heads` | [`exact_all`] (`favor_core::softmax_attention_tiled`) at L = 1024, 4096, and the row-at-a-time `favor_core::softmax_attention` at L = 256 (detected backend) | FLOPs 4·H·L²·d |
//! | `f16_input_8heads` | `favor_tensor::Performer::forward`, bidirectional, L = 4096, on an f16 view and on an f32 view of the same values (f16-rounded) | FLOPs 8·H·L·m·d, and the input bytes |
//!
//! Calls take milliseconds to a second, so every group uses flat sampling (10 samples of
//! equally many calls). Criterion's "Unable to complete 10 samples in 1.0s" warnings are
//! expected: it then takes the 10 samples anyway (the file takes 30–45 s on a 2-vCPU VM). The
//! `f16_input_8heads` times include allocating the output tensor, as `forward` does.

use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main, measurement::WallTime,
};
use favor_benches::*;
use favor_core::*;
use favor_simd::Detected;
use favor_tensor::{Performer, TensorView, f16};
use std::time::Duration;

const LENS: [usize; 3] = [1024, 4096, 16384];
/// The scalar backend runs at this L only (about 10× slower).
const SCALAR_LEN: usize = 1024;

fn flat<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sampling_mode(SamplingMode::Flat);
    g
}

fn favor(c: &mut Criterion) {
    let max = LENS[LENS.len() - 1];
    let heads = heads(max);
    let mut out = vec![0f32; max * DIM];
    let mut scratch = vec![0f32; scratch_len()];
    let det = Detected::new();
    let scalar = Detected::Scalar(Scalar);
    type Run = fn(&Detected, &[Head], usize, &mut [f32], &mut [f32]);
    let paths: [(&str, Run); 2] = [
        ("bidirectional_8heads", bidirectional_all::<Detected>),
        ("causal_8heads", causal_all::<Detected>),
    ];
    for (group, run) in paths {
        let mut g = flat(c, group);
        for len in LENS {
            g.throughput(Throughput::Elements(favor_flops(len)));
            let mut ks = vec![det];
            if len == SCALAR_LEN && name(&det) != "scalar" {
                ks.push(scalar);
            }
            for k in ks {
                g.bench_function(BenchmarkId::new(name(&k), len), |b| {
                    b.iter(|| run(&k, &heads, len, &mut out, &mut scratch))
                });
            }
        }
        g.finish();
    }
}

fn exact(c: &mut Criterion) {
    let lens = [1024, 4096];
    let heads = heads(lens[1]);
    let mut out = vec![0f32; lens[1] * DIM];
    let det = Detected::new();
    let mut g = flat(c, "exact_8heads");
    for len in lens {
        g.throughput(Throughput::Elements(exact_flops(len)));
        g.bench_function(
            BenchmarkId::new(format!("tiled/{}", name(&det)), len),
            |b| b.iter(|| exact_all(&det, &heads, len, &mut out)),
        );
    }
    // The row-at-a-time reference (online softmax per query row, BLAS-1 kernels).
    let len = 256;
    let (n, shape, opts) = (
        len * DIM,
        Shape::new(len, DIM, DIM),
        ExactOptions::default(),
    );
    g.throughput(Throughput::Elements(exact_flops(len)));
    g.bench_function(
        BenchmarkId::new(format!("rowwise/{}", name(&det)), len),
        |b| {
            b.iter(|| {
                for h in &heads {
                    let (q, k, v) = (&h.q[..n], &h.k[..n], &h.v[..n]);
                    softmax_attention(&det, q, k, v, shape, &opts, &mut out[..n]).unwrap();
                }
            })
        },
    );
    g.finish();
}

fn f16_input(c: &mut Criterion) {
    let len = 4096;
    let hs = heads(len);
    // [1, H, L, d] tensors; the f32 copy holds the f16-rounded values, so both views carry
    // the same data and differ only in the element type the heads are widened from.
    let tensor = |pick: fn(&Head) -> &[f32]| -> Vec<f16> {
        hs.iter()
            .flat_map(|h| pick(h).iter().map(|&x| f16::from_f32(x)))
            .collect()
    };
    let (q16, k16, v16) = (tensor(|h| &h.q), tensor(|h| &h.k), tensor(|h| &h.v));
    let widen = |x: &[f16]| x.iter().map(|e| e.to_f32()).collect::<Vec<f32>>();
    let (q32, k32, v32) = (widen(&q16), widen(&k16), widen(&v16));
    drop(hs);
    let shape = [1, HEADS, len, DIM];
    let performer = Performer::builder(DIM)
        .heads(HEADS)
        .features(FEATURES)
        .parallel(false)
        .build()
        .unwrap();
    let backend = performer.backend_name();
    let mut g = flat(c, "f16_input_8heads");
    let elems = (3 * HEADS * len * DIM) as u64;
    g.throughput(Throughput::ElementsAndBytes {
        elements: favor_flops(len),
        bytes: elems * 2,
    });
    let view = |x| TensorView::new(shape, x).unwrap();
    let (q, k, v) = (view(&q16), view(&k16), view(&v16));
    g.bench_function(BenchmarkId::new(format!("f16/{backend}"), len), |b| {
        b.iter(|| performer.forward(q, k, v).unwrap())
    });
    g.throughput(Throughput::ElementsAndBytes {
        elements: favor_flops(len),
        bytes: elems * 4,
    });
    let view = |x| TensorView::new(shape, x).unwrap();
    let (q, k, v) = (view(&q32), view(&k32), view(&v32));
    g.bench_function(BenchmarkId::new(format!("f32/{backend}"), len), |b| {
        b.iter(|| performer.forward(q, k, v).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = favor, exact, f16_input
}
criterion_main!(benches);
