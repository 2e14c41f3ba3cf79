//! Unit tests of the charts: ticks, labels, legend placement, files written (or not).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use favor_cli::plot::render::{PlotError, render_png};
use favor_cli::plot::series::{Panel, Series};
use favor_cli::plot::ticks::{fmt_value, log_ticks, superscript};

fn temp_png(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "favor-plot-test-{tag}-{}-{n}.png",
        std::process::id()
    ))
}

fn check_png(path: &Path, min_len: usize) {
    let bytes = std::fs::read(path).expect("read png");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG signature"
    );
    assert!(
        bytes.len() >= min_len,
        "PNG suspiciously small: {} bytes",
        bytes.len()
    );
    assert!(bytes.len() < 20_000_000, "PNG suspiciously large");
}

fn sample_panels() -> Vec<Panel> {
    let ns: [f64; 6] = [256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0];
    let mk = |k: usize, scale: f64, log_x: bool| -> Vec<Series> {
        (0..k)
            .map(|s| {
                let points: Vec<(f64, f64)> = ns
                    .iter()
                    .map(|&n| {
                        let y = scale * (s as f64 + 1.0) * n.powf(1.0 + 0.1 * s as f64) * 1e-6;
                        (if log_x { n } else { n / 1000.0 }, y)
                    })
                    .collect();
                let y_err = Some(points.iter().map(|p| p.1 * 0.2).collect());
                Series {
                    label: format!("series {s} (m={})", 16 << s),
                    points,
                    y_err,
                    dashed: s == 7,
                }
            })
            .collect()
    };
    vec![
        Panel {
            title: "time vs length".into(),
            x_label: "sequence length n".into(),
            y_label: "time [s]".into(),
            log_x: true,
            log_y: true,
            series: mk(8, 1.0, true),
        },
        Panel {
            title: "relative error".into(),
            x_label: "sequence length n".into(),
            y_label: "error".into(),
            log_x: true,
            log_y: true,
            series: mk(8, 1e-4, true),
        },
        Panel {
            title: "linear axes".into(),
            x_label: "n / 1000".into(),
            y_label: "memory [MiB]".into(),
            log_x: false,
            log_y: false,
            series: mk(8, 10.0, false),
        },
    ]
}

#[test]
fn renders_three_log_log_panels() {
    let path = temp_png("three");
    render_png(&path, "FAVOR+ sample figure", &sample_panels()).expect("render");
    check_png(&path, 20_000);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn renders_empty_panels_and_no_panels() {
    let path = temp_png("empty");
    let panels = [
        Panel {
            title: "nothing".into(),
            log_y: true,
            ..Panel::default()
        },
        Panel {
            title: "no points".into(),
            series: vec![Series {
                label: "empty".into(),
                ..Series::default()
            }],
            ..Panel::default()
        },
    ];
    render_png(&path, "", &panels).expect("render empty panels");
    check_png(&path, 1_000);
    render_png(&path, "no panels at all", &[]).expect("render no panels");
    check_png(&path, 500);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn bad_points_on_log_axes_do_not_panic() {
    let path = temp_png("bad");
    let series = vec![
        Series {
            label: "mixed".into(),
            points: vec![
                (f64::NAN, 1.0),
                (-1.0, 2.0),
                (0.0, 3.0),
                (1.0, -4.0),
                (2.0, f64::INFINITY),
                (3.0, 0.5),
                (4.0, 0.25),
            ],
            y_err: Some(vec![1.0, f64::NAN, -1.0, 2.0, 1.0, 10.0, 0.1]),
            dashed: false,
        },
        Series {
            label: "all bad".into(),
            points: vec![(f64::NAN, f64::NAN), (-1.0, -1.0)],
            y_err: Some(vec![]),
            dashed: true,
        },
        Series {
            label: "single".into(),
            points: vec![(5.0, 5.0)],
            y_err: None,
            dashed: true,
        },
    ];
    let panels = [
        Panel {
            title: "log-log".into(),
            log_x: true,
            log_y: true,
            series: series.clone(),
            ..Panel::default()
        },
        Panel {
            title: "all invalid".into(),
            log_x: true,
            log_y: true,
            series: vec![series[1].clone()],
            ..Panel::default()
        },
        Panel {
            title: "extremes".into(),
            series: vec![Series {
                label: "huge".into(),
                points: vec![(-f64::MAX, f64::MAX), (f64::MAX, -f64::MAX), (0.0, 1e-300)],
                y_err: Some(vec![f64::MAX, f64::MAX, 1e-300]),
                dashed: false,
            }],
            ..Panel::default()
        },
    ];
    render_png(&path, "bad points", &panels).expect("render bad points");
    check_png(&path, 1_000);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn missing_directory_is_an_error() {
    let dir = temp_png("no-such-dir");
    let path = dir.join("sub").join("figure.png");
    let err = render_png(&path, "t", &sample_panels()).expect_err("must fail");
    assert!(matches!(err, PlotError::Write(_)), "{err:?}");
    let err = err.to_string();
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(!err.is_empty());
    assert!(!path.exists());
}

#[test]
fn tick_labels() {
    assert_eq!(fmt_value(0.30000000000000004, 0.1, false), "0.3");
    assert_eq!(fmt_value(1500.0, 500.0, false), "1500");
    assert_eq!(fmt_value(1.5e6, 5e5, true), "1.5e6");
    assert_eq!(fmt_value(2e-4, 2e-4, true), "2e-4");
    assert_eq!(superscript(-3), "⁻³");
    let t = log_ticks(-3.2, 0.1, 6);
    let labels: Vec<&str> = t.major.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(labels, ["10⁻³", "10⁻²", "10⁻¹", "10⁰"]);
    // Narrower than two decades: 1-2-5 steps rather than a single power of ten.
    let t = log_ticks(230f64.log10(), 9000f64.log10(), 6);
    let labels: Vec<&str> = t.major.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(labels, ["500", "1000", "2000", "5000"]);
    // Narrow: linear steps.
    let t = log_ticks(2f64.log10(), 3f64.log10(), 5);
    assert!(t.major.len() >= 3, "{:?}", t.major);
}
