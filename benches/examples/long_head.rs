//! One long head on several threads: favor-tensor splits a head longer than 1024 rows into
//! parts (bidirectional: key parts into states merged in order, query parts from the merged
//! state; causal: each part started from the merged sums of the parts before it), so a
//! single head uses the thread pool. Times, in one run with the variants alternating call by
//! call (medians and ranges of `REPS` rounds):
//! - `unsplit`: favor-core's plan on the whole head, one thread (the baseline);
//! - `parts, 1 thread`: favor-tensor with `parallel(false)` (the split's own overhead);
//! - `parts, pool`: favor-tensor on rayon's pool (`RAYON_NUM_THREADS`, default one per CPU).
//!
//! One head, d = dv = 64, m = 256, f32, the detected backend, L = 4096 and 16384.
//!
//! `cargo run --release -p favor-benches --features examples --example long_head [-- REPS]`

use std::hint::black_box;

use favor_benches::{normal_data as data, round_robin};
use favor_core::{Options, Plan, PlanKind, PositiveSoftmax, Shape};
use favor_tensor::{Performer, TensorView};

const D: usize = 64;
const M: usize = 256;

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .map_or(9, |r| r.parse().expect("REPS: a count"));
    let threads = rayon_threads();
    println!("one head, d = dv = {D}, m = {M}, f32; pool of {threads} threads; {reps} rounds");
    println!(
        "{:<14} {:>6} {:>22} {:>22} {:>22} {:>16} {:>16}",
        "workload",
        "L",
        "unsplit ms",
        "parts, 1 thread ms",
        "parts, pool ms",
        "1 thread/unsplit",
        "unsplit/pool"
    );
    control(reps);
    for causal in [false, true] {
        for l in [1024, 4096, 16384] {
            let (q, k, v) = (
                data(l * D, 1, 1.0),
                data(l * D, 2, 1.0),
                data(l * D, 3, 1.0),
            );
            let layer = |parallel| {
                Performer::builder(D)
                    .features(M)
                    .causal(causal)
                    .parallel(parallel)
                    .build()
                    .expect("layer")
            };
            let (serial, pool) = (layer(false), layer(true));
            let (tq, tk, tv) = (view(l, &q), view(l, &k), view(l, &v));

            // favor-core on the whole head with the same W, block and backend.
            let w = serial.projection_f32();
            let phi = PositiveSoftmax::new(&w, M, D).expect("map");
            let (kind, block) = if causal {
                (PlanKind::CausalChunked, favor_tensor::DEFAULT_CHUNK)
            } else {
                (PlanKind::Bidirectional, 256)
            };
            let opts = Options {
                block,
                ..Options::default()
            };
            let kernels = favor_simd::detected();
            let plan = Plan::new(kind, kernels, &phi, Shape::new(l, D, D), opts).expect("plan");
            let mut scratch = vec![0f32; plan.scratch_len()];
            let mut out = vec![0f32; l * D];

            let mut unsplit = || {
                plan.run(&q, &k, &v, &mut out, &mut scratch).expect("run");
                black_box(&out);
            };
            let mut one = || {
                black_box(serial.forward(tq, tk, tv).expect("forward"));
            };
            let mut many = || {
                black_box(pool.forward(tq, tk, tv).expect("forward"));
            };
            let r = round_robin(reps, 1, &mut [&mut unsplit, &mut one, &mut many]);
            let ms =
                |x: [f64; 3]| format!("{:.2} [{:.2}, {:.2}]", x[0] * 1e3, x[1] * 1e3, x[2] * 1e3);
            println!(
                "{:<14} {:>6} {:>22} {:>22} {:>22} {:>16.2} {:>16.2}",
                if causal { "causal" } else { "bidirectional" },
                l,
                ms(r[0]),
                ms(r[1]),
                ms(r[2]),
                r[1][0] / r[0][0],
                r[0][0] / r[2][0],
            );
        }
    }
}

fn view(l: usize, x: &[f32]) -> TensorView<'_> {
    TensorView::new([1, 1, l, D], x).expect("a [1, 1, L, D] view")
}

/// The control: what the pool gives when the work splits without a merge, two heads of 1024
/// rows (no parts) in parallel against one after the other.
fn control(reps: usize) {
    let (h, l) = (2, 1024);
    let (q, k, v) = (
        data(h * l * D, 4, 1.0),
        data(h * l * D, 5, 1.0),
        data(h * l * D, 6, 1.0),
    );
    let layer = |parallel| {
        Performer::builder(D)
            .heads(h)
            .features(M)
            .parallel(parallel)
            .build()
            .expect("layer")
    };
    let (serial, pool) = (layer(false), layer(true));
    let views = || {
        let v4 = |x| TensorView::new([1, h, l, D], x).expect("view");
        (v4(&q[..]), v4(&k[..]), v4(&v[..]))
    };
    let mut one = || {
        let (a, b, c) = views();
        black_box(serial.forward(a, b, c).expect("forward"));
    };
    let mut many = || {
        let (a, b, c) = views();
        black_box(pool.forward(a, b, c).expect("forward"));
    };
    let r = round_robin(reps, 1, &mut [&mut one, &mut many]);
    println!(
        "control: 2 heads x L = 1024 bidirectional, heads one after the other {:.2} ms, on the pool {:.2} ms: {:.2}x",
        r[0][0] * 1e3,
        r[1][0] * 1e3,
        r[0][0] / r[1][0]
    );
}

/// Threads in rayon's global pool, as favor-tensor sees it.
fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
