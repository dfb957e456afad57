//! The `raftipam` binary: a thin shell over the libraries (`raft_node`, `plugin_shim`,
//! `allocator_core`); everything it does is in this package's library (`src/lib.rs`).

fn main() -> std::process::ExitCode {
    raftipam::main()
}
