//! The `raftipam` binary.
fn main() {}
