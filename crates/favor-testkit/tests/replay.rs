//! Runs every fuzz target's oracle under plain `cargo test` (stable, no libFuzzer):
//! - every committed input under `fuzz/regressions/<target>/` (minimised crashes, kept
//!   forever) and `fuzz/seeds/<target>/` (starting corpus), if those directories exist;
//! - a deterministic sweep: byte strings from a fixed-seed SplitMix64, so the oracles run
//!   even with no corpus at all. `FAVOR_REPLAY_CASES` overrides the number per target.

use std::path::{Path, PathBuf};

use favor_testkit::TARGETS;
use favor_testkit::input::Mix;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn check_for(target: &str) -> fn(&[u8]) {
    TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, f)| *f)
        .expect("known target")
}

/// Replays the committed files of `target`; returns how many ran.
fn replay_files(target: &str) -> usize {
    let check = check_for(target);
    let mut n = 0;
    for kind in ["regressions", "seeds"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in files {
            let bytes = std::fs::read(&file).unwrap();
            let name = file.display().to_string();
            let r = std::panic::catch_unwind(|| check(&bytes));
            assert!(r.is_ok(), "{name} fails its oracle (see the panic above)");
            n += 1;
        }
    }
    n
}

/// `cases` pseudo-random inputs of 0..=`max_len` bytes.
fn sweep(target: &str, cases: usize, max_len: usize) {
    let cases = std::env::var("FAVOR_REPLAY_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(cases);
    let check = check_for(target);
    let mut mix = Mix::new(0xF0CC_A5E5 ^ target.len() as u64);
    for case in 0..cases {
        let len = (mix.next_u64() % (max_len as u64 + 1)) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| mix.next_u64() as u8).collect();
        let r = std::panic::catch_unwind(|| check(&bytes));
        assert!(
            r.is_ok(),
            "{target}: sweep case {case} fails: bytes {bytes:02x?}"
        );
    }
}

fn run(target: &str, cases: usize, max_len: usize) {
    let files = replay_files(target);
    sweep(target, cases, max_len);
    println!("{target}: {files} committed inputs, {cases} generated");
}

#[test]
fn kernels() {
    run("kernels", 400, 256);
}

#[test]
fn feature_maps() {
    run("feature_maps", 300, 256);
}

#[test]
fn attention() {
    run("attention", 150, 256);
}

#[test]
fn stream() {
    run("stream", 150, 256);
}

#[test]
fn snapshot_bytes() {
    run("snapshot_bytes", 400, 256);
}

#[test]
fn npy() {
    run("npy", 400, 256);
}

#[test]
fn tensor_stream() {
    run("tensor_stream", 300, 256);
}

#[test]
fn mapped() {
    run("mapped", 300, 256);
}

#[test]
fn hybrid() {
    run("hybrid", 150, 512);
}

#[test]
fn every_target_is_replayed_and_has_a_fuzz_binary() {
    for (name, _) in TARGETS {
        let bin = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        assert!(bin.is_file(), "{} missing", bin.display());
    }
}
