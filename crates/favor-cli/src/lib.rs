//! The library behind the `favor` command: attention on `.npy` files (read and written by
//! `favor-npy`), PNG charts, the benchmark sweep and the fidelity study. The binary
//! (`src/main.rs`) only parses arguments and reports errors.

pub mod args;
pub mod attend;
pub mod bench;
pub mod demo;
pub mod fidelity;
pub mod import;
pub mod plot;
pub mod progress;
