//! The `raftipam` binary's code: the command line (`cli`, one module per command group), the
//! web view and the metrics server that only the binary serves. A library only so that the
//! binary stays a two-line `main` and the fuzz targets reach the config-file merge
//! ([`fuzzing`]); it is not an API to embed — embed `allocator_core` or `raft_node`.

mod cli;
mod http;
mod metrics;
mod web;

/// Parses the command line, runs the command, and maps errors to an exit status.
pub fn main() -> std::process::ExitCode {
    cli::main()
}

/// Entry points of the cargo-fuzz targets (`raftipam/fuzz/`), the same functions the unit
/// tests replay the committed corpus through.
#[doc(hidden)]
pub mod fuzzing {
    /// `config_file`: the first byte picks a command line, the rest is a config file's text;
    /// the merge ends in arguments or an error naming the file, never a panic.
    pub fn config_file(data: &[u8]) {
        crate::cli::config::fuzz(data)
    }
}
