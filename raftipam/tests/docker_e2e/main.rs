//! End-to-end tests against a real dockerd: the `raftipam` binary (`up`, `shim`, `node
//! --plugin-socket`) as child processes serving the IPAM plugin socket, and the `docker` CLI
//! creating networks and running containers on it. One test binary (`cargo test --test
//! docker_e2e`), its scenarios in one file per behaviour:
//!
//! - `addresses.rs`: which address a container gets (ranges, `--ip`, two hosts, IPv6,
//!   macvlan);
//! - `pools.rs`: releases on `docker rm` / `docker network rm`, and `--ipam-opt`;
//! - `restarts.rs`: `raftipam up` and dockerd restarted under running containers;
//! - `failures.rs`: no quorum, no cluster, no plugin yet: dockerd is told why and not blocked;
//! - `helpers.rs`: what they share (the cluster through the CLI, [`helpers::Up`],
//!   [`helpers::Veth`]); the docker and child-process helpers are the binary harness,
//!   `tests/support/binary.rs`.
//!
//! `scripts/test.sh` starts containerd and dockerd and builds the `raftipam-busybox` image
//! (`scripts/dockerd.sh`). When no Docker daemon answers, each test prints a loud SKIP and
//! returns; that is the only skip.
//!
//! Every test has its own cluster (data dir, port), its own driver names (the socket's base
//! name), networks, subnets and container names, so tests run in parallel. Cleanup (containers,
//! networks, veth pairs, child processes) is done by Drop guards, so it happens on failure too.
//! Every wait is bounded. Containers only `sleep`.

// First: `require_docker!` is then in scope in the modules below.
#[macro_use]
#[path = "../support/binary.rs"]
mod binary;

mod helpers;

mod addresses;
mod failures;
mod pools;
mod restarts;
