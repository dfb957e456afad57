//! The router fuzz target's committed corpus (`fuzz/corpus/router/`), replayed on stable in CI
//! through the same function cargo-fuzz drives (`fuzz/router_call.rs`).

include!("../fuzz/router_call.rs");

#[test]
fn the_router_corpus_holds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/router");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.expect("corpus entry").path();
        router_call(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
        n += 1;
    }
    assert!(n >= 10, "the corpus is committed: {n} inputs");
}
