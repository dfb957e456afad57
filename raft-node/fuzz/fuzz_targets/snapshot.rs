//! Bytes as a snapshot sent by a leader: an error, or a state machine that holds every
//! invariant and re-encodes stably.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    raft_node::fuzzing::snapshot(data);
});
