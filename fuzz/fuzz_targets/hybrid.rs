//! `hybrid`: see `favor_testkit::check_hybrid`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| favor_testkit::check_hybrid(data));
