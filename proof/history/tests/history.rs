//! The record format: parsing a history file, a truncated last line, the documented lines.

mod common;

use common::*;
use raftipam_history::*;

#[test]
fn parse_tolerates_a_truncated_last_line() {
    let h = Builder::default()
        .alloc_ok(1, "a", "10.0.0.1", 10, 20)
        .build();
    let mut text = String::new();
    for e in &h {
        text.push_str(&serde_json::to_string(e).unwrap());
        text.push_str("\n\n");
    }
    let parsed = parse_history(&text).unwrap();
    assert_eq!(parsed.events, h);
    assert_eq!(parsed.lines, vec![1, 3]);
    assert!(check(&parsed, &fin(&[("10.0.0.1", "a")])).passed());
    assert!(parsed.truncated_last_line.is_none());

    text.push_str(r#"{"process":2,"type":"inv"#);
    let parsed = parse_history(&text).unwrap();
    assert_eq!(parsed.events, h);
    assert_eq!(parsed.truncated_last_line.as_ref().map(|t| t.line), Some(5));

    // The same line terminated, or anywhere but last, is an error with its line number.
    text.push('\n');
    assert_eq!(parse_history(&text).unwrap_err().line, 5);
    let bad = format!(
        "{}\nnot json\n{}\n",
        serde_json::to_string(&h[0]).unwrap(),
        serde_json::to_string(&h[1]).unwrap()
    );
    let e = parse_history(&bad).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.to_string().contains("line 2"), "{e}");

    // The documented example lines parse.
    let example = r#"{"process":3,"type":"invoke","op":"allocate","value":{"pool":"global/10.0.0.0/16","addr":null,"owner":"h1/p3-17"},"node":2,"t_ns":123456}
{"process":3,"type":"ok","op":"allocate","value":{"pool":"global/10.0.0.0/16","addr":"10.0.0.5","owner":"h1/p3-17"},"node":2,"t_ns":130000}"#;
    let parsed = parse_history(example).unwrap();
    assert_eq!(parsed.events.len(), 2);
    assert_eq!(parsed.events[0].operation, OperationKind::Allocate);
    assert_passes(&parsed.events, &fin(&[("10.0.0.5", "h1/p3-17")]));
}

/// The renames in Rust (`operation`, `kind`, `by_operation`, `operations`) keep the JSON names
/// the harness writes and reads: the history's lines, and the report's artefacts.
#[test]
fn json_names_are_unchanged() {
    // A line as the chaos workload writes it (`serde_json::json!`: keys in sorted order).
    let line = r#"{"node":null,"op":"who_has","process":7,"t_ns":42,"type":"ok","value":{"addr":"10.0.0.1","owner":null}}"#;
    let parsed = parse_history(line).unwrap();
    assert!(parsed.truncated_last_line.is_none());
    let event = &parsed.events[0];
    assert_eq!(
        (
            event.process,
            event.kind,
            &event.operation,
            event.node,
            event.t_ns
        ),
        (7, EventKind::Ok, &OperationKind::WhoHas, None, 42)
    );
    assert_eq!(
        serde_json::to_string(event).unwrap(),
        r#"{"process":7,"type":"ok","op":"who_has","value":{"addr":"10.0.0.1","owner":null},"node":null,"t_ns":42}"#
    );
    let other: Event = serde_json::from_str(
        r#"{"process":1,"type":"invoke","op":"pool_create","value":{"subnet":"10.250.0.0/28"},"t_ns":1}"#,
    )
    .unwrap();
    assert_eq!(other.operation, OperationKind::Other("pool_create".into()));
    assert_eq!(serde_json::to_value(&other).unwrap()["op"], "pool_create");

    // The report: an operation's `op`, the summary's `by_op`, a violation's `ops`.
    let h = Builder::default()
        .alloc_ok(1, "a", "10.0.0.1", 10, 20)
        .release(1, "a", "10.0.0.1", 30, 40, EventKind::Ok)
        .read(2, "10.0.0.1", Some("a"), 50, 60)
        .build();
    let report = serde_json::to_value(check(&h, &fin(&[]))).unwrap();
    assert_eq!(report["summary"]["by_op"]["allocate"]["ok"], 1);
    let violation = &report["violations"][0];
    assert_eq!(violation["kind"], "not_linearizable");
    assert_eq!(violation["ops"][0]["op"], "allocate");
    assert_eq!(violation["stuck_on"]["op"], "who_has");
}
