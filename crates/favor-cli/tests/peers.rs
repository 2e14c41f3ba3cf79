//! `favor import` and `favor run --compat` against fixtures made by the real performer-pytorch
//! 1.1.4 (`scripts/peers/make_state.py`: a PerformerLM's state dict, and `FastAttention`'s
//! outputs with its layer-1 projection).

use std::path::{Path, PathBuf};

use crate::common::{dir, fails, favor, ok};
use favor_npy as npy;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/peers")
        .join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn read(path: &Path) -> (Vec<usize>, Vec<f64>) {
    let a = npy::read(path).unwrap();
    (a.shape.clone(), a.to_f64().unwrap())
}

/// The state dict's own bytes for `name`, read with the safetensors crate.
fn tensor(name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(data("performer_lm.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (t.shape().to_vec(), v)
}

const LAYER1: &str = "performer.net.layers.1.0.fn.fast_attention.projection_matrix";

#[test]
fn import_lists_each_layer_once() {
    let state = data("performer_lm.safetensors");
    let o = favor(&["import", "--from", "performer-pytorch", s(&state)]);
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // The state dict holds each W twice (net. and proj_updater.instance.): listed once.
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[1].starts_with(&format!("1\t{LAYER1}\t(12, 8)\tF32")),
        "{text}"
    );
}

#[test]
fn import_writes_the_state_dicts_matrices() {
    let d = dir("import");
    let state = data("performer_lm.safetensors");
    ok(&[
        "import",
        "--from",
        "performer-pytorch",
        s(&state),
        "--out",
        s(&d),
    ]);
    let one = d.join("one.npy");
    ok(&[
        "import",
        "--from",
        "performer-pytorch",
        s(&state),
        "--layer",
        "1",
        "--out",
        s(&one),
    ]);
    let (shape, want) = tensor(LAYER1);
    for path in [d.join("layer1.npy"), one] {
        let (got_shape, got) = read(&path);
        assert_eq!(got_shape, shape);
        assert!(got.iter().zip(&want).all(|(&g, &w)| g == f64::from(w)));
    }
    let (_, zero) = read(&d.join("layer0.npy"));
    let (_, w0) = tensor("performer.net.layers.0.0.fn.fast_attention.projection_matrix");
    assert!(zero.iter().zip(&w0).all(|(&g, &w)| g == f64::from(w)));
}

/// Max over output rows of ‖favor − peer‖₂ / ‖peer‖₂.
fn max_row_rel(a: &[f64], b: &[f64], dv: usize) -> f64 {
    a.chunks_exact(dv)
        .zip(b.chunks_exact(dv))
        .map(|(x, y)| {
            let num: f64 = x.iter().zip(y).map(|(p, q)| (p - q) * (p - q)).sum();
            let den: f64 = y.iter().map(|q| q * q).sum();
            (num / den).sqrt()
        })
        .fold(0.0, f64::max)
}

#[test]
fn compat_run_equals_performer_pytorch() {
    let d = dir("compat");
    let state = data("performer_lm.safetensors");
    for (causal, peer) in [
        (false, "pt_softmax_bi.npy"),
        (true, "pt_softmax_causal.npy"),
    ] {
        let out = d.join("out.npy");
        let mut args = vec![
            "run",
            "--q",
            "",
            "--k",
            "",
            "--v",
            "",
            "--projection",
            s(&state),
            "--layer",
            "1",
            "--out",
            s(&out),
        ];
        let (q, k, v) = (data("q.npy"), data("k.npy"), data("v.npy"));
        (args[2], args[4], args[6]) = (s(&q), s(&k), s(&v));
        if causal {
            args.push("--causal");
        }
        let (_, want) = read(&data(peer));
        // favor's own definition (no ε, online stabiliser) is not the peer's at these norms.
        ok(&args);
        let own = max_row_rel(&read(&out).1, &want, 8);
        assert!(
            own > 1e-2,
            "causal={causal}: favor's own equals the peer? ({own:e})"
        );
        args.extend(["--compat", "performer-pytorch"]);
        ok(&args);
        // The goal: 2e-5; f32 rounding of both sides is about 1e-6 here.
        let compat = max_row_rel(&read(&out).1, &want, 8);
        assert!(compat <= 2e-5, "causal={causal}: {compat:e}");
    }
}

/// `run --causal --stream --compat performer-pytorch` is the peer's causal-safe variant: its
/// key shift is the max over the keys seen so far, so from the token holding the head's
/// largest key projection on it is the real peer's causal attention (whose shift is that
/// max over the whole sequence) to f32 rounding.
#[test]
fn compat_stream_equals_performer_pytorch_from_the_largest_key_on() {
    let d = dir("compat-stream");
    let state = data("performer_lm.safetensors");
    let (q, k, v) = (data("q.npy"), data("k.npy"), data("v.npy"));
    let out = d.join("out.npy");
    ok(&[
        "run",
        "--q",
        s(&q),
        "--k",
        s(&k),
        "--v",
        s(&v),
        "--projection",
        s(&state),
        "--layer",
        "1",
        "--causal",
        "--stream",
        "--compat",
        "performer-pytorch",
        "--out",
        s(&out),
    ]);
    let (shape, keys) = read(&k);
    let [_, _, l, dim] = shape[..] else {
        panic!("k shape {shape:?}")
    };
    let (wshape, w) = tensor(LAYER1);
    let (m, scale) = (wshape[0], (dim as f64).powf(-0.25));
    let (_, want) = read(&data("pt_softmax_causal.npy"));
    let got = read(&out).1;
    let dv = 8;
    let mut compared = 0;
    for (head, keys) in keys.chunks_exact(l * dim).enumerate() {
        // u = w·k' of every key; the stream's shift reaches the peer's at the argmax.
        let top = |t: usize| -> f64 {
            (0..m)
                .map(|j| {
                    let row = &w[j * dim..(j + 1) * dim];
                    let kt = &keys[t * dim..(t + 1) * dim];
                    scale
                        * row
                            .iter()
                            .zip(kt)
                            .map(|(&a, &b)| f64::from(a) * b)
                            .sum::<f64>()
                })
                .fold(f64::NEG_INFINITY, f64::max)
        };
        let first = (0..l).max_by(|&a, &b| top(a).total_cmp(&top(b))).unwrap();
        let rows = head * l + first..(head + 1) * l;
        let at = |x: &[f64]| x[rows.start * dv..rows.end * dv].to_vec();
        let err = max_row_rel(&at(&got), &at(&want), dv);
        assert!(err <= 2e-5, "head {head}, tokens {first}..: {err:e}");
        // Before it the peer's larger shift (a future key's) weighs its ε term more.
        let early = head * l..head * l + first;
        let at = |x: &[f64]| x[early.start * dv..early.end * dv].to_vec();
        let before = max_row_rel(&at(&got), &at(&want), dv);
        assert!(first == 0 || before > 1e-3, "head {head}: {before:e}");
        compared += rows.len();
    }
    assert!(compared > 0);
}

#[test]
fn compat_and_import_errors_are_one_line() {
    let d = dir("compat-errors");
    let state = data("performer_lm.safetensors");
    let (q, k, v) = (data("q.npy"), data("k.npy"), data("v.npy"));
    let out = d.join("o.npy");
    let base = [
        "run",
        "--q",
        s(&q),
        "--k",
        s(&k),
        "--v",
        s(&v),
        "--out",
        s(&out),
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|a| a.to_string()).collect()
    };
    let cases: [(&[&str], &str); 7] = [
        (&["--stream"], "give --causal too"),
        (
            &["--compat", "torch"],
            "expected performer-pytorch, google-jax or none",
        ),
        (&["--compat", "jax", "--window", "2"], "hybrid"),
        (&["--projection", s(&state)], "pick one with --layer"),
        (
            &["--projection", s(&state), "--layer", "7"],
            "no such layer",
        ),
        (&["--layer", "1"], "--layer picks a layer"),
        (&["--data-normalizer", "maybe"], "expected on or off"),
    ];
    for (extra, want) in cases {
        let args = with(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let e = fails(&args);
        assert!(e.contains(want), "{extra:?}: {e}");
    }
    let e = fails(&["import", "--from", "jax", s(&state)]);
    assert!(e.contains("expected performer-pytorch"), "{e}");
    let e = fails(&["import", "--from", "performer-pytorch", s(&q)]);
    assert!(e.contains("not a safetensors file"), "{e}");
}
