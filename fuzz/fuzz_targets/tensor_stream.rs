//! `tensor_stream`: see `favor_testkit::check_tensor_stream`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| favor_testkit::check_tensor_stream(data));
