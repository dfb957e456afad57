//! raft-node's integration tests, one binary: in-process clusters (real TCP on loopback, real
//! RocksDB directories) and the fuzz targets' committed corpora. The tests that run the
//! `raftipam` binary as processes are the binary's own (raftipam/tests/cli).

#[path = "../in_process/mod.rs"]
mod in_process;

mod cluster;
mod fuzz_corpus;
