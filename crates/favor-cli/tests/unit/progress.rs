//! Unit tests of `favor_cli::progress`.

use favor_cli::progress::*;
use std::io::Write;

#[test]
fn hidden_bars_and_suspended_writes() {
    // `--json`, and stderr that is not a terminal (as under `cargo test`): nothing drawn.
    assert!(bar(3, true).is_hidden());
    let pb = bar(3, false);
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        assert!(pb.is_hidden());
    }
    let mut out = Suspended {
        bar: &pb,
        inner: Vec::new(),
    };
    writeln!(out, "row 1").unwrap();
    out.flush().unwrap();
    assert_eq!(out.inner, b"row 1\n");
}
