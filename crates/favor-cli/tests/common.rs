//! What every test of the `favor` binary needs: scratch directories, running the binary,
//! and the checks of its exit status.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use favor_npy as npy;

/// A fresh directory for one test's files.
pub fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("favor-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the `favor` binary with `args`.
pub fn favor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_favor"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// Runs a command that must succeed.
pub fn ok(args: &[&str]) {
    let o = favor(args);
    assert!(
        o.status.success(),
        "favor {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs a command that must fail with exit 2 and one stderr line; returns that line.
pub fn fails(args: &[&str]) -> String {
    exit_2(favor(args), args)
}

/// Checks that a finished command failed with exit 2 and one stderr line; returns it.
pub fn exit_2(o: Output, args: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "favor {args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(
        err.starts_with("favor: ") && !err.contains("panicked"),
        "{err}"
    );
    err
}

/// Writes `data` as an f32 `.npy` of `shape` at `path`; returns the path as a string.
pub fn write(path: &Path, shape: &[usize], data: &[f32]) -> String {
    npy::write_f32(path, shape, data).unwrap();
    path.to_str().unwrap().to_string()
}
