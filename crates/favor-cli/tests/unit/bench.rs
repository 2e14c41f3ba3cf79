//! Unit tests of `favor bench`: options, the sweep on small plans, the report, memory probes.

use favor_cli::args::{Args, CliError, CliResult};
use favor_cli::bench::measurement::{HybridRow, Measurement, Workload};
use favor_cli::bench::memory::{MEMORY_TABLE_HEAD, memory_report, memory_row};
use favor_cli::bench::options::{BackendChoice, Options, Plan};
use favor_cli::bench::probe::{
    MemoryMeasurement, MemoryProbe, MemoryWorkload, memory_probe, status_bytes,
};
use favor_cli::bench::report::{TABLE_HEAD, plot, text_row};
use favor_cli::bench::sweep::{detected_choice, run};
use favor_cli::bench::timing::split;
use favor_core::{Kernels, Scalar};
use favor_simd::Portable;
use favor_workload::{self as workload, DIM, HEADS};
use std::path::Path;

fn opts(s: &str) -> CliResult<Options> {
    Options::parse(Args::new(s.split_whitespace().map(String::from)))
}

#[derive(Debug, PartialEq)]
enum Value {
    Str(String),
    Num(f64),
    Null,
}

/// Parses a flat JSON object of strings (without commas), numbers and nulls.
fn parse_object(line: &str) -> Vec<(String, Value)> {
    let body = line
        .strip_prefix('{')
        .and_then(|l| l.strip_suffix('}'))
        .unwrap_or_else(|| panic!("not an object: {line}"));
    body.split(',')
        .map(|kv| {
            let (k, v) = kv.split_once(':').expect("key:value");
            let key = k
                .strip_prefix('"')
                .and_then(|k| k.strip_suffix('"'))
                .expect("quoted key");
            let value = if let Some(s) = v.strip_prefix('"') {
                Value::Str(s.strip_suffix('"').expect("closed string").into())
            } else if v == "null" {
                Value::Null
            } else {
                assert!(
                    v.chars().all(|c| c.is_ascii_digit() || "-.eE+".contains(c)),
                    "not a JSON number: {v}"
                );
                Value::Num(v.parse().expect("number"))
            };
            (key.to_string(), value)
        })
        .collect()
}

const KEYS: [&str; 9] = [
    "workload",
    "L",
    "backend",
    "threads",
    "ms",
    "gflops",
    "roof_pct",
    "roof_gflops",
    "runs",
];

fn check_line(line: &str) -> Vec<(String, Value)> {
    let obj = parse_object(line);
    let keys: Vec<&str> = obj.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, KEYS, "{line}");
    for (k, v) in &obj {
        match (k.as_str(), v) {
            ("workload" | "backend", Value::Str(_)) => {}
            (_, Value::Num(x)) => assert!(x.is_finite() && *x >= 0.0, "{line}"),
            _ => panic!("bad value for {k} in {line}"),
        }
    }
    obj
}

fn sample() -> Measurement {
    Measurement {
        workload: Workload::Causal,
        len: 4096,
        backend: "avx2",
        threads: 2,
        ms: 12.5,
        flops: workload::favor_flops(4096) as f64,
        roof_gflops: 90.0,
        runs: 41,
    }
}

#[test]
fn json_line_has_the_keys_and_values() {
    let m = sample();
    let obj = check_line(&m.to_json());
    assert_eq!(obj[0].1, Value::Str("causal".into()));
    assert_eq!(obj[1].1, Value::Num(4096.0));
    assert_eq!(obj[2].1, Value::Str("avx2".into()));
    assert_eq!(obj[3].1, Value::Num(2.0));
    assert_eq!(obj[4].1, Value::Num(12.5));
    let Value::Num(g) = obj[5].1 else { panic!() };
    assert!((g - m.gflops()).abs() < 1e-3);
    assert!((m.gflops() - 8.0 * 8.0 * 4096.0 * 256.0 * 64.0 / 12.5e-3 / 1e9).abs() < 1e-9);
    assert!((m.roof_pct() - 100.0 * m.gflops() / 90.0).abs() < 1e-9);
    assert!(!m.to_json().contains('\n'));
}

#[test]
fn json_non_finite_is_null_and_names_are_plain() {
    let m = Measurement {
        ms: 0.0,
        roof_gflops: f64::NAN,
        ..sample()
    };
    let j = m.to_json();
    assert!(j.contains("\"gflops\":null"), "{j}");
    assert!(j.contains("\"roof_pct\":null"), "{j}");
    assert!(j.contains("\"roof_gflops\":null"), "{j}");
    // Names go into JSON unescaped: they must be plain identifiers.
    let plain = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    let k = favor_simd::Detected::new();
    assert!(plain(Kernels::<f32>::name(&k)) && plain(Kernels::<f32>::name(&Portable::new())));
    assert!(plain(Kernels::<f32>::name(&Scalar)));
    let mut names = Vec::new();
    for w in all_workloads() {
        assert!(plain(w.as_str()), "{w}");
        names.push(w.as_str());
    }
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names.len(),
        all_workloads().len(),
        "names must tell workloads apart"
    );
}

#[test]
fn hybrid_rows_show_their_cost_over_favor() {
    let favor = Measurement {
        workload: Workload::Bidir,
        ms: 10.0,
        ..sample()
    };
    let exact = Measurement {
        workload: Workload::Exact,
        ms: 100.0,
        ..sample()
    };
    let hybrid = Measurement {
        workload: Workload::HybridBidir(HybridRow::W32),
        ms: 25.0,
        ..sample()
    };
    let all = [favor.clone(), exact, hybrid.clone()];
    let row = text_row(&hybrid, &all);
    assert!(row.starts_with("bidirw32 "), "{row}");
    // 25 ms over FAVOR+'s 10 is a cost of 2.5; exact's 100 ms over 25 a speedup of 4.
    assert!(row.contains(" 2.50x ") && row.contains(" 4.0x "), "{row}");
    // FAVOR+'s own row has no cost over itself; without its twin a hybrid row has none.
    let over_favor = |row: String| row.split_whitespace().nth(8).unwrap().to_string();
    assert_eq!(over_favor(text_row(&hybrid, &all)), "2.50x");
    assert_eq!(over_favor(text_row(&favor, &all)), "-");
    assert_eq!(over_favor(text_row(&hybrid, &all[1..])), "-");
    assert_eq!(
        text_row(&hybrid, &all).len(),
        TABLE_HEAD.len(),
        "{row}\n{TABLE_HEAD}"
    );
}

fn all_workloads() -> Vec<Workload> {
    let mut all = vec![
        Workload::Bidir,
        Workload::Causal,
        Workload::Exact,
        Workload::Decode,
    ];
    for w in HybridRow::ALL {
        all.extend([
            Workload::HybridBidir(w),
            Workload::HybridCausal(w),
            Workload::HybridDecode(w),
        ]);
    }
    all
}

#[test]
fn flop_models() {
    assert_eq!(Workload::Bidir.flops(10), (8 * 8 * 10 * 256 * 64) as f64);
    assert_eq!(Workload::Exact.flops(10), (4 * 8 * 100 * 64) as f64);
    assert_eq!(Workload::Decode.flops(12345), (8 * 8 * 256 * 64) as f64);
    // The exact part: 32 + 1 + 32 window keys and 1 sink (bidirectional), 32 + 1 and the
    // sink (causal), at 4·d FLOPs per key and head.
    let favor = (8 * 8 * 10 * 256 * 64) as f64;
    let w = HybridRow::W32;
    assert_eq!(
        Workload::HybridBidir(w).flops(10),
        favor + (4 * 8 * 10 * 66 * 64) as f64
    );
    assert_eq!(
        Workload::HybridCausal(w).flops(10),
        favor + (4 * 8 * 10 * 34 * 64) as f64
    );
    assert_eq!(
        Workload::HybridDecode(HybridRow::W64).flops(999),
        (8 * 8 * 256 * 64 + 4 * 8 * 66 * 64) as f64
    );
    // m = 64: the random-feature part is a quarter, the exact part unchanged.
    assert_eq!(
        Workload::HybridCausal(HybridRow::W32M64).flops(10),
        (8 * 8 * 10 * 64 * 64 + 4 * 8 * 10 * 34 * 64) as f64
    );
}

#[test]
fn every_workload_name_fits_the_table_and_is_distinct() {
    let names: Vec<&str> = all_workloads().iter().map(|w| w.as_str()).collect();
    for (i, n) in names.iter().enumerate() {
        assert!(n.len() <= 12, "{n} is wider than the table's column");
        assert!(!names[..i].contains(n), "{n} twice");
    }
}

#[test]
fn options_and_their_errors() {
    let o = opts("--json --threads 2 --lens 1024,256,256 --backend scalar").unwrap();
    assert!(o.json && !o.quick);
    assert_eq!((o.threads, o.backend), (2, BackendChoice::Scalar));
    assert_eq!(o.lens.as_deref(), Some(&[256, 1024][..]));
    assert_eq!(Plan::new(&o).lens, vec![256, 1024]);
    let d = Plan::new(&opts("").unwrap());
    assert_eq!((d.lens[0], *d.lens.last().unwrap()), (256, 65536));
    for bad in [
        "--threads 0",
        "--threads 9",
        "--threads x",
        "--backend sse",
        "--lens 0",
        "--lens 256,x",
        "--plot out.svg",
        "--plot /no/such/dir/x.png",
        "--frobnicate",
        "--threads",
    ] {
        let e = opts(bad).unwrap_err();
        assert_eq!(e.code, 2, "{bad}: {e}");
    }
}

const MEMORY_KEYS: [&str; 7] = [
    "workload",
    "L",
    "peak_rss_bytes",
    "baseline_rss_bytes",
    "input_bytes",
    "output_bytes",
    "working_bytes",
];

fn memory_sample() -> MemoryMeasurement {
    MemoryMeasurement {
        probe: MemoryProbe {
            workload: MemoryWorkload::Stream,
            len: 1 << 20,
        },
        peak_rss_bytes: 40 << 20,
        baseline_rss_bytes: 3 << 20,
        input_bytes: 24 << 20,
        output_bytes: 8 << 20,
    }
}

/// Checks one `--memory --json` line: the keys in order, a known workload name, integers.
fn check_memory_line(line: &str) -> Vec<(String, Value)> {
    let obj = parse_object(line);
    let keys: Vec<&str> = obj.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, MEMORY_KEYS, "{line}");
    let Value::Str(w) = &obj[0].1 else {
        panic!("{line}")
    };
    assert!(
        MemoryWorkload::parse(w).is_some_and(|x| x.as_str() == w),
        "{line}"
    );
    for (k, v) in &obj[1..] {
        let Value::Num(x) = v else {
            panic!("bad value for {k} in {line}")
        };
        assert!(x.fract() == 0.0, "{line}");
        assert!(*x >= 0.0 || k == "working_bytes", "{line}");
    }
    obj
}

#[test]
fn memory_json_and_probe_line() {
    let m = memory_sample();
    assert_eq!(m.working_bytes(), 5 << 20);
    let obj = check_memory_line(&m.to_json());
    assert_eq!(obj[0].1, Value::Str("memory-stream".into()));
    assert_eq!(obj[1].1, Value::Num(1048576.0));
    assert_eq!(obj[2].1, Value::Num((40 << 20) as f64));
    assert_eq!(obj[6].1, Value::Num((5 << 20) as f64));
    // Peak below baseline + inputs + outputs: a negative working figure, still valid JSON.
    let low = MemoryMeasurement {
        peak_rss_bytes: 30 << 20,
        ..m
    };
    assert_eq!(low.working_bytes(), -(5 << 20));
    check_memory_line(&low.to_json());
    assert!(low.to_json().contains("\"working_bytes\":-5242880"));
    let line = m.probe_line();
    assert_eq!(MemoryMeasurement::parse_probe_line(&line), Some(m));
    for bad in [
        "",
        "favor-memory-probe",
        "favor-memory-probe stream:1048576 peak=1 baseline=2 input=3",
        "favor-memory-probe stream:1048576 peak=1 baseline=2 input=3 output=4 extra=5",
        "favor-memory-probe stream:1048576 baseline=2 peak=1 input=3 output=4",
        "favor-memory-probe stream:1048576 peak=x baseline=2 input=3 output=4",
        "favor-memory-probe nope:1 peak=1 baseline=2 input=3 output=4",
        "other stream:1048576 peak=1 baseline=2 input=3 output=4",
    ] {
        assert_eq!(MemoryMeasurement::parse_probe_line(bad), None, "{bad}");
    }
}

#[test]
fn memory_probe_names_and_defaults() {
    let p: MemoryProbe = "bidir:65536".parse().unwrap();
    assert_eq!((p.workload, p.len), (MemoryWorkload::Bidir, 65536));
    assert_eq!(p.to_string(), "bidir:65536");
    let p: MemoryProbe = "memory-stream:8192".parse().unwrap();
    assert_eq!(
        (p.workload, p.tokens_per_call()),
        (MemoryWorkload::Stream, 4096)
    );
    assert_eq!(
        "stream:100"
            .parse::<MemoryProbe>()
            .unwrap()
            .tokens_per_call(),
        100
    );
    for bad in [
        "bidir",
        "bidir:0",
        "bidir:x",
        "flash:64",
        "stream:5000",
        "causal:2097152",
    ] {
        assert!(bad.parse::<MemoryProbe>().is_err(), "{bad}");
    }
    for quick in [false, true] {
        let d = MemoryProbe::defaults(quick);
        assert_eq!(d.len(), 6);
        for w in [
            MemoryWorkload::Bidir,
            MemoryWorkload::Causal,
            MemoryWorkload::Stream,
        ] {
            let lens: Vec<usize> = d
                .iter()
                .filter(|p| p.workload == w)
                .map(|p| p.len)
                .collect();
            assert!(lens.len() == 2 && lens[0] < lens[1], "{w:?}: {lens:?}");
        }
        // Every default is accepted back by the hidden option.
        assert!(d.iter().all(|p| p.to_string().parse() == Ok(*p)));
    }
    let full = MemoryProbe::defaults(false);
    assert!(full.contains(&MemoryProbe {
        workload: MemoryWorkload::Bidir,
        len: 1 << 16
    }));
    assert!(full.contains(&MemoryProbe {
        workload: MemoryWorkload::Stream,
        len: 1 << 20
    }));
}

#[test]
fn status_parsing() {
    let status = "Name:\tfavor\nVmPeak:\t  10000 kB\nVmHWM:\t    4096 kB\nVmRSS:\t    2048 kB\n\
                  Threads:\t1\nVmBad:\t12 MB\n";
    assert_eq!(status_bytes(status, "VmHWM"), Some(4096 * 1024));
    assert_eq!(status_bytes(status, "VmRSS"), Some(2048 * 1024));
    assert_eq!(status_bytes(status, "Threads"), Some(1));
    assert_eq!(status_bytes(status, "VmBad"), None);
    assert_eq!(status_bytes(status, "VmSwap"), None);
    assert_eq!(status_bytes(status, "Vm"), None);
}

#[test]
fn memory_options() {
    let o = opts("--memory --json --quick").unwrap();
    assert!(o.memory && o.json && o.quick && o.memory_probe.is_none());
    let o = opts("--memory-probe causal:256").unwrap();
    assert_eq!(
        o.memory_probe,
        Some(MemoryProbe {
            workload: MemoryWorkload::Causal,
            len: 256
        })
    );
    for bad in [
        "--memory --threads 2",
        "--memory --lens 256",
        "--memory --backend scalar",
        "--memory --plot x.png",
        "--memory-probe",
        "--memory-probe bidir",
        "--memory-probe stream:4097",
    ] {
        assert_eq!(opts(bad).unwrap_err().code, 2, "{bad}");
    }
}

/// The report with the probes run in this process (a child process would re-run the test
/// binary): checks the structure only, never the sizes.
#[test]
fn memory_report_text_and_json() {
    let probes = [
        MemoryProbe {
            workload: MemoryWorkload::Bidir,
            len: 64,
        },
        MemoryProbe {
            workload: MemoryWorkload::Causal,
            len: 64,
        },
        MemoryProbe {
            workload: MemoryWorkload::Stream,
            len: 128,
        },
    ];
    for json in [true, false] {
        let o = Options {
            json,
            ..opts("--memory --quick").unwrap()
        };
        let mut buf = Vec::new();
        let got = memory_report(&o, &probes, memory_probe, &mut buf);
        if !cfg!(target_os = "linux") {
            let e = got.unwrap_err();
            assert!(e.message.contains("unsupported"), "{e}");
            continue;
        }
        let all = got.unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(all.len(), probes.len());
        for (m, p) in all.iter().zip(&probes) {
            assert_eq!(m.probe, *p);
            let per_call = (HEADS * p.tokens_per_call() * DIM * 4) as u64;
            assert_eq!((m.input_bytes, m.output_bytes), (3 * per_call, per_call));
            assert!(m.peak_rss_bytes > 0 && m.baseline_rss_bytes > 0);
        }
        if json {
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), all.len());
            for (line, m) in lines.iter().zip(&all) {
                check_memory_line(line);
                assert_eq!(*line, m.to_json());
            }
        } else {
            assert!(text.contains(MEMORY_TABLE_HEAD), "{text}");
            assert!(text.contains("total time"), "{text}");
            for m in &all {
                assert!(text.contains(&memory_row(m)), "{text}");
            }
        }
    }
}

#[test]
fn memory_probe_failure_is_reported() {
    let o = opts("--memory").unwrap();
    let mut buf = Vec::new();
    let probes = MemoryProbe::defaults(true);
    let e = memory_report(&o, &probes, |_| Err(CliError::failure("boom")), &mut buf).unwrap_err();
    assert_eq!(e.code, 1);
    if cfg!(target_os = "linux") {
        assert_eq!(e.message, "boom");
    }
}

#[test]
fn missing_isa_is_a_usage_error() {
    #[cfg(target_arch = "x86_64")]
    let absent = BackendChoice::Neon;
    #[cfg(not(target_arch = "x86_64"))]
    let absent = BackendChoice::Avx2;
    assert_eq!(detected_choice(absent).unwrap_err().code, 2);
    let o = Options {
        backend: absent,
        ..opts("--quick").unwrap()
    };
    let mut sink = Vec::new();
    assert_eq!(run(&o, &Plan::new(&o), &mut sink).unwrap_err().code, 2);
    assert!(sink.is_empty());
}

#[test]
fn split_covers_every_head_once() {
    for parts in 1..=HEADS {
        let r = split(HEADS, parts);
        assert_eq!(r.len(), parts);
        assert!(r.iter().all(|r| !r.is_empty()));
        assert_eq!(r[0].start, 0);
        assert_eq!(r[parts - 1].end, HEADS);
        assert!(r.windows(2).all(|w| w[0].end == w[1].start));
    }
}

#[test]
fn plot_writes_a_png_and_prefixes_errors() {
    let o = opts("").unwrap();
    let ms = [
        sample(),
        Measurement {
            len: 8192,
            ms: 30.0,
            ..sample()
        },
        Measurement {
            workload: Workload::Exact,
            ms: 900.0,
            ..sample()
        },
        Measurement {
            backend: "scalar",
            ms: 130.0,
            ..sample()
        },
    ];
    let path = std::env::temp_dir().join(format!("favor-bench-{}.png", std::process::id()));
    plot(&path, &o, "avx2", &ms).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"));
    let bad = Path::new("/no/such/dir/favor.png");
    let e = plot(bad, &o, "avx2", &ms).unwrap_err();
    assert!(e.message.starts_with("/no/such/dir/favor.png: "), "{e}");
}

fn tiny() -> Plan {
    Plan {
        lens: vec![32, 64],
        budget_s: 0.002,
        decode_seen: vec![0, 100],
        scalar_max_len: 32,
        exact_limit_s: 1.0,
        roof_iters: 1000,
    }
}

#[test]
fn tiny_sweep_json_lines() {
    let o = opts("--json --threads 3").unwrap();
    let mut buf = Vec::new();
    let all = run(&o, &tiny(), &mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), all.len());
    for (line, m) in lines.iter().zip(&all) {
        check_line(line);
        assert_eq!(*line, m.to_json());
        assert_eq!(m.threads, 3);
    }
    let has = |w: Workload, len: usize, b: &str| {
        all.iter()
            .any(|m| m.workload == w && m.len == len && (m.backend == "scalar") == (b == "scalar"))
    };
    for len in [32, 64] {
        assert!(has(Workload::Bidir, len, "simd"));
        assert!(has(Workload::Causal, len, "simd"));
        assert!(has(Workload::Exact, len, "simd"));
    }
    assert!(has(Workload::Bidir, 32, "scalar") && !has(Workload::Bidir, 64, "scalar"));
    assert!(has(Workload::Decode, 0, "simd") && has(Workload::Decode, 100, "simd"));
    assert!(has(Workload::Decode, 0, "scalar"));
    for w in HybridRow::ALL {
        for len in [32, 64] {
            assert!(has(Workload::HybridBidir(w), len, "simd"));
            assert!(has(Workload::HybridCausal(w), len, "simd"));
        }
        for seen in [0, 100] {
            assert!(has(Workload::HybridDecode(w), seen, "simd"));
        }
        // No scalar hybrid rows: the scalar baseline is for FAVOR+ itself.
        assert!(
            !all.iter()
                .any(|m| m.workload.favor_twin().is_some() && m.backend == "scalar")
        );
    }
}

#[test]
fn tiny_sweep_text_table() {
    let o = opts("--backend portable").unwrap();
    let plan = Plan {
        exact_limit_s: 0.0,
        ..tiny()
    };
    let mut buf = Vec::new();
    let all = run(&o, &plan, &mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert!(text.contains(TABLE_HEAD), "{text}");
    assert!(text.contains("portable (forced by --backend)"), "{text}");
    // Exact attention was skipped everywhere: every estimate is above the 0 s limit.
    assert!(!all.iter().any(|m| m.workload == Workload::Exact));
    assert!(all.iter().all(|m| m.threads == 1));
    assert!(text.contains("skipped: would take"), "{text}");
    assert!(text.contains("scalar backend: skipped at L = 64"), "{text}");
    assert!(text.contains("total time"), "{text}");
}
