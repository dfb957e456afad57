//! Any text as the TOML config file, merged into one of a few command lines and parsed by
//! clap: arguments or an error that names the file, never a panic.
//!
//! The config merge lives in the binary's `cli` module (the binary is a thin shell over the
//! library), so the target compiles that module in; only `cli::config::fuzz` is called.
#![no_main]
#![allow(dead_code, unused_imports, clippy::result_large_err)]

#[path = "../../src/cli/mod.rs"]
mod cli;

libfuzzer_sys::fuzz_target!(|data: &[u8]| cli::config::fuzz(data));
