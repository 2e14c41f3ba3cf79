//! `npy`: see `favor_testkit::check_npy`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| favor_testkit::check_npy(data));
