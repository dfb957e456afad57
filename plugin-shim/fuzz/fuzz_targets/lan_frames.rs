//! Any bytes as an Ethernet frame (ARP, neighbor discovery) and as a routing table's text.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plugin_shim::fuzzing::lan_frames(data));
