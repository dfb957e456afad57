//! Random valid histories from a reference model pass; corrupted ones fail. And the timing of
//! a large history (ignored by default).

mod common;

use std::net::IpAddr;

use common::*;
use raftipam_history::*;

#[test]
fn random_valid_histories_pass_and_a_flipped_read_fails() {
    let (mut ghost_fail, mut flips, mut flip_fail) = (0, 0, 0);
    for seed in 0..200u64 {
        let (n_addrs, slots, width) = match seed % 4 {
            0 => (1, 3, 2_500),
            1 => (3, 5, 4_000),
            2 => (8, 8, 6_000),
            _ => (40, 12, 10_000),
        };
        let (h, f) = generate(seed, 300, n_addrs, slots, width);
        let r = check(&h, &f);
        assert!(r.passed(), "seed {seed}:\n{r}");
        assert!(r.summary.by_operation["who_has"].ok > 0);

        // A read naming an owner that never existed always fails.
        let rs = reads(&h);
        let mut rng = Rng(seed);
        let i = rs[rng.below(rs.len() as u64) as usize];
        let mut bad = h.clone();
        bad[i].value["owner"] = "ghost".into();
        let r = check(&bad, &f);
        let addr: IpAddr = bad[i].value["addr"].as_str().unwrap().parse().unwrap();
        assert!(
            r.violations
                .iter()
                .any(|v| v.property() == "linearizable" && v.addr() == Some(addr)),
            "seed {seed}:\n{r}"
        );
        ghost_fail += 1;

        // A plausible flip (held <-> free, or another real owner) usually fails.
        let mut bad = h.clone();
        let other = h
            .iter()
            .find(|e| {
                e.operation == OperationKind::Allocate
                    && e.kind == EventKind::Ok
                    && e.value["addr"] == h[i].value["addr"]
                    && e.value["owner"] != h[i].value["owner"]
            })
            .map(|e| e.value["owner"].clone());
        bad[i].value["owner"] = match (&h[i].value["owner"], other) {
            (serde_json::Value::Null, Some(o)) => o,
            (serde_json::Value::Null, None) => continue,
            _ => serde_json::Value::Null,
        };
        flips += 1;
        if !check(&bad, &f).passed() {
            flip_fail += 1;
        }
    }
    eprintln!("ghost reads caught: {ghost_fail}/200; plausible flips caught: {flip_fail}/{flips}");
    assert!(
        flip_fail * 2 > flips,
        "plausible flips caught: {flip_fail}/{flips}"
    );
}

/// `cargo test --release -- --ignored --nocapture timing`
#[test]
#[ignore = "timing: run with --release -- --ignored --nocapture"]
fn timing_200k_events_over_5000_addresses() {
    let (h, f) = generate(42, 100_000, 5_000, 40, 40_000);
    let mut text = String::new();
    for e in &h {
        text.push_str(&serde_json::to_string(e).unwrap());
        text.push('\n');
    }
    let t = std::time::Instant::now();
    let parsed = parse_history(&text).unwrap();
    let parse = t.elapsed();
    let t = std::time::Instant::now();
    let r = check(&parsed.events, &f);
    let elapsed = t.elapsed();
    assert!(r.passed(), "{r}");
    eprintln!(
        "{} events ({} MB), {} addresses: parse {parse:?}, check {elapsed:?}",
        h.len(),
        text.len() / 1_000_000,
        r.summary.addresses
    );
    eprintln!("{}", r.summary);

    // One hot address: 20,000 operations, 10 concurrent processes.
    let (h, f) = generate(43, 20_000, 1, 10, 10_000);
    let t = std::time::Instant::now();
    let r = check(&h, &f);
    assert!(r.passed(), "{r}");
    eprintln!(
        "one hot address: {} events checked in {:?}",
        h.len(),
        t.elapsed()
    );

    // And the cost of an undecided address at the default cap.
    let mut b = owners_taking_turns(16);
    b.read(98, "10.0.0.1", Some("ghost"), 900, 1300);
    let t = std::time::Instant::now();
    let r = check(&b.build(), &fin(&[]));
    eprintln!(
        "one undecided address at the default cap: {:?} ({:?})",
        t.elapsed(),
        r.undecided
    );
}
