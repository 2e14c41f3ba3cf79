//! Issue 11's host contract, from outside the workspace: one `Performer` serves two threads
//! through `&self`; a stream outlives the `Performer` it came from and steps on another
//! thread; a `[B, S, H, D]` strided view gives the bits of its `[B, H, S, D]` copy.

use std::thread;

use favor_tensor::{Performer, Stream, TensorView};

const B: usize = 2;
const S: usize = 24;
const H: usize = 4;
const D: usize = 16;

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| {
            ((i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) % 2001) as f32 / 2000.0
                - 0.5
        })
        .collect()
}

/// Token `t` of every batch element, read in place from `[B, S, H, D]` memory.
fn token(x: &[f32], t: usize) -> TensorView<'_> {
    let strides = [S * H * D, D, H * D, 1];
    TensorView::with_strides([B, H, 1, D], strides, &x[t * H * D..]).expect("a token view")
}

fn main() {
    let n = B * S * H * D;
    let (q, k, v) = (data(n, 1), data(n, 2), data(n, 3));
    let attn = Performer::builder(D)
        .heads(H)
        .features(64)
        .causal(true)
        .build()
        .expect("a valid layer");

    // `[B, S, H, D]` memory read in place, and the same numbers copied to `[B, H, S, D]`.
    let bshd = |x| TensorView::from_bshd([B, S, H, D], x).expect("a [B, S, H, D] view");
    let copy = |x: &[f32]| {
        let mut out = Vec::with_capacity(n);
        for b in 0..B {
            for h in 0..H {
                for s in 0..S {
                    out.extend_from_slice(&x[((b * S + s) * H + h) * D..][..D]);
                }
            }
        }
        out
    };
    let (qc, kc, vc) = (copy(&q), copy(&k), copy(&v));
    let bhsd = |x| TensorView::new([B, H, S, D], x).expect("a [B, H, S, D] view");

    // Two threads call `forward` on one `&Performer` at once.
    let (strided, copied) = thread::scope(|s| {
        let a = s.spawn(|| attn.forward(bshd(&q), bshd(&k), bshd(&v)));
        let b = s.spawn(|| attn.forward(bhsd(&qc), bhsd(&kc), bhsd(&vc)));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (strided, copied) = (strided.expect("forward"), copied.expect("forward"));
    assert_eq!(
        strided, copied,
        "a strided [B, S, H, D] view must give its copy's bits"
    );

    // A stream that outlives its Performer and moves to another thread.
    let mut stream: Stream = attn.stream(B).expect("a stream");
    drop(attn);
    let last = thread::spawn(move || {
        let mut out = None;
        for t in 0..S {
            out = Some(
                stream
                    .step(token(&q, t), token(&k, t), token(&v, t))
                    .expect("a step"),
            );
        }
        (out.expect("at least one token"), stream.tokens())
    })
    .join()
    .expect("the stream thread");
    assert_eq!(last.1, S as u64);

    // Its last output is causal attention's last row, up to the rounding of another order.
    for b in 0..B {
        for h in 0..H {
            let want = &copied.head(b, h)[(S - 1) * D..];
            for (x, y) in last.0.head(b, h).iter().zip(want) {
                assert!((x - y).abs() < 1e-5, "stream {x} vs forward {y}");
            }
        }
    }
    println!("host check: shared &Performer, owned Stream across threads, [B, S, H, D] views: ok");
}
