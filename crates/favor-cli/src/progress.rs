//! Progress bars on stderr for the commands that take a while: `favor bench` (one step per
//! phase of the sweep, or per child of `--memory`) and `favor fidelity` (one per norm and
//! seed). `favor demo` prints each result line as soon as it is measured, which already
//! shows its progress; `run`, `exact` and `projection` are one library call each.
//!
//! A bar is drawn only when stderr is a terminal: indicatif's [`ProgressDrawTarget::stderr`]
//! hides itself otherwise (also when `TERM` is unset or `dumb`), so pipes, files and tests
//! see nothing of it. `--json` hides it as well. Report lines written while a bar is shown go
//! through [`Suspended`], which lifts the bar for each write so the two do not tear each other.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{self, Write};

/// A bar of `len` steps on stderr, or a hidden one when `hidden` (`--json`).
pub fn bar(len: usize, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}

/// A writer whose every write and flush happens with `bar` lifted off the terminal.
pub struct Suspended<'b, W> {
    /// The bar to lift.
    pub bar: &'b ProgressBar,
    /// Where the bytes go.
    pub inner: W,
}

impl<W: Write> Write for Suspended<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bar.suspend(|| self.inner.write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.bar.suspend(|| self.inner.write_all(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.bar.suspend(|| self.inner.flush())
    }
}
