//! Hybrid attention's cost against FAVOR+ m = 256 and tiled exact attention, one head at
//! MiniLM's shape (d = dv = 32), through favor-core's plans on one thread, the variants
//! alternating call by call (medians and ranges of `REPS` rounds): the README's MiniLM
//! table measures the same ratio inside the model.
//!
//! `cargo run --release -p favor-benches --features examples --example hybrid_cost [-- REPS]`

use std::hint::black_box;

use favor_benches::{normal_data as data, round_robin};
use favor_core::{
    HybridShape, Options, Plan, PlanKind, PositiveSoftmax, ProjectionKind, Shape, projection,
    softmax_attention_tiled, softmax_attention_tiled_scratch_len,
};

const D: usize = 32;

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .map_or(15, |r| r.parse().expect("REPS: a count"));
    let kernels = favor_simd::detected();
    for l in [256, 512, 1024] {
        let (q, k, v) = (
            data(l * D, 1, 1.0),
            data(l * D, 2, 1.0),
            data(l * D, 3, 1.0),
        );
        let shape = Shape::new(l, D, D);
        let mut configs: Vec<(String, usize, Option<HybridShape>)> =
            vec![("favor m=256".into(), 256, None)];
        for (w, m) in [(32, 64), (64, 64), (96, 32), (128, 32), (192, 32)] {
            if 2 * w < l {
                configs.push((
                    format!("hybrid w={w} m={m}"),
                    m,
                    Some(HybridShape {
                        window: w,
                        sinks: 1,
                    }),
                ));
            }
        }
        let ws: Vec<Vec<f32>> = configs
            .iter()
            .map(|(_, m, _)| {
                let mut w = vec![0f32; m * D];
                projection(ProjectionKind::default(), 7, *m, D, &mut w).expect("projection");
                w
            })
            .collect();
        let maps: Vec<PositiveSoftmax<'_, f32>> = configs
            .iter()
            .zip(&ws)
            .map(|((_, m, _), w)| PositiveSoftmax::new(w, *m, D).expect("map"))
            .collect();
        let plans: Vec<_> = configs
            .iter()
            .zip(&maps)
            .map(|((_, _, h), phi)| {
                let opts = Options {
                    block: if h.is_some() { 32 } else { 256 }.min(l),
                    ..Options::default()
                };
                let plan =
                    Plan::new(PlanKind::Bidirectional, kernels, phi, shape, opts).expect("plan");
                match h {
                    Some(h) => plan.with_hybrid(*h).expect("hybrid"),
                    None => plan,
                }
            })
            .collect();
        let mut bufs: Vec<(Vec<f32>, Vec<f32>)> = plans
            .iter()
            .map(|p| (vec![0f32; l * D], vec![0f32; p.scratch_len()]))
            .collect();
        let mut exact_out = vec![0f32; l * D];
        let mut exact_scratch = vec![0f32; softmax_attention_tiled_scratch_len(64).expect("len")];
        let mut fs: Vec<Box<dyn FnMut()>> = Vec::new();
        for (plan, (out, scratch)) in plans.iter().zip(bufs.iter_mut()) {
            let (q, k, v) = (&q, &k, &v);
            fs.push(Box::new(move || {
                plan.run(q, k, v, out, scratch).expect("run");
                black_box(&out);
            }));
        }
        {
            let (q, k, v) = (&q, &k, &v);
            let (out, scratch) = (&mut exact_out, &mut exact_scratch);
            fs.push(Box::new(move || {
                let opts = favor_core::ExactOptions::default();
                softmax_attention_tiled(&kernels, q, k, v, shape, &opts, 64, out, scratch)
                    .expect("exact");
                black_box(&out);
            }));
        }
        let mut refs: Vec<&mut dyn FnMut()> = fs.iter_mut().map(|f| &mut **f as _).collect();
        let r = round_robin(reps, 3, &mut refs);
        println!("L = {l}");
        let labels = configs
            .iter()
            .map(|c| c.0.clone())
            .chain(["exact (tiled)".into()]);
        for (label, t) in labels.zip(&r) {
            println!(
                "  {label:<20} {:>8.1} µs [{:.1}, {:.1}]  {:.2}× favor m=256",
                t[0] * 1e6,
                t[1] * 1e6,
                t[2] * 1e6,
                t[0] / r[0][0]
            );
        }
    }
}
