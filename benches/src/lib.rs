//! The favor-simd benchmark workload for the criterion benches and examples in this package.
//! Its one home is `favor_cli::workload` (also run by `favor bench`); this crate re-exports it.

pub use favor_cli::workload::*;
