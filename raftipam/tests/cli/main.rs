//! The `raftipam` binary as real processes, one test binary: clusters killed with SIGKILL and
//! restarted from disk (`processes`), operations against a real dockerd (`ops`), mutual TLS
//! with real handshakes (`tls`), and the web view in a real browser (`web`). They share the
//! process harness (`support/binary.rs`) and raft-node's in-process helpers.

#[macro_use]
#[path = "../support/binary.rs"]
mod binary;
#[path = "../support/cni.rs"]
mod cni_support;
#[path = "../../../raft-node/tests/in_process/mod.rs"]
mod in_process;

mod cni;
mod hardening;
mod lan;
mod ops;
mod processes;
mod tls;
mod web;
