//! The `raftipam` binary: a thin shell over the `raft_node` library. Parsing is in
//! `cli/mod.rs`, one module per command group.

#![allow(clippy::result_large_err)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
