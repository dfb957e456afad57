//! What a CNI runtime hands the plugin: a command, `CNI_ARGS` and a configuration, any bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plugin_shim::fuzzing::cni_input(data));
