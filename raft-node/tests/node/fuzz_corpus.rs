//! The committed corpora of raft-node's fuzz targets (`fuzz/corpus/<target>/`), replayed on
//! stable in every test run: the same functions cargo-fuzz drives (`raft_node::fuzzing`), so
//! what the fuzzer once found stays fixed. (`config_file`'s corpus is replayed by the
//! binary's own tests, in `src/cli/config.rs`.)
//!
//! `RAFTIPAM_FUZZ_SEEDS=1 cargo test --release -p raft-node --test node fuzz_corpus` (re)writes
//! the starting inputs (`fuzzing::seeds`) into the corpora.

use std::path::{Path, PathBuf};

use raft_node::fuzzing::{seeds, snapshot, wire};

fn dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = dir(target);
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.expect("corpus entry").path();
        out.push(std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
    }
    out
}

/// The seeds are what a node really reads: every one decodes (so the corpora start from
/// valid messages, and a change of the wire format that breaks them shows here).
#[test]
fn the_seeds_decode() {
    let write = std::env::var_os("RAFTIPAM_FUZZ_SEEDS").is_some();
    for (target, name, bytes) in seeds() {
        match target {
            "wire" => assert!(wire(&bytes) >= 1, "seed {name} decodes nothing"),
            "snapshot" => assert!(snapshot(&bytes), "seed {name} does not restore"),
            other => panic!("a seed for an unknown target {other}"),
        }
        if write {
            let d = dir(target);
            std::fs::create_dir_all(&d).expect("corpus dir");
            std::fs::write(d.join(format!("seed-{name}")), &bytes).expect("write seed");
        }
    }
}

#[test]
fn the_split_write_seed_is_two_requests_and_a_cut_one_is_none() {
    let (_, _, both) = seeds()
        .into_iter()
        .find(|(_, n, _)| *n == "api-write-read")
        .expect("seed");
    assert_eq!(wire(&both), 2);
    // Cut inside the second frame: only the first request decodes.
    assert_eq!(wire(&both[..both.len() - 3]), 1);
}

/// Runs `f` on every input of `target`'s committed corpus (at least 10 of them).
fn replay(target: &str, f: impl Fn(&[u8])) {
    let inputs = corpus(target);
    assert!(
        inputs.len() >= 10,
        "the {target} corpus is committed: {} inputs",
        inputs.len()
    );
    for input in inputs {
        f(&input);
    }
}

#[test]
fn the_wire_corpus_holds() {
    replay("wire", |b| {
        wire(b);
    });
}

#[test]
fn the_snapshot_corpus_holds() {
    replay("snapshot", |b| {
        snapshot(b);
    });
}
