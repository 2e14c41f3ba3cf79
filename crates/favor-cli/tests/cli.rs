//! End-to-end tests of the `favor` binary: .npy fixtures in, outputs checked against the
//! library, against `favor exact`, and against an f64 exact-softmax oracle.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use favor_cli::npy;
use favor_core::{ExactOptions, Normals, Scalar, Shape, softmax_attention};
use favor_tensor::{Performer, TensorView};

/// A fresh directory for one test's files.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("favor-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn favor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_favor"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn ok(args: &[&str]) {
    let o = favor(args);
    assert!(
        o.status.success(),
        "favor {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs a command that must fail with exit 2 and one stderr line; returns that line.
fn fails(args: &[&str]) -> String {
    let o = favor(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "favor {args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(
        err.starts_with("favor: ") && !err.contains("panicked"),
        "{err}"
    );
    err
}

fn gaussian(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut g = Normals::new(0xC11_0000 + seed);
    (0..n).map(|_| g.sample::<f32>() * scale).collect()
}

fn write(path: &Path, shape: &[usize], data: &[f32]) -> String {
    npy::write_f32(path, shape, data).unwrap();
    path.to_str().unwrap().to_string()
}

fn read(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let a = npy::read(path).unwrap();
    assert_eq!(a.dtype_name(), "float32");
    (a.shape.clone(), a.to_f32())
}

const L: usize = 40;
const D: usize = 8;

/// q, k, v files of shape (L, D) in `dir`, rows of norm ≈ 1.
fn fixtures(d: &Path, seed: u64) -> [String; 3] {
    let s = 1.0 / (D as f32).sqrt();
    [
        write(&d.join("q.npy"), &[L, D], &gaussian(seed, L * D, s)),
        write(&d.join("k.npy"), &[L, D], &gaussian(seed + 1, L * D, s)),
        write(&d.join("v.npy"), &[L, D], &gaussian(seed + 2, L * D, 1.0)),
    ]
}

#[test]
fn run_equals_the_library() {
    let d = dir("lib");
    let [q, k, v] = fixtures(&d, 1);
    let out = d.join("out.npy");
    for causal in [false, true] {
        let mut args = vec![
            "run",
            "--q",
            &q,
            "--k",
            &k,
            "--v",
            &v,
            "--features",
            "32",
            "--seed",
            "9",
        ];
        if causal {
            args.push("--causal");
        }
        args.extend(["--out", out.to_str().unwrap()]);
        ok(&args);
        let (shape, got) = read(&out);
        assert_eq!(shape, [L, D]);
        let (qd, kd, vd) = (
            read(Path::new(&q)).1,
            read(Path::new(&k)).1,
            read(Path::new(&v)).1,
        );
        let view = |x| TensorView::new([1, 1, L, D], x).unwrap();
        let mut p = Performer::builder(D)
            .features(32)
            .seed(9)
            .causal(causal)
            .build()
            .unwrap();
        let want = p.forward(view(&qd), view(&kd), view(&vd)).unwrap();
        assert_eq!(got, want.data(), "causal {causal}");
    }
}

#[test]
fn exact_matches_an_f64_oracle_and_run_approaches_it() {
    let d = dir("exact");
    let [q, k, v] = fixtures(&d, 2);
    let (ex, fav) = (d.join("exact.npy"), d.join("favor.npy"));
    ok(&[
        "exact",
        "--q",
        &q,
        "--k",
        &k,
        "--v",
        &v,
        "--out",
        ex.to_str().unwrap(),
    ]);
    ok(&[
        "run",
        "--q",
        &q,
        "--k",
        &k,
        "--v",
        &v,
        "--features",
        "4096",
        "--out",
        fav.to_str().unwrap(),
    ]);
    let wide = |p: &str| {
        read(Path::new(p))
            .1
            .iter()
            .map(|&x| f64::from(x))
            .collect::<Vec<_>>()
    };
    let mut oracle = vec![0f64; L * D];
    softmax_attention(
        &Scalar,
        &wide(&q),
        &wide(&k),
        &wide(&v),
        Shape::new(L, D, D),
        &ExactOptions::default(),
        &mut oracle,
    )
    .unwrap();
    let exact = read(&ex).1;
    for (a, b) in exact.iter().zip(&oracle) {
        // f64 accumulation rounded once to f32: half an ulp of values |v| ≲ 4.
        assert!(
            (f64::from(*a) - b).abs() <= 4.0 * f64::from(f32::EPSILON),
            "{a} vs {b}"
        );
    }
    // FAVOR+ with m = 4096 at |q'|, |k'| ≈ 0.6: the relative error is ~ c/√m with c ≈ 1
    // (favor-core's statistics tests pin the rate); 0.1 leaves a wide margin yet fails for
    // a wrong kernel, scale or normaliser.
    let favor = read(&fav).1;
    let num: f64 = favor
        .iter()
        .zip(&oracle)
        .map(|(a, b)| (f64::from(*a) - b).powi(2))
        .sum();
    let den: f64 = oracle.iter().map(|b| b * b).sum();
    assert!(
        (num / den).sqrt() < 0.1,
        "relative error {}",
        (num / den).sqrt()
    );
}

#[test]
fn causal_outputs_do_not_see_the_future() {
    let d = dir("leak");
    let [q, k, v] = fixtures(&d, 3);
    let change_last = |p: &str, name: &str| {
        let (shape, mut x) = read(Path::new(p));
        for e in &mut x[(L - 1) * D..] {
            *e = 3.0 - *e;
        }
        write(&d.join(name), &shape, &x)
    };
    let (q2, k2, v2) = (
        change_last(&q, "q2.npy"),
        change_last(&k, "k2.npy"),
        change_last(&v, "v2.npy"),
    );
    for cmd in ["run", "exact"] {
        let (a, b) = (
            d.join(format!("{cmd}-a.npy")),
            d.join(format!("{cmd}-b.npy")),
        );
        ok(&[
            cmd,
            "--causal",
            "--q",
            &q,
            "--k",
            &k,
            "--v",
            &v,
            "--out",
            a.to_str().unwrap(),
        ]);
        ok(&[
            cmd,
            "--causal",
            "--q",
            &q2,
            "--k",
            &k2,
            "--v",
            &v2,
            "--out",
            b.to_str().unwrap(),
        ]);
        let (a, b) = (read(&a).1, read(&b).1);
        let past = (L - 1) * D;
        assert_eq!(a[..past], b[..past], "{cmd}: a past output changed");
        assert_ne!(a[past..], b[past..], "{cmd}: the last output must change");
    }
}

#[test]
fn exported_projection_reproduces_run_and_batched_shapes_work() {
    let d = dir("proj");
    let (b, h) = (2, 3);
    let n = b * h * L * D;
    let q = write(&d.join("q.npy"), &[b, h, L, D], &gaussian(4, n, 0.3));
    let k = write(&d.join("k.npy"), &[b, h, L, D], &gaussian(5, n, 0.3));
    let v = write(
        &d.join("v.npy"),
        &[b, h, L, 5],
        &gaussian(6, b * h * L * 5, 1.0),
    );
    let w = d.join("w.npy");
    ok(&[
        "projection",
        "--features",
        "24",
        "--dim",
        "8",
        "--seed",
        "11",
        "--projection-kind",
        "iid",
        "--out",
        w.to_str().unwrap(),
    ]);
    assert_eq!(read(&w).0, [24, 8]);
    let (o1, o2) = (d.join("o1.npy"), d.join("o2.npy"));
    ok(&[
        "run",
        "--q",
        &q,
        "--k",
        &k,
        "--v",
        &v,
        "--features",
        "24",
        "--seed",
        "11",
        "--projection-kind",
        "iid",
        "--out",
        o1.to_str().unwrap(),
    ]);
    ok(&[
        "run",
        "--q",
        &q,
        "--k",
        &k,
        "--v",
        &v,
        "--projection",
        w.to_str().unwrap(),
        "--out",
        o2.to_str().unwrap(),
    ]);
    let (s1, a) = read(&o1);
    assert_eq!(s1, [b, h, L, 5]);
    assert_eq!(a, read(&o2).1);
}

#[test]
fn half_and_double_inputs_are_accepted() {
    let d = dir("dtypes");
    let [q, k, v] = fixtures(&d, 7);
    let (qd, kd, vd) = (
        read(Path::new(&q)).1,
        read(Path::new(&k)).1,
        read(Path::new(&v)).1,
    );
    // f16 files of values that f16 represents exactly give the f32 result bit for bit.
    let h = |x: &[f32], name: &str| {
        let hx: Vec<half::f16> = x.iter().map(|&a| half::f16::from_f32(a)).collect();
        let p = d.join(name);
        std::fs::write(&p, npy::encode_f16(&[L, D], &hx)).unwrap();
        let back: Vec<f32> = hx.iter().map(|a| a.to_f32()).collect();
        (
            p.to_str().unwrap().to_string(),
            write(&d.join(format!("w{name}")), &[L, D], &back),
        )
    };
    let ((hq, wq), (hk, wk), (hv, wv)) = (h(&qd, "q16.npy"), h(&kd, "k16.npy"), h(&vd, "v16.npy"));
    let (o1, o2) = (d.join("o1.npy"), d.join("o2.npy"));
    ok(&[
        "run",
        "--q",
        &hq,
        "--k",
        &hk,
        "--v",
        &hv,
        "--out",
        o1.to_str().unwrap(),
    ]);
    ok(&[
        "run",
        "--q",
        &wq,
        "--k",
        &wk,
        "--v",
        &wv,
        "--out",
        o2.to_str().unwrap(),
    ]);
    assert_eq!(read(&o1).1, read(&o2).1);
    // f64 files round to the same f32 inputs.
    let dq = d.join("q64.npy");
    let wide: Vec<f64> = qd.iter().map(|&a| f64::from(a)).collect();
    std::fs::write(&dq, npy::encode_f64(&[L, D], &wide)).unwrap();
    let o3 = d.join("o3.npy");
    let o4 = d.join("o4.npy");
    ok(&[
        "run",
        "--q",
        dq.to_str().unwrap(),
        "--k",
        &k,
        "--v",
        &v,
        "--out",
        o3.to_str().unwrap(),
    ]);
    ok(&[
        "run",
        "--q",
        &q,
        "--k",
        &k,
        "--v",
        &v,
        "--out",
        o4.to_str().unwrap(),
    ]);
    assert_eq!(read(&o3).1, read(&o4).1);
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let d = dir("bad");
    let [q, k, v] = fixtures(&d, 8);
    let out = d.join("o.npy");
    let out = out.to_str().unwrap();
    let missing = d.join("missing.npy");
    let missing = missing.to_str().unwrap();
    let e = fails(&["run", "--q", missing, "--k", &k, "--v", &v, "--out", out]);
    assert!(e.contains("missing.npy"), "{e}");
    // An int32 file.
    let mut ints = npy::encode_f32(&[L, D], &vec![0.0; L * D]);
    let pos = ints.windows(3).position(|w| w == b"<f4").unwrap();
    ints[pos..pos + 3].copy_from_slice(b"<i4");
    let ip = d.join("ints.npy");
    std::fs::write(&ip, ints).unwrap();
    let e = fails(&[
        "run",
        "--q",
        ip.to_str().unwrap(),
        "--k",
        &k,
        "--v",
        &v,
        "--out",
        out,
    ]);
    assert!(e.contains("ints.npy") && e.contains("<i4"), "{e}");
    // Truncated.
    let bytes = std::fs::read(&q).unwrap();
    let tp = d.join("trunc.npy");
    std::fs::write(&tp, &bytes[..bytes.len() - 5]).unwrap();
    let e = fails(&[
        "run",
        "--q",
        tp.to_str().unwrap(),
        "--k",
        &k,
        "--v",
        &v,
        "--out",
        out,
    ]);
    assert!(e.contains("trunc.npy") && e.contains("truncated"), "{e}");
    // Mismatched shapes: k with another d, v with another length, rank 3.
    let k9 = write(&d.join("k9.npy"), &[L, D + 1], &vec![0.1; L * (D + 1)]);
    let e = fails(&["run", "--q", &q, "--k", &k9, "--v", &v, "--out", out]);
    assert!(e.contains("k9.npy") && e.contains("q.npy"), "{e}");
    let v5 = write(&d.join("v5.npy"), &[L - 1, D], &vec![0.1; (L - 1) * D]);
    let e = fails(&["exact", "--q", &q, "--k", &k, "--v", &v5, "--out", out]);
    assert!(e.contains("v5.npy"), "{e}");
    let r3 = write(&d.join("r3.npy"), &[1, L, D], &vec![0.1; L * D]);
    assert!(fails(&["run", "--q", &r3, "--k", &k, "--v", &v, "--out", out]).contains("rank 3"));
    // Causal needs as many keys as queries.
    let k_short = write(&d.join("ks.npy"), &[L - 1, D], &vec![0.1; (L - 1) * D]);
    let e = fails(&[
        "run", "--causal", "--q", &q, "--k", &k_short, "--v", &v5, "--out", out,
    ]);
    assert!(e.contains("causal"), "{e}");
    // NaN in an input.
    let mut nan = vec![0.1f32; L * D];
    nan[17] = f32::NAN;
    let np = write(&d.join("nan.npy"), &[L, D], &nan);
    assert!(fails(&["run", "--q", &np, "--k", &k, "--v", &v, "--out", out]).contains("nan.npy"));
    // f64 values that do not fit f32: refused at f32, with the way out named.
    let huge: Vec<f64> = vec![1e300; L * D];
    let hp = d.join("huge64.npy");
    std::fs::write(&hp, npy::encode_f64(&[L, D], &huge)).unwrap();
    let e = fails(&[
        "run",
        "--q",
        &q,
        "--k",
        &k,
        "--v",
        hp.to_str().unwrap(),
        "--out",
        out,
    ]);
    assert!(
        e.contains("huge64.npy") && e.contains("--precision f64"),
        "{e}"
    );
    // At f64 the attention is fine, but its f32 output would be infinite: refused.
    let e = fails(&[
        "run",
        "--precision",
        "f64",
        "--q",
        &q,
        "--k",
        &k,
        "--v",
        hp.to_str().unwrap(),
        "--out",
        out,
    ]);
    assert!(e.contains("huge64.npy") && e.contains("f32 output"), "{e}");
    // --projection fixes W: a seed or a kind would be silently ignored.
    let w = d.join("w.npy");
    ok(&[
        "projection",
        "--dim",
        &D.to_string(),
        "--features",
        "16",
        "--out",
        w.to_str().unwrap(),
    ]);
    fails(&[
        "run",
        "--q",
        &q,
        "--k",
        &k,
        "--v",
        &v,
        "--projection",
        w.to_str().unwrap(),
        "--seed",
        "3",
        "--out",
        out,
    ]);
    // Bad options.
    fails(&[
        "run", "--q", &q, "--k", &k, "--v", &v, "--out", out, "--kernel", "sigmoid",
    ]);
    fails(&[
        "run",
        "--q",
        &q,
        "--k",
        &k,
        "--v",
        &v,
        "--out",
        out,
        "--features",
        "-3",
    ]);
    fails(&[
        "run",
        "--q",
        &q,
        "--k",
        &k,
        "--v",
        &v,
        "--out",
        out,
        "--frobnicate",
    ]);
    fails(&["run", "--q", &q, "--k", &k, "--v", &v]);
    fails(&[
        "run",
        "--q",
        &q,
        "--k",
        &k,
        "--v",
        &v,
        "--out",
        out,
        "--projection",
        &k9,
    ]);
    fails(&["projection", "--dim", "0", "--out", out]);
    fails(&["nonsense"]);
    assert!(!Path::new(out).exists(), "no output is written on error");
}
