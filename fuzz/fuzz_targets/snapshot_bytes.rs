//! `snapshot_bytes`: see `favor_testkit::check_snapshot_bytes`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| favor_testkit::check_snapshot_bytes(data));
