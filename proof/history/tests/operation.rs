//! Pairing invokes with completions: a history that breaks its recording contract is reported,
//! event by event.

mod common;

use common::*;
use raftipam_history::*;

#[test]
fn ill_formed_histories_are_reported() {
    let mut b = Builder::default();
    b.ev(
        1,
        EventKind::Ok,
        OperationKind::Allocate,
        val(Some("10.0.0.1"), Some("a")),
        5,
    ); // no invoke
    b.alloc_info(2, "b", None, 10, 20)
        .alloc_ok(2, "c", "10.0.0.2", 30, 40); // reused after info
    b.alloc_ok(3, "c", "10.0.0.3", 50, 60); // owner reused
    b.ev(
        4,
        EventKind::Invoke,
        OperationKind::Release,
        serde_json::json!({"addr": "10.0.0.9"}),
        70,
    ); // no owner
    b.ev(
        5,
        EventKind::Invoke,
        OperationKind::WhoHas,
        serde_json::json!({"addr": "10.0.0.2"}),
        80,
    )
    .ev(
        5,
        EventKind::Ok,
        OperationKind::WhoHas,
        serde_json::json!({"addr": "10.0.0.2"}),
        90,
    );
    let r = check(&b.build(), &fin(&[("10.0.0.2", "c")]));
    let ill: Vec<usize> = r
        .of_property("well_formed")
        .map(|v| {
            if let Violation::IllFormed { index, .. } = v {
                *index
            } else {
                0
            }
        })
        .collect();
    assert_eq!(ill.len(), 5, "{r}");
    assert_eq!(r.violations.len(), 5, "{r}");
}
