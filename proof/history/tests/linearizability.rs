//! (c) linearizability through [`check`]: stale and impossible reads, `held_by` refusals, the
//! step limit, and a hot address.

mod common;

use std::net::IpAddr;

use common::*;
use raftipam_history::*;

#[test]
fn stale_read_after_release_is_not_linearizable() {
    let h = Builder::default()
        .alloc_ok(1, "a", "10.0.0.1", 10, 20)
        .release(1, "a", "10.0.0.1", 30, 40, EventKind::Ok)
        .read(2, "10.0.0.1", Some("a"), 50, 60)
        .build();
    let r = assert_fails_with(&h, &fin(&[]), "not_linearizable");
    let Some(Violation::NotLinearizable {
        linearized,
        stuck_on,
        state_after,
        operations,
        ..
    }) = r.of_property("linearizable").next()
    else {
        panic!()
    };
    assert_eq!(linearized.len(), 2);
    assert_eq!(state_after, &None);
    assert_eq!(
        stuck_on.as_ref().map(|o| o.kind.clone()),
        Some(OperationKind::WhoHas)
    );
    assert_eq!(operations.len(), 3);
    assert_eq!(r.violations.len(), 1, "{r}");
}

#[test]
fn read_of_an_owner_before_its_allocate_is_not_linearizable() {
    let h = Builder::default()
        .read(2, "10.0.0.1", Some("a"), 5, 8)
        .alloc_ok(1, "a", "10.0.0.1", 10, 20)
        .build();
    assert_fails_with(&h, &fin(&[("10.0.0.1", "a")]), "not_linearizable");
}

#[test]
fn read_of_free_while_surely_held_is_not_linearizable() {
    let h = Builder::default()
        .alloc_ok(1, "a", "10.0.0.1", 10, 20)
        .read(2, "10.0.0.1", None, 30, 40)
        .release(1, "a", "10.0.0.1", 50, 60, EventKind::Ok)
        .build();
    assert_fails_with(&h, &fin(&[]), "not_linearizable");
}

#[test]
fn fail_with_held_by() {
    let base = || {
        let mut b = Builder::default();
        b.alloc_ok(1, "a", "10.0.0.1", 10, 20)
            .release(1, "a", "10.0.0.1", 100, 110, EventKind::Ok);
        b
    };
    // Consistent: a holds it during the refusal.
    let h = base()
        .alloc_fail(2, "b", "10.0.0.1", Some("a"), 30, 40)
        .build();
    assert_passes(&h, &fin(&[]));
    // Inconsistent: the refusal names an owner that never held it, or comes after the release.
    let h = base()
        .alloc_fail(2, "b", "10.0.0.1", Some("q"), 30, 40)
        .build();
    assert_fails_with(&h, &fin(&[]), "not_linearizable");
    let h = base()
        .alloc_fail(2, "b", "10.0.0.1", Some("a"), 120, 130)
        .build();
    assert_fails_with(&h, &fin(&[]), "not_linearizable");
    // A fail without held_by is simply left out.
    let h = base()
        .alloc_fail(2, "b", "10.0.0.1", None, 120, 130)
        .build();
    assert_passes(&h, &fin(&[]));
}

#[test]
fn step_cap_reports_undecided() {
    // k owners each allocate and release one address, all concurrently, and a read in the
    // same window returns an owner that never existed: the search must exhaust an
    // exponential space to refute it.
    let mut b = owners_taking_turns(12);
    b.read(99, "10.0.0.1", Some("o0"), 900, 1300);
    b.read(98, "10.0.0.1", Some("ghost"), 900, 1300);
    let h = b.build();
    let t = std::time::Instant::now();
    let r = check_with(
        &h,
        &fin(&[]),
        &Limits {
            max_steps_per_address: 20_000,
        },
    );
    assert!(t.elapsed().as_secs() < 5);
    assert_eq!(
        r.undecided,
        vec!["10.0.0.1".parse::<IpAddr>().unwrap()],
        "{r}"
    );
    assert!(!r.passed());
    assert!(r.to_string().contains("undecided"));
}

#[test]
fn a_hot_address_is_decided_quickly() {
    // 2,000 operations on two addresses, 10 concurrent processes.
    let (h, f) = generate(7, 2_000, 2, 10, 10_000);
    let t = std::time::Instant::now();
    let r = check(&h, &f);
    assert!(r.passed(), "{r}");
    eprintln!(
        "hot addresses: {} events checked in {:?}",
        h.len(),
        t.elapsed()
    );
}
