//! The fuzz targets' committed corpora (`fuzz/corpus/<target>/`), replayed on stable in CI,
//! plus a bounded run of random programs: the same functions cargo-fuzz drives
//! (`allocator_core::fuzzing`), so what the fuzzer once found stays fixed.

use std::path::Path;

use allocator_core::fuzzing::{apply_program, snapshot_decode};
use proptest::prelude::*;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.expect("corpus entry").path();
        out.push(std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
    }
    out
}

#[test]
fn the_apply_program_corpus_holds() {
    let inputs = corpus("apply_program");
    assert!(
        inputs.len() >= 10,
        "the corpus is committed: {} inputs",
        inputs.len()
    );
    for input in inputs {
        apply_program(&input);
    }
}

#[test]
fn the_snapshot_decode_corpus_holds() {
    let inputs = corpus("snapshot_decode");
    assert!(
        inputs.len() >= 10,
        "the corpus is committed: {} inputs",
        inputs.len()
    );
    for input in inputs {
        snapshot_decode(&input);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn random_programs_keep_every_invariant(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        apply_program(&data);
    }
}
