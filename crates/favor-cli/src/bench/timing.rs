//! Timing one point (warm-up, median of repeated calls) and running lanes on threads.

use std::ops::Range;

/// Decode steps per timed sample. Long enough that spawning the threads of `--threads N` and
/// the states' move to the spawned threads' cores (the restore runs on this thread) are a
/// small share of a sample, as in a server whose threads keep their streams: with 64 steps
/// they held two threads to 1.57–1.66× one thread's rate, with 512 1.82–1.93× (8 heads,
/// d = 64, m = 256; Xeon, two runs each).
pub(super) const DECODE_BATCH: usize = 512;
/// Fewest timed samples per point.
pub(super) const MIN_RUNS: usize = 5;
/// A call at least this long (seconds) is timed 3 times only, its warm-up included.
pub(super) const LONG_CALL_S: f64 = 2.0;
/// Most timed samples per point.
pub(super) const MAX_RUNS: usize = 5000;

/// The median of repeated timings of one point.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    pub(super) secs: f64,
    pub(super) runs: usize,
}

/// Times one point: `call` runs once and returns the seconds of its timed part. One warm-up
/// call, then timed calls for `budget` seconds (at least [`MIN_RUNS`], at most
/// [`MAX_RUNS`]); a warm-up longer than the budget is kept as a sample, and a call longer
/// than [`LONG_CALL_S`] gets 3 samples in all.
pub(super) fn measure(budget: f64, mut call: impl FnMut() -> f64) -> Timing {
    let first = call();
    let mut samples = Vec::new();
    let want = if first >= budget {
        samples.push(first);
        if first >= LONG_CALL_S { 3 } else { MIN_RUNS }
    } else {
        ((budget / first.max(1e-9)) as usize).clamp(MIN_RUNS, MAX_RUNS)
    };
    while samples.len() < want {
        samples.push(call());
    }
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let secs = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    };
    Timing { secs, runs: n }
}

/// Runs `f` on every lane, each lane on its own thread (the first on this one).
pub(super) fn par_run<L: Send>(lanes: &mut [L], f: impl Fn(&mut L) + Sync) {
    let Some((first, rest)) = lanes.split_first_mut() else {
        return;
    };
    if rest.is_empty() {
        return f(first);
    }
    let f = &f;
    std::thread::scope(|s| {
        for lane in rest {
            s.spawn(move || f(lane));
        }
        f(first);
    });
}

/// `n` items split into `parts` contiguous ranges of near-equal size.
pub fn split(n: usize, parts: usize) -> Vec<Range<usize>> {
    (0..parts)
        .map(|i| i * n / parts..(i + 1) * n / parts)
        .collect()
}
