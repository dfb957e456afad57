//! Any bytes as a snapshot or backup: an error, or a valid state that re-encodes stably.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| allocator_core::fuzzing::snapshot_decode(data));
