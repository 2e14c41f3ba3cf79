//! The favor-simd speed workloads. Run: `cargo bench -p favor-benches`.
//! Throughput is in FLOPs (criterion prints "elem/s"), so compare each line's rate with
//! the `roof` group's rate from the same run.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use favor_benches::*;
use favor_core::*;
use favor_simd::Detected;
use std::hint::black_box;

const LEN: usize = 4096;

fn roof(c: &mut Criterion) {
    let iters = 100_000;
    let flops = fma_roof(1).1 * iters as u64;
    let mut g = c.benchmark_group("roof");
    g.throughput(Throughput::Elements(flops));
    g.bench_function("fma_loop", |b| b.iter(|| fma_roof(black_box(iters))));
    g.finish();
}

fn attention(c: &mut Criterion) {
    let heads = heads(LEN);
    let mut out = vec![0f32; LEN * DIM];
    let mut scratch = vec![0f32; scratch_len()];
    let det = Detected::new();
    let mut g = c.benchmark_group("attention_L4096_8heads");
    g.throughput(Throughput::Elements(favor_flops(LEN)));
    g.sample_size(10);
    let name = Kernels::<f32>::name(&det);
    g.bench_function(format!("bidirectional/{name}"), |b| {
        b.iter(|| bidirectional_all(&det, &heads, LEN, &mut out, &mut scratch))
    });
    g.bench_function(format!("causal_chunked/{name}"), |b| {
        b.iter(|| causal_all(&det, &heads, LEN, &mut out, &mut scratch))
    });
    g.bench_function("bidirectional/scalar", |b| {
        b.iter(|| bidirectional_all(&Scalar, &heads, LEN, &mut out, &mut scratch))
    });
    g.bench_function("causal_chunked/scalar", |b| {
        b.iter(|| causal_all(&Scalar, &heads, LEN, &mut out, &mut scratch))
    });
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
        g.bench_function(format!("{}/seen{seen}", k.name()), |b| {
            b.iter(|| decode_step(streams, &heads, 0, &mut out))
        });
        g.finish();
    });
}

fn decode_all(c: &mut Criterion) {
    for seen in [0, 10_000] {
        decode(c, Detected::new(), seen);
    }
    decode(c, Scalar, 0);
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
    if let Some(avx2) = favor_simd::Avx2::new() {
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

criterion_group!(benches, roof, exp, attention, decode_all);
criterion_main!(benches);
