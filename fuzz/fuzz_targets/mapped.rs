//! `mapped`: see `favor_testkit::check_mapped`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| favor_testkit::check_mapped(data));
