//! The parsers of checks on the LAN (ARP, neighbor discovery, the routing tables) never panic
//! on any bytes: random ones, valid frames with a byte changed or cut short, and the committed
//! corpus of the cargo-fuzz target `lan_frames` (`plugin_shim::fuzzing::lan_frames`, whose
//! checks these run).

use plugin_shim::fuzzing::lan_frames;
use plugin_shim::probe::packet;
use proptest::prelude::*;

fn corpus() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/lan_frames");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.expect("corpus entry").path();
            std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        })
        .collect()
}

#[test]
fn the_lan_frames_corpus_holds() {
    let inputs = corpus();
    for input in &inputs {
        lan_frames(input);
    }
    assert!(
        inputs.len() >= 5,
        "the corpus is committed: {} inputs",
        inputs.len()
    );
    // The seeds are real frames: some read as ARP, some as neighbor discovery.
    assert!(inputs.iter().any(|i| packet::parse_arp(i).is_some()));
    assert!(inputs
        .iter()
        .any(|i| packet::parse_neighbor(i).is_some_and(|n| n.advert)));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_the_parsers(data in proptest::collection::vec(any::<u8>(), 0..160)) {
        lan_frames(&data);
    }

    #[test]
    fn changed_or_cut_frames_never_panic_the_parsers(which in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let inputs = corpus();
        let mut f = inputs[which.index(inputs.len())].clone();
        let i = at.index(f.len());
        f[i] = byte;
        lan_frames(&f);
        let n = cut.index(f.len() + 1);
        lan_frames(&f[..n]);
    }
}
