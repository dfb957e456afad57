//! The checker on small histories: (a) no double hold, (b) durability and agreement, and how
//! unknown outcomes are resolved against the final state.

mod common;

use common::*;
use raftipam_history::*;

#[test]
fn clean_concurrent_history_passes() {
    let h = Builder::default()
        .alloc_ok(1, "a", "10.0.0.1", 10, 50)
        .alloc_ok(2, "b", "10.0.0.2", 20, 40) // concurrent with a's allocate
        .read(3, "10.0.0.1", None, 15, 30) // concurrent with a's allocate: may read free...
        .read(4, "10.0.0.1", Some("a"), 25, 60) // ...or a
        .release(1, "a", "10.0.0.1", 60, 90, EventKind::Ok)
        .read(3, "10.0.0.1", Some("a"), 70, 80) // concurrent with the release
        .alloc_ok(2, "c", "10.0.0.1", 85, 120) // concurrent with the release: after it
        .read(4, "10.0.0.1", Some("c"), 121, 130)
        .read(3, "10.0.0.2", Some("b"), 100, 110)
        .ev(
            5,
            EventKind::Invoke,
            OperationKind::Other("heartbeat".into()),
            serde_json::json!("h1"),
            5,
        )
        .ev(
            5,
            EventKind::Ok,
            OperationKind::Other("heartbeat".into()),
            serde_json::Value::Null,
            6,
        )
        .build();
    let r = assert_passes(&h, &fin(&[("10.0.0.1", "c"), ("10.0.0.2", "b")]));
    assert_eq!(r.summary.addresses, 2);
    assert_eq!(
        r.summary.by_operation["allocate"],
        OperationCounts {
            invoke: 3,
            ok: 3,
            ..OperationCounts::default()
        }
    );
    assert_eq!(r.summary.by_operation["heartbeat"].ok, 1);
    assert_eq!(r.summary.ok_before(50), 3); // heartbeat at 6, read at 30, b at 40
    assert_eq!(r.summary.ok_before(51), 4);
    assert_eq!(r.summary.ok(), 10);
}

#[test]
fn two_owners_overlapping_is_a_double_hold() {
    // b's allocate completes before a's release is even invoked.
    let h = Builder::default()
        .alloc_ok(1, "a", "10.0.0.1", 10, 20)
        .alloc_ok(2, "b", "10.0.0.1", 30, 40)
        .release(1, "a", "10.0.0.1", 50, 60, EventKind::Ok)
        .build();
    let r = assert_fails_with(&h, &fin(&[("10.0.0.1", "b")]), "double_hold");
    let Some(Violation::DoubleHold {
        addr,
        pairs,
        total_pairs: 1,
    }) = r.of_property("no_double_hold").next()
    else {
        panic!("{r}")
    };
    assert_eq!(addr.to_string(), "10.0.0.1");
    assert_eq!(
        (
            pairs[0].first.owner.as_str(),
            pairs[0].second.owner.as_str()
        ),
        ("a", "b")
    );
    assert_eq!(
        pairs[0].first.release.as_ref().map(|o| o.invoke_index),
        Some(4)
    );
    // The same history is not linearizable either (b allocated a held address).
    assert!(kinds(&r).contains(&"not_linearizable"));

    // With the release invoked before b's allocate completed, it is fine.
    let h = Builder::default()
        .alloc_ok(1, "a", "10.0.0.1", 10, 20)
        .alloc_ok(2, "b", "10.0.0.1", 30, 55)
        .release(1, "a", "10.0.0.1", 50, 60, EventKind::Ok)
        .build();
    assert_passes(&h, &fin(&[("10.0.0.1", "b")]));
}

#[test]
fn acknowledged_allocation_missing_from_a_replica() {
    let h = Builder::default()
        .alloc_ok(1, "a", "10.0.0.1", 10, 20)
        .build();
    let mut f = fin(&[("10.0.0.1", "a")]);
    f.replicas.insert(2, vec![]);
    let r = assert_fails_with(&h, &f, "lost_allocation");
    let Some(Violation::LostAllocation { missing_on, .. }) = r
        .violations
        .iter()
        .find(|v| matches!(v, Violation::LostAllocation { .. }))
    else {
        panic!()
    };
    assert_eq!(missing_on, &vec![(2, None)]);
    assert!(kinds(&r).contains(&"replicas_differ"));
    // One root cause: the final state is not used as a read on that address.
    assert!(!kinds(&r).contains(&"not_linearizable"), "{r}");
    // Missing everywhere.
    assert_fails_with(&h, &fin(&[]), "lost_allocation");
}

#[test]
fn acknowledged_release_still_present() {
    let h = Builder::default()
        .alloc_ok(1, "a", "10.0.0.1", 10, 20)
        .release(1, "a", "10.0.0.1", 30, 40, EventKind::Ok)
        .build();
    let r = assert_fails_with(&h, &fin(&[("10.0.0.1", "a")]), "released_still_present");
    assert!(!kinds(&r).contains(&"lost_allocation"));
    // A release concurrent with its allocation may come first (a no-op): then it stays.
    let h = Builder::default()
        .alloc_ok(1, "a", "10.0.0.1", 10, 35)
        .release(2, "a", "10.0.0.1", 30, 40, EventKind::Ok)
        .build();
    assert_passes(&h, &fin(&[("10.0.0.1", "a")]));
}

#[test]
fn replicas_and_digests_that_differ() {
    let h = Builder::default()
        .alloc_ok(1, "a", "10.0.0.1", 10, 20)
        .alloc_info(2, "b", None, 10, 20)
        .build();
    let mut f = fin(&[("10.0.0.1", "a")]);
    f.replicas.insert(
        3,
        vec![
            ("10.0.0.1".parse().unwrap(), "a".into()),
            ("10.0.0.2".parse().unwrap(), "b".into()),
        ],
    );
    let r = assert_fails_with(&h, &f, "replicas_differ");
    let Some(Violation::ReplicasDiffer {
        reference: 1,
        node: 3,
        only_on_reference,
        only_on_node,
        differences: 1,
    }) = r
        .violations
        .iter()
        .find(|v| matches!(v, Violation::ReplicasDiffer { .. }))
    else {
        panic!("{r}")
    };
    assert!(only_on_reference.is_empty());
    assert_eq!(
        only_on_node,
        &vec![("10.0.0.2".parse().unwrap(), "b".to_owned())]
    );
    assert_eq!(r.violations.len(), 1, "{r}");

    let mut f = fin(&[("10.0.0.1", "a")]);
    f.digests = [
        (1, "x".to_owned()),
        (2, "x".to_owned()),
        (3, "y".to_owned()),
    ]
    .into();
    assert_fails_with(&h, &f, "digests_differ");
    f.digests.insert(3, "x".into());
    assert_passes(&h, &f);
}

#[test]
fn duplicate_and_unexplained_entries_in_the_final_state() {
    let h = Builder::default()
        .alloc_ok(1, "a", "10.0.0.1", 10, 20)
        .build();
    let r = assert_fails_with(
        &h,
        &fin(&[("10.0.0.1", "a"), ("10.0.0.1", "z")]),
        "duplicate_in_final_state",
    );
    assert!(kinds(&r).contains(&"unexpected_holder"));
    // An allocation applied twice (say, a retry) holds a second address.
    assert_fails_with(
        &h,
        &fin(&[("10.0.0.1", "a"), ("10.0.0.2", "a")]),
        "unexpected_holder",
    );
    assert_fails_with(&[], &FinalState::default(), "no_final_state");
}

#[test]
fn unknown_allocation_absent_from_final_state_is_accepted() {
    let h = Builder::default()
        .alloc_info(1, "a", Some("10.0.0.1"), 10, 20)
        .alloc_info(3, "x", None, 10, 20)
        .alloc_ok(2, "b", "10.0.0.1", 30, 40)
        .read(4, "10.0.0.1", Some("b"), 45, 50)
        .build();
    assert_passes(&h, &fin(&[("10.0.0.1", "b")]));
}

#[test]
fn unknown_allocation_present_in_final_state_happened() {
    // x asked for any address and timed out; the final state shows it got 10.0.0.1, which
    // b was granted and never released: they overlap.
    let h = Builder::default()
        .alloc_info(1, "x", None, 10, 20)
        .alloc_ok(2, "b", "10.0.0.1", 30, 40)
        .build();
    let mut f = fin(&[("10.0.0.1", "x")]);
    for es in f.replicas.values_mut() {
        es.push(("10.0.0.1".parse().unwrap(), "b".into()));
    }
    let r = assert_fails_with(&h, &f, "double_hold");
    let Some(Violation::DoubleHold { pairs, .. }) = r.of_property("no_double_hold").next() else {
        panic!()
    };
    assert!(pairs[0].first.allocate.addr_inferred);
    assert_eq!(pairs[0].first.in_final_state, vec![1, 2, 3]);

    // b holds 10.0.0.1 from before x's allocate was invoked and never releases it.
    let h = Builder::default()
        .alloc_ok(2, "b", "10.0.0.1", 1, 5)
        .alloc_info(1, "x", Some("10.0.0.1"), 10, 20)
        .build();
    assert_passes(&h, &fin(&[("10.0.0.1", "b")])); // x absent: it never happened
                                                   // Present: it happened, over b.
    let r = assert_fails_with(&h, &fin(&[("10.0.0.1", "x")]), "not_linearizable");
    assert!(
        kinds(&r).contains(&"double_hold") && kinds(&r).contains(&"lost_allocation"),
        "{r}"
    );
    // An unknown allocation may take effect long after its info: after a read of free.
    let h = Builder::default()
        .alloc_info(1, "x", Some("10.0.0.1"), 10, 20)
        .read(2, "10.0.0.1", None, 30, 40)
        .build();
    assert_passes(&h, &fin(&[]));
    assert_passes(&h, &fin(&[("10.0.0.1", "x")]));
    // ...unless it took effect after the read (long after its timeout): fine.
    let h = Builder::default()
        .alloc_info(1, "x", Some("10.0.0.1"), 35, 36)
        .read(2, "10.0.0.1", None, 30, 40)
        .build();
    assert_passes(&h, &fin(&[("10.0.0.1", "x")]));
    // Seen by a read but gone from the final state without a release: not linearizable.
    let h = Builder::default()
        .alloc_info(1, "x", None, 10, 20)
        .read(2, "10.0.0.1", Some("x"), 30, 40)
        .build();
    assert_fails_with(&h, &fin(&[]), "not_linearizable");
}
