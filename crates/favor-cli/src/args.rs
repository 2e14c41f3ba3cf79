//! A small command-line argument reader, and the CLI's error type.
//!
//! The grammar is `favor <command> [--name value | --name=value | --flag]...`. Each command
//! takes the options it knows and then calls [`Args::finish`], which rejects leftovers, so a
//! misspelt option is an error rather than silently ignored.

use std::fmt;
use std::str::FromStr;

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

/// The options of one command, consumed as the command reads them.
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

    /// Takes `--name` (a flag without a value); `true` if it was present.
    pub fn flag(&mut self, name: &str) -> bool {
        let key = format!("--{name}");
        let before = self.rest.len();
        self.rest.retain(|a| *a != key);
        self.rest.len() != before
    }

    /// Takes `--name value` or `--name=value`. Given twice, the last one wins.
    pub fn value(&mut self, name: &str) -> CliResult<Option<String>> {
        let key = format!("--{name}");
        let prefix = format!("--{name}=");
        let mut found = None;
        let mut i = 0;
        while i < self.rest.len() {
            if self.rest[i] == key {
                if i + 1 >= self.rest.len() {
                    return Err(CliError::input(format!("{key} needs a value")));
                }
                found = Some(self.rest.remove(i + 1));
                self.rest.remove(i);
            } else if let Some(v) = self.rest[i].strip_prefix(&prefix) {
                found = Some(v.to_string());
                self.rest.remove(i);
            } else {
                i += 1;
            }
        }
        Ok(found)
    }

    /// Takes `--name value` and parses it.
    pub fn parse<T: FromStr>(&mut self, name: &str) -> CliResult<Option<T>>
    where
        T::Err: fmt::Display,
    {
        self.value(name)?
            .map(|s| {
                s.parse::<T>()
                    .map_err(|e| CliError::input(format!("--{name} {s:?}: {e}")))
            })
            .transpose()
    }

    /// Takes `--name a,b,c` and parses each comma-separated item.
    pub fn list<T: FromStr>(&mut self, name: &str) -> CliResult<Option<Vec<T>>>
    where
        T::Err: fmt::Display,
    {
        self.value(name)?
            .map(|s| {
                s.split(',')
                    .map(|item| {
                        item.trim()
                            .parse::<T>()
                            .map_err(|e| CliError::input(format!("--{name} item {item:?}: {e}")))
                    })
                    .collect()
            })
            .transpose()
    }

    /// Takes `--name value`, which must be present.
    pub fn required(&mut self, name: &str) -> CliResult<String> {
        self.value(name)?
            .ok_or_else(|| CliError::input(format!("missing required option --{name}")))
    }

    /// Fails if any argument was not taken.
    pub fn finish(self) -> CliResult<()> {
        match self.rest.first() {
            None => Ok(()),
            Some(a) => Err(CliError::input(format!(
                "unexpected argument {a:?} (see `favor help`)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Args {
        Args::new(s.split_whitespace().map(String::from))
    }

    #[test]
    fn values_flags_and_leftovers() {
        let mut a = args("--q a.npy --causal --features=128 --m 1,2,3");
        assert_eq!(a.value("q").unwrap().as_deref(), Some("a.npy"));
        assert!(a.flag("causal"));
        assert!(!a.flag("causal"));
        assert_eq!(a.parse::<usize>("features").unwrap(), Some(128));
        assert_eq!(a.list::<usize>("m").unwrap(), Some(vec![1, 2, 3]));
        assert!(a.finish().is_ok());
    }

    #[test]
    fn errors_are_usage_errors() {
        let mut a = args("--features x --q");
        assert_eq!(a.parse::<usize>("features").unwrap_err().code, 2);
        assert_eq!(a.value("q").unwrap_err().code, 2);
        let mut b = args("--oops 1");
        assert!(b.required("out").is_err());
        assert!(b.finish().unwrap_err().message.contains("--oops"));
    }
}
