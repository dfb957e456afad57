//! Calls of Docker's IPAM protocol, any method, any body, through the plugin's router.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plugin_shim::fuzzing::router_call(data));
