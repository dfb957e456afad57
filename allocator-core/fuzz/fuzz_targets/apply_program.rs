//! Command programs through `State::apply`: every invariant after every step.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| allocator_core::fuzzing::apply_program(data));
