//! `favor calibrate` and `favor run --map`: data-aware maps through files, against the
//! library (favor-tensor's `calibrate` and `forward`, the same bits), and their usage and
//! file errors (exit status 2, one line naming the file).

use std::path::Path;

use crate::common::{dir, fails, favor, ok, write};

use favor_core::Normals;
use favor_npy as npy;
use favor_tensor::{DataAwareMap, Performer, TensorView};

const H: usize = 2;
const L: usize = 40;
const D: usize = 8;
const M: usize = 16;

fn gaussian(seed: u64, n: usize, scale: f32, mean: f32) -> Vec<f32> {
    let mut g = Normals::new(0xCA1_0000 + seed);
    (0..n).map(|_| g.sample::<f32>() * scale + mean).collect()
}

/// q, k, v of shape (1, H, L, D) (keys with an offset), and their data.
fn fixtures(d: &Path) -> ([String; 3], [Vec<f32>; 3]) {
    let n = H * L * D;
    let data = [
        gaussian(1, n, 0.5, 0.0),
        gaussian(2, n, 0.5, 0.4),
        gaussian(3, n, 1.0, 0.0),
    ];
    let shape = [1, H, L, D];
    let files = [
        write(&d.join("q.npy"), &shape, &data[0]),
        write(&d.join("k.npy"), &shape, &data[1]),
        write(&d.join("v.npy"), &shape, &data[2]),
    ];
    (files, data)
}

fn view(x: &[f32]) -> TensorView<'_> {
    TensorView::new([1, H, L, D], x).unwrap()
}

/// `favor calibrate` writes the library's map (both formats, bit for bit), and `favor run
/// --map` computes what the library's calibrated layer computes, for bidirectional, causal
/// and hybrid attention.
#[test]
fn calibrate_then_run_equals_the_library() {
    let d = dir("calibrate-lib");
    let ([q, k, v], [qd, kd, vd]) = fixtures(&d);
    let out = d.join("out.npy");
    let out = out.to_str().unwrap();
    for ext in ["npy", "safetensors"] {
        let map_path = d.join(format!("map.{ext}"));
        let map_file = map_path.to_str().unwrap();
        for (causal, hybrid) in [(false, false), (true, false), (false, true), (true, true)] {
            let what = format!("{ext}, causal {causal}, hybrid {hybrid}");
            let mut shape_flags = vec![];
            if causal {
                shape_flags.push("--causal");
            }
            if hybrid {
                shape_flags.extend(["--window", "3", "--sinks", "1"]);
            }
            let mut cal = vec!["calibrate", "--q", &q, "--k", &k, "--features", "16"];
            cal.extend(["--seed", "5", "--out", map_file]);
            cal.extend(&shape_flags);
            ok(&cal);
            let mut run = vec!["run", "--q", &q, "--k", &k, "--v", &v, "--map", map_file];
            run.extend(["--out", out]);
            run.extend(&shape_flags);
            ok(&run);

            let mut b = Performer::builder(D)
                .heads(H)
                .features(M)
                .seed(5)
                .causal(causal);
            if hybrid {
                b = b.window(3).sinks(1);
            }
            let lib = b.calibrate(view(&qd), view(&kd)).build().unwrap();
            let want = lib.data_aware_map().unwrap();
            let got = match ext {
                "npy" => {
                    let a = npy::read(&map_path).unwrap();
                    assert_eq!(a.dtype_name(), "float64", "{what}");
                    assert_eq!(a.shape, [H, M + 1, D + 1], "{what}");
                    DataAwareMap::from_packed(&a.shape, &a.to_f64().unwrap()).unwrap()
                }
                _ => DataAwareMap::from_safetensors(&std::fs::read(&map_path).unwrap()).unwrap(),
            };
            for h in 0..H {
                assert_eq!(got.omega(h), want.omega(h), "{what}");
                assert_eq!(got.offsets(h), want.offsets(h), "{what}");
                assert_eq!(got.mu(h), want.mu(h), "{what}");
            }
            let expected = lib.forward(view(&qd), view(&kd), view(&vd)).unwrap();
            let a = npy::read(Path::new(out)).unwrap();
            assert_eq!(a.shape, [1, H, L, D], "{what}");
            assert_eq!(a.to_f32().unwrap(), expected.data(), "{what}");
        }
    }
}

/// Usage errors and bad files: one line, exit status 2, naming the flag or the file.
#[test]
fn calibrate_and_map_errors_are_one_line_and_exit_2() {
    let d = dir("calibrate-errors");
    let ([q, k, v], [qd, ..]) = fixtures(&d);
    let out = d.join("out.npy");
    let out = out.to_str().unwrap();
    let map = d.join("map.safetensors");
    let map = map.to_str().unwrap();
    ok(&[
        "calibrate",
        "--q",
        &q,
        "--k",
        &k,
        "--features",
        "16",
        "--out",
        map,
    ]);
    let run = |extra: &[&str]| -> String {
        let mut a = vec!["run", "--q", &q, "--k", &k, "--v", &v, "--out", out];
        a.extend(extra);
        fails(&a)
    };
    // --map gives the map: the flags that draw or give a projection conflict with it.
    let w = write(&d.join("w.npy"), &[M, D], &gaussian(4, M * D, 1.0, 0.0));
    for extra in [
        &["--map", map, "--projection", &w][..],
        &["--map", map, "--features", "16"],
        &["--map", map, "--seed", "1"],
        &["--map", map, "--projection-kind", "iid"],
    ] {
        let e = run(extra);
        assert!(e.contains("--map gives the feature map"), "{extra:?}: {e}");
    }
    // A map for other heads, and a non-softmax kernel, name the map.
    let one_head = d.join("one.npy");
    let one_head = one_head.to_str().unwrap();
    let q1 = write(&d.join("q1.npy"), &[L, D], &qd[..L * D]);
    ok(&[
        "calibrate",
        "--q",
        &q1,
        "--k",
        &q1,
        "--features",
        "16",
        "--out",
        one_head,
    ]);
    let e = run(&["--map", one_head]);
    assert!(e.contains("one.npy") && e.contains("heads"), "{e}");
    let e = run(&["--map", map, "--kernel", "relu"]);
    assert!(
        e.contains("map.safetensors") && e.contains("Softmax"),
        "{e}"
    );
    // Malformed map files: truncated, NaN, wrong rank, wrong extension, missing.
    let bytes = std::fs::read(map).unwrap();
    let cut = d.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 9]).unwrap();
    let e = run(&["--map", cut.to_str().unwrap()]);
    assert!(e.contains("cut.safetensors: data-aware map"), "{e}");
    let mut packed = vec![0f32; H * (M + 1) * (D + 1)];
    packed[3] = f32::NAN;
    let nan = write(&d.join("nan.npy"), &[H, M + 1, D + 1], &packed);
    let e = run(&["--map", &nan]);
    assert!(e.contains("nan.npy") && e.contains("NaN"), "{e}");
    let flat = write(
        &d.join("flat.npy"),
        &[M + 1, D + 1],
        &packed[..(M + 1) * (D + 1)],
    );
    let e = run(&["--map", &flat]);
    assert!(e.contains("flat.npy") && e.contains("shape"), "{e}");
    let e = run(&["--map", &d.join("map.bin").to_string_lossy()]);
    assert!(e.contains(".npy or a .safetensors"), "{e}");
    let e = run(&["--map", &d.join("absent.npy").to_string_lossy()]);
    assert!(e.contains("absent.npy"), "{e}");

    // favor calibrate: the output's extension, batched or mismatched samples.
    let e = fails(&[
        "calibrate",
        "--q",
        &q,
        "--k",
        &k,
        "--out",
        &d.join("m.txt").to_string_lossy(),
    ]);
    assert!(e.contains("m.txt"), "{e}");
    let two = write(&d.join("two.npy"), &[2, 1, L, D], &qd[..2 * L * D]);
    let e = fails(&["calibrate", "--q", &two, "--k", &two, "--out", map]);
    assert!(e.contains("two.npy") && e.contains("one chunk"), "{e}");
    let e = fails(&["calibrate", "--q", &q, "--k", &q1, "--out", map]);
    assert!(e.contains("q1.npy") && e.contains("does not match"), "{e}");
    let e = fails(&["calibrate", "--q", &q, "--out", map]);
    assert!(e.contains("--k"), "{e}");
    let e = fails(&[
        "calibrate",
        "--q",
        &q,
        "--k",
        &k,
        "--features",
        "0",
        "--out",
        map,
    ]);
    assert!(e.contains("features"), "{e}");
    // The failed runs left the map that was there as it was.
    assert_eq!(std::fs::read(map).unwrap(), bytes);
    // And `favor help` lists the command.
    let help = favor(&["help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("calibrate"));
}
