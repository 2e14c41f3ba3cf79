//! `feature_maps`: see `favor_testkit::check_feature_maps`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| favor_testkit::check_feature_maps(data));
