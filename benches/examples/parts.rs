//! Times each kernel at the shapes one head of the bidirectional workload uses.
use favor_benches::*;
use favor_core::*;
use std::time::Instant;
fn t<F: FnMut()>(mut f: F) -> f64 {
    f();
    let s = Instant::now();
    for _ in 0..20 {
        f();
    }
    s.elapsed().as_secs_f64() / 20.0 * 1e3
}
fn main() {
    let k = favor_simd::Detected::new();
    let hs = heads(4096);
    let h = &hs[0];
    let (b, m, d) = (BIDIR_BLOCK, FEATURES, DIM);
    let p = ProjectionRef {
        w: &h.w,
        wt: Some(&h.wt),
        features: m,
        dim: d,
    };
    let mut out = vec![0f32; b * m];
    let mut mx = vec![0f32; b];
    let blocks = 4096 / b * 2;
    let tp = t(|| {
        for i in 0..blocks / 2 {
            let x = MatRef::row_major(&h.q[i * b * d..(i + 1) * b * d], b, d);
            k.project(x, p, 0.35, MatMut::row_major(&mut out, b, m), &mut mx);
            let x = MatRef::row_major(&h.k[i * b * d..(i + 1) * b * d], b, d);
            k.project(x, p, 0.35, MatMut::row_major(&mut out, b, m), &mut mx);
        }
    });
    let te = t(|| {
        for _ in 0..blocks {
            for r in 0..b {
                k.exp_shift(&mut out[r * m..(r + 1) * m], 0.0);
                out[r * m] = 0.1;
            }
        }
    });
    let mut s = vec![0f32; m * d];
    let tt = t(|| {
        for i in 0..blocks / 2 {
            let v = MatRef::row_major(&h.v[i * b * d..(i + 1) * b * d], b, d);
            let feats = MatRef::row_major(&out, b, m);
            k.gemm(MatMut::row_major(&mut s, m, d), Accum::Add, feats.t(), v);
        }
    });
    let mut o = vec![0f32; b * d];
    let tn = t(|| {
        for _ in 0..blocks / 2 {
            let (feats, sm) = (MatRef::row_major(&out, b, m), MatRef::row_major(&s, m, d));
            k.gemm(MatMut::row_major(&mut o, b, d), Accum::Overwrite, feats, sm);
        }
    });
    let tr = t(|| {
        for _ in 0..blocks {
            for r in 0..b {
                k.scale(0.5, &mut out[r * m..(r + 1) * m]);
            }
        }
    });
    println!(
        "per head (ms): project {tp:.2}, exp rows {te:.2}, gemm_tn {tt:.2}, gemm_nn {tn:.2}, one per-row pass {tr:.2}"
    );
    let fl = favor_flops(4096) as f64 / 8.0;
    println!(
        "model flops per head {:.0} M -> at roof 170 GFLOP/s: {:.2} ms",
        fl / 1e6,
        fl / 170e9 * 1e3
    );
}
