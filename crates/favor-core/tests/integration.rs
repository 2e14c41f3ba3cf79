//! favor-core's integration tests, one binary: each file under tests/ is a module here, so the
//! crate and its generic kernels are compiled and linked once rather than once per file.
//! Run one file's tests with `cargo test -p favor-core --test integration <file>::`.

mod calibrated;
mod causal;
mod errors;
mod exact;
mod gerf;
mod golden;
mod hybrid;
mod hybrid_snapshot;
mod mapped;
mod peers;
mod precision;
mod saderf;
mod statistics;
mod structured;
