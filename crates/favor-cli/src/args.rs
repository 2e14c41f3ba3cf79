//! The CLI's error type, fallible buffers, and one command's arguments read with clap.
//!
//! The grammar is `favor <command> [--name value | --name=value | --flag]...`; each command's
//! flags are a `#[derive(clap::Args)]` struct next to the command. An unknown option is an
//! error rather than silently ignored, and every parse error is one line, exit status 2.

use std::fmt;

/// An error the `favor` binary reports as one line on stderr, exiting with [`CliError::code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// The line to print (without a trailing newline).
    pub message: String,
    /// Process exit status: 2 for bad usage or bad input (including an output path that
    /// cannot be written and sizes beyond the memory available), 1 for anything else.
    pub code: i32,
}

impl CliError {
    /// Bad usage or bad input (exit status 2).
    pub fn input(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 2,
        }
    }

    /// A failure that is not the caller's input (exit status 1), e.g. a report that cannot
    /// be printed or an internal error.
    pub fn failure(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 1,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// `"{what}: cannot allocate 1.50 GiB (1610612736 bytes): out of memory"`: favor-tensor's
/// `Error::Alloc`, so the library and the binary word it alike; `bytes` is `None` when the
/// size overflows `usize`.
pub fn cannot_allocate(what: &'static str, bytes: Option<usize>) -> String {
    favor_tensor::Error::Alloc { what, bytes }.to_string()
}

/// The product of `dims`: how many elements a buffer for `what` needs, or exit status 2
/// when that overflows `usize`.
pub fn elements(what: &'static str, dims: &[usize]) -> CliResult<usize> {
    dims.iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| CliError::input(cannot_allocate(what, None)))
}

/// `n` copies of `value`, reserved fallibly: sizes that come from the command line or an
/// input file end in exit status 2 and one line naming `what`, not in an abort.
pub fn try_filled<T: Clone>(what: &'static str, n: usize, value: T) -> CliResult<Vec<T>> {
    let mut v = try_with_capacity(what, n)?;
    v.resize(n, value);
    Ok(v)
}

/// `n` zeros; see [`try_filled`].
pub fn try_zeros<T: Clone + Default>(what: &'static str, n: usize) -> CliResult<Vec<T>> {
    try_filled(what, n, T::default())
}

/// An empty vector with room for `n` elements; see [`try_filled`].
pub fn try_with_capacity<T>(what: &'static str, n: usize) -> CliResult<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| CliError::input(cannot_allocate(what, n.checked_mul(size_of::<T>()))))?;
    Ok(v)
}

/// The items of an iterator of known length; see [`try_filled`].
pub fn try_collect<T>(
    what: &'static str,
    items: impl ExactSizeIterator<Item = T>,
) -> CliResult<Vec<T>> {
    let mut v = try_with_capacity(what, items.len())?;
    v.extend(items);
    Ok(v)
}

/// Result alias for CLI code.
pub type CliResult<T> = Result<T, CliError>;

/// The arguments that follow a command's name, before clap reads them into that command's
/// flags (a `#[derive(clap::Args)]` struct) with [`Args::parse`]. The binary parses its
/// whole command line with clap at once; this entry point lets a caller (or a test) parse one
/// command's arguments on their own, through the same definitions.
#[derive(Debug, Clone)]
pub struct Args {
    rest: Vec<String>,
}

impl Args {
    /// Wraps the arguments that follow the command name.
    pub fn new(args: impl IntoIterator<Item = String>) -> Self {
        Self {
            rest: args.into_iter().collect(),
        }
    }

    /// Reads the arguments as the flags `F` of the command `name`: `--name value`,
    /// `--name=value` and flags, given in any order; given twice, the last one wins; a
    /// misspelt or unknown option is an error, never silently ignored. Errors are usage
    /// errors (exit status 2), one line each ([`usage_error`]).
    pub fn parse<F: clap::Args + clap::FromArgMatches>(self, name: &'static str) -> CliResult<F> {
        let cmd = F::augment_args(command(name).no_binary_name(true));
        let matches = cmd.try_get_matches_from(self.rest).map_err(usage_error)?;
        F::from_arg_matches(&matches).map_err(usage_error)
    }
}

/// A clap command with the settings every `favor` command shares: an option given twice
/// takes its last value, as the hand-written reader before clap did.
pub fn command(name: &'static str) -> clap::Command {
    clap::Command::new(name).args_override_self(true)
}

/// A clap parse error as one line with exit status 2: clap's message without its usage
/// block and hints (`favor help` and `favor <command> --help` give those), e.g.
/// `invalid value 'x' for '--features <M>': invalid digit found in string`.
pub fn usage_error(e: clap::Error) -> CliError {
    let text = e.render().to_string();
    let mut parts = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if !line.is_empty() && !line.starts_with("tip:") {
            parts.push(line.strip_prefix("error: ").unwrap_or(line));
        }
    }
    CliError::input(format!("{} (see `favor help`)", parts.join(" ")))
}
