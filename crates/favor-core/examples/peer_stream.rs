//! How far `PeerStream` (a peer's causal attention with the key shift over the keys seen so
//! far: causal-safe, O(1) per token) lies from the peer's own whole-sequence causal attention
//! (`PeerAttention` with `causal(true)`, which equals the real peers to f32 rounding).
//!
//! `cargo run --release -p favor-core --example peer_stream`
//!
//! Inputs as the README's peer table: 4 heads, L = 512, d = 64, m = 256 (orthogonal W), q and
//! k entries N(0,1)·0.3 and N(0,1), v N(0,1), f32, scalar backend. Prints, per peer and
//! regime, the max and mean over rows of ‖stream − peer‖₂ / ‖peer‖₂, for all rows and for the
//! rows from the one holding the head's largest key projection on (where the running max has
//! reached the peer's).

use favor_core::*;

const H: usize = 4;
const L: usize = 512;
const D: usize = 64;
const M: usize = 256;

fn main() {
    let mut w = vec![0f32; M * D];
    projection(ProjectionKind::default(), 0, M, D, &mut w).unwrap();
    println!(
        "| peer | q, k entries | all rows: max / mean | from the largest key on: max / mean |"
    );
    println!("|---|---|---|---|");
    for compat in [Compat::PerformerPytorch, Compat::GoogleJax] {
        for (scale, regime) in [(0.3f32, "N(0,1)·0.3"), (1.0, "N(0,1)")] {
            let mut g = Normals::new(0x5EED_0000 + (scale * 10.0) as u64);
            let mut draw =
                |s: f32| -> Vec<f32> { (0..H * L * D).map(|_| s * g.sample::<f32>()).collect() };
            let (q, k, v) = (draw(scale), draw(scale), draw(1.0));
            let peer = PeerAttention::softmax(compat, &w, M, D)
                .unwrap()
                .causal(true);
            let shape = Shape::new(L, D, D);
            let mut scratch = vec![0f32; peer.scratch_len(shape).unwrap()];
            let (mut all, mut after) = (Vec::new(), Vec::new());
            for h in 0..H {
                let r = |x: &[f32]| x[h * L * D..(h + 1) * L * D].to_vec();
                let (qh, kh, vh) = (r(&q), r(&k), r(&v));
                let mut whole = vec![0f32; L * D];
                peer.run(
                    &Scalar,
                    shape,
                    None,
                    &qh,
                    &kh,
                    &vh,
                    &mut whole,
                    &mut scratch,
                )
                .unwrap();
                // The token whose key holds the head's largest projection.
                let mut top = (f32::NEG_INFINITY, 0);
                for t in 0..L {
                    let u = peer
                        .key_max(&Scalar, &kh[t * D..(t + 1) * D], 1, &mut scratch)
                        .unwrap();
                    if u > top.0 {
                        top = (u, t);
                    }
                }
                let mut buf = vec![0f32; PeerStream::<f32>::buffer_len(M, D).unwrap()];
                let mut stream = PeerStream::new(peer, D, &mut buf).unwrap();
                let mut s2 = vec![0f32; stream.scratch_len()];
                let mut o = vec![0f32; D];
                for t in 0..L {
                    let row = t * D..(t + 1) * D;
                    stream
                        .step(
                            &Scalar,
                            &qh[row.clone()],
                            &kh[row.clone()],
                            &vh[row.clone()],
                            &mut o,
                            &mut s2,
                        )
                        .unwrap();
                    let want = &whole[row];
                    let num: f64 = o
                        .iter()
                        .zip(want)
                        .map(|(a, b)| f64::from(a - b).powi(2))
                        .sum();
                    let den: f64 = want.iter().map(|b| f64::from(*b).powi(2)).sum();
                    let e = (num / den).sqrt();
                    all.push(e);
                    if t >= top.1 {
                        after.push(e);
                    }
                }
            }
            let stats = |x: &[f64]| {
                let max = x.iter().fold(0f64, |a, &b| a.max(b));
                (max, x.iter().sum::<f64>() / x.len() as f64)
            };
            let (a, b) = (stats(&all), stats(&after));
            println!(
                "| {} | {regime} | {:.2e} / {:.2e} | {:.2e} / {:.2e} |",
                compat.name(),
                a.0,
                a.1,
                b.0,
                b.1
            );
        }
    }
}
