//! The README speed table's workloads under criterion. Run:
//! `cargo bench -p favor-benches --bench workloads`.
//!
//! | group | what | elements (per iteration) |
//! |---|---|---|
//! | `roof` | [`fma_roof`] (widest ISA) and [`fma_roof_avx2`] (8-lane AVX2+FMA, where present) | FLOPs |
//! | `decode_step_8heads` | one token through all 8 heads' favor-core [`Stream::step`] after 0 and 10 000 tokens (detected and forced AVX2 backends; scalar at 0), and through `favor_tensor::Stream::step_into` (the default projection, and a SORF W's structured form, `structured_projection`: `tensor_stream_sorf`) | FLOPs 8·H·m·d |
//! | `exp_4096` | `exp_shift` of 4096 values in [-80, 80] (detected, AVX2) against `libm::expf`, a copy of the input included | elements |
//!
//! The attention workloads against L are in `attention.rs`, the kernels in `kernels.rs`.
//! Compare each line's FLOP rate with the `roof` group's rate from the same run.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use favor_benches::*;
use favor_core::*;
use favor_simd::Detected;
use std::hint::black_box;
use std::time::Duration;

fn roof(c: &mut Criterion) {
    let iters = 100_000;
    let mut g = c.benchmark_group("roof");
    g.throughput(Throughput::Elements(fma_roof(1).1 * iters as u64));
    g.bench_function("fma_loop", |b| b.iter(|| fma_roof(black_box(iters))));
    #[cfg(target_arch = "x86_64")]
    if let Some((_, flops)) = fma_roof_avx2(1) {
        g.throughput(Throughput::Elements(flops * iters as u64));
        g.bench_function("fma_loop_avx2", |b| {
            b.iter(|| fma_roof_avx2(black_box(iters)))
        });
    }
    g.finish();
}

fn decode<K: Kernels<f32>>(c: &mut Criterion, k: K, seen: usize) {
    let heads = heads(1);
    let mut out = vec![0f32; DIM];
    with_streams(k, &heads, |streams| {
        for _ in 0..seen {
            for (s, h) in streams.iter_mut().zip(&heads) {
                s.push(&h.k, &h.v).unwrap();
            }
        }
        let mut g = c.benchmark_group("decode_step_8heads");
        g.throughput(Throughput::Elements(favor_flops(1)));
        g.bench_function(BenchmarkId::new(k.name(), format!("seen{seen}")), |b| {
            b.iter(|| decode_step(streams, &heads, 0, &mut out))
        });
        g.finish();
    });
}

/// The same step through the tensor API: one `[1, 8, 1, 64]` token, no allocation; with
/// `Projection::Sorf` the maps project with W's structured form (no W read per token).
fn decode_tensor(c: &mut Criterion, projection: favor_tensor::Projection, seen: usize) {
    let hs = heads(1);
    let token = |pick: fn(&Head) -> &[f32]| -> Vec<f32> {
        hs.iter().flat_map(|h| pick(h).iter().copied()).collect()
    };
    let (q, k, v) = (token(|h| &h.q), token(|h| &h.k), token(|h| &h.v));
    let shape = [1, HEADS, 1, DIM];
    let view = |x| favor_tensor::TensorView::new(shape, x).unwrap();
    let (q, k, v) = (view(&q), view(&k), view(&v));
    let performer = favor_tensor::Performer::builder(DIM)
        .heads(HEADS)
        .features(FEATURES)
        .projection(projection)
        .structured_projection(projection == favor_tensor::Projection::Sorf)
        .causal(true)
        .build()
        .unwrap();
    let mut stream = performer.stream(1).unwrap();
    let mut out = vec![0f32; HEADS * DIM];
    for _ in 0..seen {
        stream.step_into(q, k, v, &mut out).unwrap();
    }
    let mut g = c.benchmark_group("decode_step_8heads");
    g.throughput(Throughput::Elements(favor_flops(1)));
    let sorf = if projection == favor_tensor::Projection::Sorf {
        "_sorf"
    } else {
        ""
    };
    let id = format!("tensor_stream{sorf}/{}", performer.backend_name());
    g.bench_function(BenchmarkId::new(id, format!("seen{seen}")), |b| {
        b.iter(|| stream.step_into(q, k, v, &mut out).unwrap())
    });
    g.finish();
}

fn decode_all(c: &mut Criterion) {
    for seen in [0, 10_000] {
        decode(c, Detected::new(), seen);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(avx2) = favor_simd::Avx2::new()
        && name(&Detected::new()) != "avx2"
    {
        for seen in [0, 10_000] {
            decode(c, avx2, seen);
        }
    }
    decode(c, Scalar, 0);
    for projection in [
        favor_tensor::Projection::default(),
        favor_tensor::Projection::Sorf,
    ] {
        for seen in [0, 10_000] {
            decode_tensor(c, projection, seen);
        }
    }
}

fn exp(c: &mut Criterion) {
    let x: Vec<f32> = (0..4096)
        .map(|i| (i as f32 / 4096.0 - 0.5) * 160.0)
        .collect();
    let mut y = x.clone();
    let det = Detected::new();
    let mut g = c.benchmark_group("exp_4096");
    g.throughput(Throughput::Elements(x.len() as u64));
    g.bench_function(format!("vector/{}", Kernels::<f32>::name(&det)), |b| {
        b.iter(|| {
            y.copy_from_slice(&x);
            det.exp_shift(black_box(&mut y), 0.0);
        })
    });
    #[cfg(target_arch = "x86_64")]
    if let Some(avx2) = favor_simd::Avx2::new()
        && name(&det) != "avx2"
    {
        g.bench_function("vector/avx2", |b| {
            b.iter(|| {
                y.copy_from_slice(&x);
                avx2.exp_shift(black_box(&mut y), 0.0);
            })
        });
    }
    g.bench_function("libm_expf", |b| {
        b.iter(|| {
            y.copy_from_slice(&x);
            for v in black_box(&mut y).iter_mut() {
                *v = libm::expf(*v);
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = roof, exp, decode_all
}
criterion_main!(benches);
