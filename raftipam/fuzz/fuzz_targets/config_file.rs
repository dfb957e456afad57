//! Any text as the TOML config file, merged into one of a few command lines and parsed by
//! clap: arguments or an error that names the file, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| raftipam::fuzzing::config_file(data));
