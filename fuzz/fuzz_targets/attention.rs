//! `attention`: see `favor_testkit::check_attention`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| favor_testkit::check_attention(data));
