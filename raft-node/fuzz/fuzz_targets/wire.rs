//! Bytes from a connection through the framing and the request decoders of both channels,
//! and as log entry payloads: an error or a request that encodes again, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    raft_node::fuzzing::wire(data);
});
