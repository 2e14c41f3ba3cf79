//! favor-tensor's integration tests, one binary: each file under tests/ is a module here, so the
//! crate and its generic kernels are compiled and linked once rather than once per file.
//! Run one file's tests with `cargo test -p favor-tensor --test integration <file>::`.

mod common;
mod compat;
mod data_aware;
mod fitted;
mod hosts;
mod hybrid;
mod tensor;
