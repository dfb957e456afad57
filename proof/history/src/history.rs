//! The record format: what one line of a history file is ([`Event`]), how a file is read
//! ([`parse_history`] into a [`History`]), and how it fails ([`ParseError`], [`TruncatedLine`]).
//!
//! This module owns the on-disk format the chaos workload writes (one JSON object per line):
//! its field names and values are a contract with the writer, so a rename here keeps the JSON
//! names (`type`, `op`, ...) with `#[serde(rename)]`. It must never interpret a history: no
//! pairing of invokes with completions (that is the operation module), no judgement of what the
//! cluster did (that is the checker).

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The `type` of an event: an operation's invoke, or one of its three possible completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The client is about to send the request (record it before sending).
    Invoke,
    /// The operation took effect; the value carries its result.
    Ok,
    /// The operation certainly did not take effect (the allocator refused it).
    Fail,
    /// Unknown outcome (timeout, connection reset): it may take effect at any time after its
    /// invoke, or never. The process must not be used again.
    Info,
}

impl EventKind {
    /// The name used in the history's `type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Invoke => "invoke",
            EventKind::Ok => "ok",
            EventKind::Fail => "fail",
            EventKind::Info => "info",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `op` of an event: which operation it belongs to. Only `allocate`, `release` and
/// `who_has` are checked; every other operation name (`heartbeat`, `report`, `pool_create`,
/// ...) is kept and counted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum OperationKind {
    /// Allocate an address to an owner. Invoke value: `{pool, addr, owner}` with `addr` the
    /// requested address or `null` for any free one. `ok` value: `addr` is the address granted.
    /// A `fail` may carry `{"held_by": OWNER}` when the requested address was held by another.
    Allocate,
    /// Release an owner's address. Value `{pool, addr, owner}`. Releasing an address that owner
    /// does not hold is a no-op that still answers `ok`.
    Release,
    /// Read who holds an address, linearizably. Invoke value `{addr}`; `ok` value
    /// `{addr, owner}` with `owner` null when the address is free.
    WhoHas,
    /// Any other operation, by its name: counted, not checked.
    Other(String),
}

impl OperationKind {
    /// The name used in the history's `op` field.
    pub fn as_str(&self) -> &str {
        match self {
            OperationKind::Allocate => "allocate",
            OperationKind::Release => "release",
            OperationKind::WhoHas => "who_has",
            OperationKind::Other(name) => name,
        }
    }

    /// True for the three operations the checker checks: allocate, release, who_has.
    pub fn is_address_operation(&self) -> bool {
        matches!(
            self,
            OperationKind::Allocate | OperationKind::Release | OperationKind::WhoHas
        )
    }
}

impl From<String> for OperationKind {
    fn from(name: String) -> OperationKind {
        match name.as_str() {
            "allocate" => OperationKind::Allocate,
            "release" => OperationKind::Release,
            "who_has" => OperationKind::WhoHas,
            _ => OperationKind::Other(name),
        }
    }
}

impl From<OperationKind> for String {
    fn from(kind: OperationKind) -> String {
        match kind {
            OperationKind::Other(name) => name,
            known => known.as_str().to_owned(),
        }
    }
}

impl fmt::Display for OperationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the history: an operation's invoke or completion, by one client process.
///
/// ```json
/// {"process":3,"type":"invoke","op":"allocate","value":{"pool":"global/10.0.0.0/16","addr":null,"owner":"h1/p3-17"},"node":2,"t_ns":123456}
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The client process. It runs one operation at a time (invoke, then its completion) and
    /// retires after an `info`.
    pub process: u64,
    /// Invoke or completion (`"type"` in JSON).
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// The operation it belongs to (`"op"` in JSON).
    #[serde(rename = "op")]
    pub operation: OperationKind,
    /// Its arguments (invoke) or result (completion); for address operations the fields of
    /// [`AddrValue`], for other operations anything.
    #[serde(default)]
    pub value: serde_json::Value,
    /// The node the client talked to, if known.
    #[serde(default)]
    pub node: Option<u64>,
    /// Monotonic nanoseconds since the start of the run, from one clock shared by every process.
    pub t_ns: u64,
}

impl Event {
    /// The value of an address operation as its typed fields.
    ///
    /// # Errors
    ///
    /// When the value is not a JSON object, or a field has the wrong type.
    pub fn addr_value(&self) -> Result<AddrValue, String> {
        if !self.value.is_object() {
            return Err(format!("value must be a JSON object, found {}", self.value));
        }
        AddrValue::deserialize(&self.value).map_err(|e| e.to_string())
    }
}

/// The value of an `allocate`, `release` or `who_has` event (unknown fields are ignored).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrValue {
    /// The pool (`space/subnet[/range]`); informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The address: requested (allocate invoke; `null` = any), granted (allocate `ok`),
    /// released, or read.
    #[serde(default)]
    pub addr: Option<IpAddr>,
    /// The owner allocating or releasing; for a `who_has` `ok`, the owner read (`null` = free).
    #[serde(default)]
    pub owner: Option<String>,
    /// On an allocate `fail`: the owner that held the requested address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
}

impl From<AddrValue> for serde_json::Value {
    fn from(v: AddrValue) -> serde_json::Value {
        use serde_json::Value;
        let mut m = serde_json::Map::new();
        if let Some(pool) = v.pool {
            m.insert("pool".into(), Value::String(pool));
        }
        m.insert(
            "addr".into(),
            v.addr.map_or(Value::Null, |a| Value::String(a.to_string())),
        );
        m.insert("owner".into(), v.owner.map_or(Value::Null, Value::String));
        if let Some(holder) = v.held_by {
            m.insert("held_by".into(), Value::String(holder));
        }
        Value::Object(m)
    }
}

/// A parsed history file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The events, in file order; a report's event index (`#12`) is a position in this list.
    pub events: Vec<Event>,
    /// The 1-based line number of each event (blank lines are skipped, so they can differ).
    pub lines: Vec<usize>,
    /// Set when the last line was cut short (a writer killed mid-line) and has been dropped.
    pub truncated_last_line: Option<TruncatedLine>,
}

/// A history reads as its events: `check(&history, &final_state)`.
impl std::ops::Deref for History {
    type Target = [Event];

    fn deref(&self) -> &[Event] {
        &self.events
    }
}

/// A last line that did not parse and had no final newline: a crashed writer's partial write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruncatedLine {
    /// Its 1-based line number.
    pub line: usize,
    /// Its beginning.
    pub excerpt: String,
    /// Why it did not parse.
    pub error: String,
}

/// A history line that is not a valid [`Event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
    /// The line's beginning.
    pub excerpt: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "history line {}: {} (line: {})",
            self.line, self.message, self.excerpt
        )
    }
}

impl std::error::Error for ParseError {}

/// Parses a JSON-lines history: one [`Event`] per line, blank lines ignored.
///
/// A malformed line is an error naming its line number, except the last line when the text
/// does not end with a newline: that is a writer killed mid-line, dropped and reported in
/// [`History::truncated_last_line`].
///
/// # Errors
///
/// A [`ParseError`] naming the first malformed line (other than a truncated last one).
pub fn parse_history(text: &str) -> Result<History, ParseError> {
    let unterminated = !text.trim_end_matches([' ', '\t', '\r']).ends_with('\n');
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    let mut history = History {
        events: Vec::with_capacity(lines.len()),
        lines: Vec::with_capacity(lines.len()),
        truncated_last_line: None,
    };
    for (k, &(line, l)) in lines.iter().enumerate() {
        match serde_json::from_str::<Event>(l) {
            Ok(event) => {
                history.events.push(event);
                history.lines.push(line);
            }
            Err(e) if k + 1 == lines.len() && unterminated => {
                history.truncated_last_line = Some(TruncatedLine {
                    line,
                    excerpt: excerpt(l),
                    error: e.to_string(),
                });
            }
            Err(e) => {
                return Err(ParseError {
                    line,
                    message: e.to_string(),
                    excerpt: excerpt(l),
                });
            }
        }
    }
    Ok(history)
}

fn excerpt(line: &str) -> String {
    const MAX: usize = 160;
    match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_owned(),
    }
}

/// An event time (`t_ns`) for people: seconds with microseconds.
pub(crate) fn format_time(t_ns: u64) -> String {
    format!(
        "{}.{:06}s",
        t_ns / 1_000_000_000,
        (t_ns % 1_000_000_000) / 1_000
    )
}
