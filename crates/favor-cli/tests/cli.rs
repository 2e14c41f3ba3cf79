//! End-to-end tests of the `favor` binary: .npy fixtures in, outputs checked against the
//! library, against `favor exact`, and against an f64 exact-softmax oracle.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::{dir, exit_2, fails, favor, ok, write};

use favor_core::{ExactOptions, Normals, Scalar, Shape, softmax_attention};
use favor_npy as npy;
use favor_tensor::{Kernel, Performer, TensorView};

fn gaussian(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut g = Normals::new(0xC11_0000 + seed);
    (0..n).map(|_| g.sample::<f32>() * scale).collect()
}

fn read(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let a = npy::read(path).unwrap();
    assert_eq!(a.dtype_name(), "float32");
    (a.shape.clone(), a.to_f32().unwrap())
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

/// `favor run` equals the library's layer bit for bit: plain FAVOR+ and hybrid attention,
/// bidirectional and causal, and with `--kernel gerf|saderf|favor#` (bidirectional: a causal
/// run with a fitted kernel is one line and exit 2), whose outputs differ from SM+'s.
#[test]
fn run_equals_the_library() {
    let d = dir("lib");
    let [q, k, v] = fixtures(&d, 1);
    let out = d.join("out.npy");
    let (qd, kd, vd) = (
        read(Path::new(&q)).1,
        read(Path::new(&k)).1,
        read(Path::new(&v)).1,
    );
    let view = |x| TensorView::new([1, 1, L, D], x).unwrap();
    let mut softmax = Vec::new();
    // Plain FAVOR+, and hybrid attention (window 3, one sink), each way.
    let configs = [(false, false), (true, false), (false, true), (true, true)];
    for kernel in [None, Some("gerf"), Some("saderf"), Some("favor#")] {
        for (i, &(causal, hybrid)) in configs.iter().enumerate() {
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
            if let Some(name) = kernel {
                args.extend(["--kernel", name]);
            }
            if causal {
                args.push("--causal");
            }
            if hybrid {
                args.extend(["--window", "3", "--sinks", "1"]);
            }
            args.extend(["--out", out.to_str().unwrap()]);
            if kernel.is_some() && causal {
                let err = fails(&args);
                assert!(err.contains("causal"), "{err}");
                continue;
            }
            ok(&args);
            let (shape, got) = read(&out);
            assert_eq!(shape, [L, D]);
            let kind: Kernel = kernel.map_or(Kernel::default(), |k| k.parse().unwrap());
            let mut b = Performer::builder(D)
                .features(32)
                .seed(9)
                .causal(causal)
                .kernel(kind);
            if hybrid {
                b = b.window(3).sinks(1);
            }
            let want = b.build().unwrap().forward(view(&qd), view(&kd), view(&vd));
            let what = format!("{kernel:?} causal {causal} hybrid {hybrid}");
            assert_eq!(got, want.unwrap().data(), "{what}");
            match kernel {
                None => softmax.push(got),
                Some(_) => assert_ne!(got, softmax[i], "{what} is not SM+"),
            }
        }
    }
}

/// `favor run --window W` with W ≥ L weighs every key exactly: it equals `favor exact` within
/// f32 rounding, both ways. The budget: each weight's log carries the d-term dot product's
/// and the shift's rounding (δ ≤ γ_{d+2}·τ|q||k| + 4u(τ|q||k| + 1)), sums of L terms add
/// γ_L, so the output moves by (δ + 2γ_{L+2})(max|v| + |out|); `favor exact` rounds once more.
/// `--window 0` (only the diagonal exact) is further from exact than that.
#[test]
fn run_with_a_covering_window_equals_exact() {
    let d = dir("window");
    let [q, k, v] = fixtures(&d, 4);
    let (ex, hy) = (d.join("exact.npy"), d.join("hybrid.npy"));
    let (qd, kd, vd) = (
        read(Path::new(&q)).1,
        read(Path::new(&k)).1,
        read(Path::new(&v)).1,
    );
    let u = f64::from(f32::EPSILON) / 2.0;
    let gamma = |n: usize| n as f64 * u / (1.0 - n as f64 * u);
    let norm = |x: &[f32]| {
        x.chunks(D)
            .map(|r| r.iter().map(|e| f64::from(*e).powi(2)).sum::<f64>().sqrt())
            .fold(0f64, f64::max)
    };
    let tqk = norm(&qd) * norm(&kd) / (D as f64).sqrt();
    let delta = gamma(D + 2) * tqk + 4.0 * u * (tqk + 1.0);
    let vmax = vd.iter().fold(0f64, |a, x| a.max(f64::from(*x).abs()));
    let lstr = L.to_string();
    for causal in [false, true] {
        let mut common = vec!["--q", &q, "--k", &k, "--v", &v];
        if causal {
            common.push("--causal");
        }
        let (ex_s, hy_s) = (ex.to_str().unwrap(), hy.to_str().unwrap());
        let mut exact_args = vec!["exact"];
        exact_args.extend(&common);
        exact_args.extend(["--out", ex_s]);
        ok(&exact_args);
        let exact = read(&ex).1;
        for (window, sinks) in [(lstr.as_str(), "0"), (lstr.as_str(), "2"), ("0", "0")] {
            let mut args = vec!["run", "--features", "16"];
            args.extend(&common);
            args.extend(["--window", window, "--sinks", sinks, "--out", hy_s]);
            ok(&args);
            let got = read(&hy).1;
            let worst = got
                .iter()
                .zip(&exact)
                .map(|(a, b)| {
                    let tol = (delta + 2.0 * gamma(L + 2)) * (vmax + f64::from(b.abs()))
                        + u * f64::from(b.abs());
                    f64::from((a - b).abs()) / tol
                })
                .fold(0f64, f64::max);
            if window == "0" {
                assert!(
                    worst > 1.0,
                    "causal {causal}: window 0 looks exact ({worst})"
                );
            } else {
                assert!(
                    worst <= 1.0,
                    "causal {causal} sinks {sinks}: {worst} of the budget"
                );
            }
        }
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
    // The Gaussian and the structured (Hadamard, SORF) kinds alike.
    for kind in ["iid", "sorf"] {
        let w = d.join(format!("w-{kind}.npy"));
        ok(&[
            "projection",
            "--features",
            "24",
            "--dim",
            "8",
            "--seed",
            "11",
            "--projection-kind",
            kind,
            "--out",
            w.to_str().unwrap(),
        ]);
        assert_eq!(read(&w).0, [24, 8]);
        let (o1, o2) = (
            d.join(format!("o1-{kind}.npy")),
            d.join(format!("o2-{kind}.npy")),
        );
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
            kind,
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

/// Runs `favor` by way of `sh -c 'ulimit -v KIB; exec favor …'`: with its address space
/// limited, allocations beyond it fail as they do on a machine without the memory. `stdin`
/// (a shell command) feeds its standard input when given.
#[cfg(target_os = "linux")]
fn favor_limited(kib: u64, stdin: Option<&str>, args: &[&str]) -> Output {
    let feed = stdin.map_or(String::new(), |c| format!("{c} | "));
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {kib} && {feed}exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_favor"))
        .args(args)
        .output()
        .expect("sh runs")
}

/// A float32 `.npy` of shape `(rows, 1)` and all zeros, as a sparse file: no disk or time
/// spent on its data.
#[cfg(target_os = "linux")]
fn sparse_zeros(path: &Path, rows: usize) -> String {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, 1), }}").into_bytes();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&u16::try_from(header.len()).unwrap().to_le_bytes());
    bytes.extend_from_slice(&header);
    let f = std::fs::File::create(path).unwrap();
    std::io::Write::write_all(&mut &f, &bytes).unwrap();
    f.set_len((bytes.len() + rows * 4) as u64).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
#[cfg(target_os = "linux")]
fn running_out_of_memory_is_one_line_and_exit_2() {
    // Sizes and limits are chosen so that the allocations the issue saw abort are the ones
    // that fail, and that the work before them stays small.
    let d = dir("alloc");
    let out = d.join("o.npy");
    let out = out.to_str().unwrap();
    // `favor projection`: W in f64 (256 MiB) fits under 350 MB, its f64 transpose (256 MiB
    // more) does not; all four buffers of W are allocated before it is drawn, so this fails
    // at once. It used to abort in `Weights::from_f64`.
    let args = [
        "projection",
        "--features",
        "33554432",
        "--dim",
        "1",
        "--projection-kind",
        "iid",
        "--out",
        out,
    ];
    let e = exit_2(favor_limited(350_000, None, &args), &args);
    assert_eq!(
        e.trim_end(),
        "favor: projection: cannot allocate 256.00 MiB (268435456 bytes): out of memory"
    );
    // `favor run` with m = 10^6 features and d = 1: W takes 24 MB, the attention scratch
    // about 1 GB (0.5 GB causal). It used to abort in `HeadIo::attend`.
    let s = 0.5;
    let q = write(&d.join("q.npy"), &[256, 1], &gaussian(20, 256, s));
    let k = write(&d.join("k.npy"), &[256, 1], &gaussian(21, 256, s));
    let v = write(&d.join("v.npy"), &[256, 1], &gaussian(22, 256, 1.0));
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
            "1000000",
            "--out",
            out,
        ];
        if causal {
            args.push("--causal");
        }
        let e = exit_2(favor_limited(300_000, None, &args), &args);
        assert!(
            e.starts_with("favor: attention scratch: cannot allocate ")
                && e.trim_end().ends_with(" bytes): out of memory"),
            "{e}"
        );
    }
    // A query file of 128 MiB under 200 MB: it is read into memory once (no second copy of
    // the bytes, none of a float32 file for f32 attention), and the output's 128 MiB is
    // what does not fit. It used to abort decoding the file's bytes.
    let big = sparse_zeros(&d.join("big.npy"), 1 << 25);
    let args = ["run", "--q", &big, "--k", &k, "--v", &v, "--out", out];
    let e = exit_2(favor_limited(200_000, None, &args), &args);
    assert_eq!(
        e.trim_end(),
        "favor: output: cannot allocate 128.00 MiB (134217728 bytes): out of memory"
    );
    assert!(!Path::new(out).exists(), "no output is written on error");
}

#[test]
fn an_output_that_cannot_be_written_fails_first_with_exit_2() {
    let d = dir("out");
    let [q, k, v] = fixtures(&d, 30);
    let run = |out: &str| favor(&["run", "--q", &q, "--k", &k, "--v", &v, "--out", out]);
    // A missing directory and a directory: refused before anything is read or computed.
    let missing = d.join("no-such-dir").join("o.npy");
    let missing = missing.to_str().unwrap();
    let e = exit_2(run(missing), &[missing]);
    assert_eq!(
        e.trim_end(),
        format!("favor: {missing}: cannot write: No such file or directory (os error 2)")
    );
    let dir_path = d.to_str().unwrap();
    let e = exit_2(run(dir_path), &[dir_path]);
    assert_eq!(
        e.trim_end(),
        format!("favor: {dir_path}: cannot write: Is a directory (os error 21)")
    );
    // First means first: with a bad input too, the output is what is reported.
    let mut nan = vec![0.1f32; L * D];
    nan[3] = f32::NAN;
    let np = write(&d.join("nan.npy"), &[L, D], &nan);
    let e = fails(&["run", "--q", &np, "--k", &k, "--v", &v, "--out", missing]);
    assert!(e.contains("no-such-dir") && !e.contains("nan.npy"), "{e}");
    let e = fails(&["exact", "--q", &q, "--k", &k, "--v", &v, "--out", missing]);
    assert!(e.contains("cannot write"), "{e}");
    let e = fails(&["projection", "--dim", "8", "--out", missing]);
    assert!(e.contains("cannot write"), "{e}");
    // A full disk, found only when writing: still exit 2 and one line.
    if Path::new("/dev/full").exists() {
        let e = exit_2(run("/dev/full"), &["/dev/full"]);
        assert_eq!(
            e.trim_end(),
            "favor: /dev/full: cannot write: No space left on device (os error 28)"
        );
    }
    // An existing output is left as it was when an error comes first.
    let keep = d.join("keep.npy");
    std::fs::write(&keep, b"old").unwrap();
    fails(&[
        "run",
        "--q",
        &np,
        "--k",
        &k,
        "--v",
        &v,
        "--out",
        keep.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&keep).unwrap(), b"old");
    // ...and replaced, not appended to, when the run succeeds.
    ok(&[
        "run",
        "--q",
        &q,
        "--k",
        &k,
        "--v",
        &v,
        "--out",
        keep.to_str().unwrap(),
    ]);
    assert_eq!(read(&keep).0, [L, D]);
}

#[test]
fn messages_name_the_right_file_shape_and_position() {
    let d = dir("msgs");
    let [q, k, v] = fixtures(&d, 31);
    let out = d.join("o.npy");
    let out = out.to_str().unwrap();
    let run = |q: &str, extra: &[&str]| {
        let mut a = vec!["run", "--q", q, "--k", &k, "--v", &v, "--out", out];
        a.extend_from_slice(extra);
        fails(&a)
    };
    // A projection file of shape (0, d) is reported with that shape.
    let w0 = d.join("w0.npy");
    std::fs::write(&w0, npy::encode_f32(&[0, D], &[])).unwrap();
    let w0 = w0.to_str().unwrap();
    assert_eq!(
        run(&q, &["--projection", w0]).trim_end(),
        format!("favor: {w0}: projection: expected shape [m, {D}] with m > 0, got [0, {D}]")
    );
    // A W holding 3e38 is the projection file's fault, not q's.
    let mut w = gaussian(32, 16 * D, 1.0);
    w[5] = 3e38;
    let wb = write(&d.join("wbig.npy"), &[16, D], &w);
    let e = run(&q, &["--projection", &wb]);
    assert!(
        e.starts_with(&format!(
            "favor: {wb}: projection: outside the supported range: a row of norm 3.0000000"
        )),
        "{e}"
    );
    // Non-finite elements are located by batch, head, row and column.
    let mut nan = gaussian(33, L * D, 0.3);
    nan[17 * D + 3] = f32::NAN;
    let np = write(&d.join("nan.npy"), &[L, D], &nan);
    assert_eq!(
        run(&np, &[]).trim_end(),
        format!("favor: {np}: element at row 17, column 3 is NaN")
    );
    let (b, h) = (2, 3);
    let mut inf = gaussian(34, b * h * L * D, 0.3);
    inf[((h + 2) * L + 17) * D + 3] = f32::NEG_INFINITY;
    let ip = write(&d.join("inf.npy"), &[b, h, L, D], &inf);
    let e = fails(&["run", "--q", &ip, "--k", &ip, "--v", &ip, "--out", out]);
    assert_eq!(
        e.trim_end(),
        format!("favor: {ip}: element at batch 1, head 2, row 17, column 3 is -inf")
    );
    // An f64 value of 1e300: at f32 it does not fit, at f64 its row's squared norm
    // overflows; the norm itself is finite and is what the message gives.
    let mut huge: Vec<f64> = gaussian(35, L * D, 0.3)
        .iter()
        .map(|&x| f64::from(x))
        .collect();
    huge[17 * D + 3] = 1e300;
    let hp = d.join("huge.npy");
    std::fs::write(&hp, npy::encode_f64(&[L, D], &huge)).unwrap();
    let hp = hp.to_str().unwrap();
    assert_eq!(
        run(hp, &[]).trim_end(),
        format!(
            "favor: {hp}: element at row 17, column 3 = 1e300 does not fit float32 (use --precision f64)"
        )
    );
    assert_eq!(
        run(hp, &["--precision", "f64"]).trim_end(),
        format!(
            "favor: {hp}: q: outside the supported range: a row of norm 1e300: its squared norm overflows f64"
        )
    );
}

#[test]
#[cfg(target_os = "linux")]
fn endless_inputs_are_read_no_further_than_their_header() {
    // Under a 1 GB limit, so that a reader that does not stop fails fast instead of taking
    // the machine's memory.
    let d = dir("endless");
    let [q, k, v] = fixtures(&d, 36);
    let out = d.join("o.npy");
    let out = out.to_str().unwrap();
    let args = [
        "run",
        "--q",
        "/dev/zero",
        "--k",
        &k,
        "--v",
        &v,
        "--out",
        out,
    ];
    let e = exit_2(favor_limited(1_000_000, None, &args), &args);
    assert_eq!(
        e.trim_end(),
        "favor: /dev/zero: not a .npy file (bad magic bytes)"
    );
    // A valid file, then zeros without end, through a pipe: the header's size bounds the read.
    let args = [
        "run",
        "--q",
        "/dev/stdin",
        "--k",
        &k,
        "--v",
        &v,
        "--out",
        out,
    ];
    let feed = format!("cat '{q}' /dev/zero");
    let e = exit_2(favor_limited(1_000_000, Some(&feed), &args), &args);
    assert_eq!(
        e.trim_end(),
        format!(
            "favor: /dev/stdin: the data goes on past the {} bytes its header announces",
            L * D * 4
        )
    );
    // The same file through a pipe, as it is, works.
    let piped = favor_limited(1_000_000, Some(&format!("cat '{q}'")), &args);
    assert!(piped.status.success(), "{piped:?}");
    let (shape, data) = read(Path::new(out));
    ok(&["run", "--q", &q, "--k", &k, "--v", &v, "--out", out]);
    assert_eq!((shape, data), read(Path::new(out)));
}

#[test]
#[cfg(target_os = "linux")]
fn diagnostic_commands_out_of_memory_exit_2() {
    // `favor fidelity` sizes its inputs from --len × --dim and its pairs from --pairs × --dim
    // (12.8 GB each here); `favor bench` its inputs from --lens (256 MiB per head and
    // tensor at L = 2^20, of which the second does not fit under 300 MB).
    let fidelity = |extra: &[&str]| {
        let mut a = vec![
            "fidelity",
            "--dim",
            "16",
            "--seeds",
            "1",
            "--features",
            "16",
            "--kernels",
            "positive",
            "--projections",
            "iid",
        ];
        a.extend_from_slice(extra);
        exit_2(favor_limited(1_000_000, None, &a), &a)
    };
    let e = fidelity(&["--len", "100000000"]);
    assert_eq!(
        e.trim_end(),
        "favor: fidelity inputs: cannot allocate 11.92 GiB (12800000000 bytes): out of memory"
    );
    let e = fidelity(&["--len", "64", "--pairs", "100000000"]);
    assert_eq!(
        e.trim_end(),
        "favor: pairs: cannot allocate 11.92 GiB (12800000000 bytes): out of memory"
    );
    let args = ["bench", "--quick", "--lens", "1048576"];
    let e = exit_2(favor_limited(300_000, None, &args), &args);
    assert_eq!(
        e.trim_end(),
        "favor: benchmark inputs: cannot allocate 256.00 MiB (268435456 bytes): out of memory"
    );
}

#[test]
fn report_files_that_cannot_be_written_fail_before_the_study() {
    let d = dir("reports");
    let missing = d.join("no-such-dir").join("t.md");
    let missing = missing.to_str().unwrap();
    let small = [
        "fidelity",
        "--len",
        "64",
        "--seeds",
        "1",
        "--features",
        "16",
        "--kernels",
        "positive",
        "--projections",
        "iid",
    ];
    for opt in ["--markdown", "--plot"] {
        let mut args = small.to_vec();
        args.extend([opt, missing]);
        let o = favor(&args);
        assert!(o.stdout.is_empty(), "{opt}: the study ran first");
        let e = exit_2(o, &args);
        assert!(e.contains(missing) && e.contains("cannot write"), "{e}");
    }
    // A directory where the image should go.
    let png_dir = d.join("plot.png");
    std::fs::create_dir(&png_dir).unwrap();
    let args = ["bench", "--quick", "--plot", png_dir.to_str().unwrap()];
    let o = favor(&args);
    assert!(o.stdout.is_empty(), "the sweep ran first");
    let e = exit_2(o, &args);
    assert!(e.contains("Is a directory"), "{e}");
}
