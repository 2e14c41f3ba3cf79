//! One long head on several threads: favor-tensor splits a bidirectional head longer than
//! 1024 rows into parts (key parts into states merged in order, query parts from the merged
//! state), so a single head uses the thread pool; causal heads run whole (their rows show
//! favor-tensor's overhead). First the control: two independent heads through favor-core's
//! plan, one after the other against one per scoped thread, at L = 1024 and 16384: what two
//! threads give this machine on the same work without a split. Then, in one run with the
//! variants alternating call by call (medians and ranges of `REPS` rounds), a batch of 4 × 8
//! heads (L = 1024, no split: heads over the pool) on one thread and on the pool, and:
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
    control(reps, 1024);
    control(reps, 16384);
    batch(reps);
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

/// The control: what two threads give this machine on the same work without a split or a
/// merge: two independent heads of `l` rows through favor-core's plan, one after the other
/// against one per thread (`std::thread::scope`).
fn control(reps: usize, l: usize) {
    let w = {
        let layer = Performer::builder(D).features(M).build().expect("layer");
        layer.projection_f32()
    };
    let phi = PositiveSoftmax::new(&w, M, D).expect("map");
    let opts = Options {
        block: 256,
        ..Options::default()
    };
    let plan = Plan::new(
        PlanKind::Bidirectional,
        favor_simd::detected(),
        &phi,
        Shape::new(l, D, D),
        opts,
    )
    .expect("plan");
    let inputs: Vec<[Vec<f32>; 3]> = (0..2u64)
        .map(|h| [4, 5, 6].map(|s| data(l * D, s + 3 * h, 1.0)))
        .collect();
    // Each variant has its own outputs and scratch (the closures borrow them mutably).
    let bufs = || {
        (
            vec![vec![0f32; l * D]; 2],
            vec![vec![0f32; plan.scratch_len()]; 2],
        )
    };
    let ((mut outs1, mut scratch1), (mut outs2, mut scratch2)) = (bufs(), bufs());
    let head = |x: &[Vec<f32>; 3], out: &mut Vec<f32>, scratch: &mut Vec<f32>| {
        plan.run(&x[0], &x[1], &x[2], out, scratch).expect("run");
        black_box(out);
    };
    let mut one = || {
        for ((x, o), s) in inputs.iter().zip(&mut outs1).zip(&mut scratch1) {
            head(x, o, s);
        }
    };
    let mut two = || {
        std::thread::scope(|sc| {
            for ((x, o), s) in inputs.iter().zip(&mut outs2).zip(&mut scratch2) {
                sc.spawn(move || head(x, o, s));
            }
        });
    };
    let r = round_robin(reps, 1, &mut [&mut one, &mut two]);
    println!(
        "control: 2 heads x L = {l} bidirectional (favor-core), one after the other {:.2} ms, \
         one per thread {:.2} ms: {:.2}x",
        r[0][0] * 1e3,
        r[1][0] * 1e3,
        r[0][0] / r[1][0]
    );
}

/// Heads over the pool (no split): a `[4, 8, 1024, 64]` forward (32 independent heads of
/// 1024 rows), bidirectional and causal, with `parallel(false)` against the pool.
fn batch(reps: usize) {
    let (b, h, l) = (4, 8, 1024);
    let n = b * h * l * D;
    let (q, k, v) = (data(n, 7, 1.0), data(n, 8, 1.0), data(n, 9, 1.0));
    let view = |x| TensorView::new([b, h, l, D], x).expect("a [4, 8, L, D] view");
    let (tq, tk, tv) = (view(&q[..]), view(&k[..]), view(&v[..]));
    for causal in [false, true] {
        let layer = |parallel| {
            Performer::builder(D)
                .heads(h)
                .features(M)
                .causal(causal)
                .parallel(parallel)
                .build()
                .expect("layer")
        };
        let (serial, pool) = (layer(false), layer(true));
        let mut one = || {
            black_box(serial.forward(tq, tk, tv).expect("forward"));
        };
        let mut many = || {
            black_box(pool.forward(tq, tk, tv).expect("forward"));
        };
        let r = round_robin(reps, 1, &mut [&mut one, &mut many]);
        println!(
            "batch 4 x 8 heads x L = {l} {}: one thread {:.2} ms, pool {:.2} ms: {:.2}x",
            if causal { "causal" } else { "bidirectional" },
            r[0][0] * 1e3,
            r[1][0] * 1e3,
            r[0][0] / r[1][0]
        );
    }
}

/// Threads in rayon's global pool, as favor-tensor sees it.
fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
