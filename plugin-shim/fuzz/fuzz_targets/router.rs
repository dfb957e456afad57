//! Calls of Docker's IPAM protocol, any method, any body, through the plugin's router.
#![no_main]
include!("../router_call.rs");
libfuzzer_sys::fuzz_target!(|data: &[u8]| router_call(data));
