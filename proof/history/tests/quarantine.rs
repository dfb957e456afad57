//! (d) Quarantine: an address whose conflict report was acknowledged while it was free is not
//! handed out by an allocation invoked after the acknowledgement, unless a clear could have
//! come between.

mod common;

use common::*;
use raftipam_history::*;

fn quarantine_violations(r: &Report) -> Vec<&Violation> {
    r.of_property("quarantine").collect()
}

#[test]
fn an_address_handed_out_after_its_quarantine_was_acknowledged_is_a_violation() {
    // 10.0.0.7 is reported (free: quarantined) and acknowledged at 20; an allocation invoked
    // at 30 is granted it anyway, and so is a requested one whose outcome was unknown but
    // which the final state holds.
    let h = Builder::default()
        .report_conflict(1, "10.0.0.7", true, 10, 20, EventKind::Ok)
        .alloc_ok(2, "a", "10.0.0.7", 30, 40)
        .release(2, "a", "10.0.0.7", 50, 60, EventKind::Ok)
        .alloc_info(3, "b", Some("10.0.0.7"), 70, 80)
        .build();
    let r = assert_fails_with(&h, &fin(&[("10.0.0.7", "b")]), "quarantined_handed_out");
    let v = quarantine_violations(&r);
    assert_eq!(v.len(), 1, "{r}");
    match v[0] {
        Violation::QuarantinedHandedOut {
            addr,
            allocations,
            total,
            report,
        } => {
            assert_eq!(addr.to_string(), "10.0.0.7");
            assert_eq!(*total, 2);
            let owners: Vec<_> = allocations.iter().map(|a| a.owner.clone()).collect();
            assert_eq!(owners, [Some("a".to_string()), Some("b".to_string())]);
            assert_eq!(report.completion_ns, Some(20));
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        v[0].addr().map(|a| a.to_string()).as_deref(),
        Some("10.0.0.7")
    );
    // The other properties hold: this is (d) alone.
    assert_eq!(r.violations.len(), 1, "{r}");
}

#[test]
fn a_clean_history_with_quarantines_passes() {
    let h = Builder::default()
        // Quarantined at 20: the next allocations get other addresses, a request for it fails.
        .report_conflict(1, "10.0.0.7", true, 10, 20, EventKind::Ok)
        .alloc_ok(2, "a", "10.0.0.8", 30, 40)
        .alloc_fail(3, "b", "10.0.0.7", None, 30, 45)
        // An allocation invoked before the report's acknowledgement may precede the report
        // (which then found the address held: not quarantined).
        .alloc_ok(4, "c", "10.0.0.9", 5, 25)
        .report_conflict(5, "10.0.0.9", false, 12, 22, EventKind::Ok)
        // A quarantine acknowledged at 20 on .10 may also be preceded by an allocation that
        // was invoked before the acknowledgement.
        .report_conflict(6, "10.0.0.10", true, 10, 20, EventKind::Ok)
        .alloc_ok(7, "d", "10.0.0.10", 15, 35)
        .release(7, "d", "10.0.0.10", 36, 37, EventKind::Ok)
        // Reports that failed or whose outcome is unknown prove nothing.
        .report_conflict(8, "10.0.0.11", true, 10, 20, EventKind::Fail)
        .alloc_ok(9, "e", "10.0.0.11", 30, 40)
        .report_conflict(10, "10.0.0.12", true, 10, 20, EventKind::Info)
        .alloc_ok(11, "f", "10.0.0.12", 30, 40)
        // Cleared, then handed out again.
        .clear_conflict(12, "10.0.0.7", 50, 60, EventKind::Ok)
        .alloc_ok(13, "g", "10.0.0.7", 70, 80)
        // A clear whose outcome is unknown may have taken effect before the allocation.
        .report_conflict(14, "10.0.0.13", true, 10, 20, EventKind::Ok)
        .clear_conflict(15, "10.0.0.13", 50, 60, EventKind::Info)
        .alloc_ok(16, "h", "10.0.0.13", 70, 80)
        .build();
    let r = assert_passes(
        &h,
        &fin(&[
            ("10.0.0.8", "a"),
            ("10.0.0.9", "c"),
            ("10.0.0.11", "e"),
            ("10.0.0.12", "f"),
            ("10.0.0.7", "g"),
            ("10.0.0.13", "h"),
        ]),
    );
    assert_eq!(r.summary.by_operation[REPORT_CONFLICT].ok, 4);
    assert_eq!(r.summary.by_operation[CLEAR_CONFLICT].ok, 1);
}

#[test]
fn a_clear_before_the_report_or_a_refused_clear_does_not_excuse() {
    let h = Builder::default()
        // The clear completed before the report was invoked: it cleared nothing of it.
        .clear_conflict(1, "10.0.0.7", 1, 5, EventKind::Ok)
        .report_conflict(2, "10.0.0.7", true, 10, 20, EventKind::Ok)
        // A refused clear had no effect.
        .clear_conflict(3, "10.0.0.7", 22, 25, EventKind::Fail)
        .alloc_ok(4, "a", "10.0.0.7", 30, 40)
        .build();
    assert_fails_with(&h, &fin(&[("10.0.0.7", "a")]), "quarantined_handed_out");
    // The same history with the clear acknowledged passes.
    let h = Builder::default()
        .clear_conflict(1, "10.0.0.7", 1, 5, EventKind::Ok)
        .report_conflict(2, "10.0.0.7", true, 10, 20, EventKind::Ok)
        .clear_conflict(3, "10.0.0.7", 22, 25, EventKind::Ok)
        .alloc_ok(4, "a", "10.0.0.7", 30, 40)
        .build();
    assert_passes(&h, &fin(&[("10.0.0.7", "a")]));
}

#[test]
fn an_unknown_allocation_absent_from_the_final_state_is_not_judged() {
    // It may never have happened.
    let h = Builder::default()
        .report_conflict(1, "10.0.0.7", true, 10, 20, EventKind::Ok)
        .alloc_info(2, "a", Some("10.0.0.7"), 30, 40)
        .build();
    assert_passes(&h, &fin(&[]));
}
