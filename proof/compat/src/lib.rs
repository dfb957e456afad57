//! Frozen bytes: every encoding raftipam persists or sends, pinned release by release.
//!
//! A crate's test builds a [`Catalog`] — one sample value of every variant of every type that
//! is written to disk or crosses a connection — and checks it against the golden files under
//! its `tests/compat/<release>/`: for every line of every release, the sample of that name
//! must still encode to exactly those bytes and those bytes must still decode to the sample.
//! A variant inserted, reordered or removed, or a field moved, added or removed, breaks a line
//! of an older release and fails the test; a variant appended at the end breaks nothing.
//!
//! The file of the release being built (the crate's version) must hold every sample: a new
//! variant gets its line when it is added. `RAFTIPAM_WRITE_COMPAT=1` appends the missing
//! lines of this release (it never rewrites a line, and never touches an older release).
//! A golden file is text: `name hex`, one sample per line.

use std::collections::BTreeMap;
use std::fmt::{Debug, Write as _};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

type Decode = Box<dyn Fn(&[u8]) -> Result<(), String>>;

struct Entry {
    bytes: Vec<u8>,
    decode: Decode,
}

/// Samples by name: `kind/Variant` (and `#2`, `#3` for more samples of one variant).
#[derive(Default)]
pub struct Catalog {
    entries: BTreeMap<String, Entry>,
}

/// The variant (or type) name of a value, from its `Debug` form.
fn variant_of<T: Debug>(v: &T) -> String {
    let d = format!("{v:?}");
    d.split([' ', '(', '{'])
        .next()
        .unwrap_or_default()
        .to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Catalog {
        Catalog::default()
    }

    fn unique(&self, base: String) -> String {
        if !self.entries.contains_key(&base) {
            return base;
        }
        (2..)
            .map(|n| format!("{base}#{n}"))
            .find(|n| !self.entries.contains_key(n))
            .unwrap_or(base)
    }

    /// Adds `value` (postcard) as `kind/Variant`.
    pub fn add<T>(&mut self, kind: &str, value: T)
    where
        T: Serialize + DeserializeOwned + PartialEq + Debug + 'static,
    {
        let name = self.unique(format!("{kind}/{}", variant_of(&value)));
        self.add_named(name, value);
    }

    /// Adds `value` (postcard) under `name` exactly.
    pub fn add_named<T>(&mut self, name: impl Into<String>, value: T)
    where
        T: Serialize + DeserializeOwned + PartialEq + Debug + 'static,
    {
        let name = name.into();
        let bytes = postcard::to_allocvec(&value)
            .unwrap_or_else(|e| panic!("{name}: the sample does not encode: {e}"));
        let decode: Decode = Box::new(move |b| {
            let back: T = postcard::from_bytes(b).map_err(|e| format!("do not decode: {e}"))?;
            if back == value {
                Ok(())
            } else {
                Err(format!("decode to {back:?}, not {value:?}"))
            }
        });
        self.entries.insert(name, Entry { bytes, decode });
    }

    /// Adds `value` (postcard) as `kind/Variant`, for a type without `PartialEq` (tarpc's
    /// generated messages, openraft's): its bytes must decode, and encode back to themselves.
    pub fn add_roundtrip<T>(&mut self, kind: &str, value: T)
    where
        T: Serialize + DeserializeOwned + Debug + 'static,
    {
        let name = self.unique(format!("{kind}/{}", variant_of(&value)));
        let bytes = postcard::to_allocvec(&value)
            .unwrap_or_else(|e| panic!("{name}: the sample does not encode: {e}"));
        let decode: Decode = Box::new(move |b| {
            let back: T = postcard::from_bytes(b).map_err(|e| format!("do not decode: {e}"))?;
            let again = postcard::to_allocvec(&back).map_err(|e| format!("re-encode: {e}"))?;
            (again == b)
                .then_some(())
                .ok_or_else(|| format!("decode to {back:?}, which encodes differently"))
        });
        self.entries.insert(name, Entry { bytes, decode });
    }

    /// Adds bytes of a format of our own (a snapshot, a JSON record) under `name`, with the
    /// check that `decode` makes of them (`Err`: what is wrong).
    pub fn add_bytes(
        &mut self,
        name: impl Into<String>,
        bytes: Vec<u8>,
        decode: impl Fn(&[u8]) -> Result<(), String> + 'static,
    ) {
        self.entries.insert(
            name.into(),
            Entry {
                bytes,
                decode: Box::new(decode),
            },
        );
    }

    /// Checks the catalog against `dir/<release>/<file>` for every release there, and that
    /// `release` (the crate being built) has a line for every sample. Panics with every
    /// problem found, each saying what to do.
    pub fn check(&self, dir: &Path, file: &str, release: &str) {
        let write = std::env::var_os("RAFTIPAM_WRITE_COMPAT").is_some();
        self.check_or_write(dir, file, release, write)
    }

    fn check_or_write(&self, dir: &Path, file: &str, release: &str, write: bool) {
        let mut problems = Vec::new();
        let mut releases: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().join(file).is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        releases.sort();
        let mut current: Option<Vec<String>> = None;
        for r in &releases {
            let path = dir.join(r).join(file);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let mut names = Vec::new();
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let at = format!("{}:{}", path.display(), n + 1);
                let Some((name, h)) = line.split_once(' ') else {
                    problems.push(format!("{at}: not `name hex`"));
                    continue;
                };
                names.push(name.to_string());
                let Some(golden) = unhex(h.trim()) else {
                    problems.push(format!("{at}: {name}: not hex"));
                    continue;
                };
                let Some(entry) = self.entries.get(name) else {
                    problems.push(format!(
                        "{at}: {name} of release {r} has no sample any more: a variant or type that release wrote was removed or renamed (encodings only grow: keep it, append new variants at the end)"
                    ));
                    continue;
                };
                if entry.bytes != golden {
                    problems.push(format!(
                        "{at}: {name} encodes differently from release {r}: {} now, {} then (a variant inserted or reordered, or a field changed: append instead, or add a versioned variant)",
                        hex(&entry.bytes),
                        hex(&golden)
                    ));
                }
                if let Err(e) = (entry.decode)(&golden) {
                    problems.push(format!("{at}: {name}: release {r}'s bytes {e}"));
                }
            }
            if r == release {
                current = Some(names);
            }
        }
        let have = current.unwrap_or_default();
        let missing: Vec<&String> = self.entries.keys().filter(|k| !have.contains(k)).collect();
        if !missing.is_empty() {
            let path = dir.join(release).join(file);
            if write {
                let mut text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
                    format!("# Frozen encodings of release {release}: `name hex`. Never edit a line; a new\n# variant gets a new line (RAFTIPAM_WRITE_COMPAT=1).\n")
                });
                for m in &missing {
                    let _ = writeln!(text, "{m} {}", hex(&self.entries[*m].bytes));
                }
                std::fs::create_dir_all(dir.join(release))
                    .and_then(|()| std::fs::write(&path, text))
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            } else {
                problems.push(format!(
                    "{}: release {release} has no line for {} sample(s) ({}): run the test once with RAFTIPAM_WRITE_COMPAT=1 and commit the file",
                    path.display(),
                    missing.len(),
                    missing
                        .iter()
                        .take(8)
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        assert!(
            problems.is_empty(),
            "{} encoding problem(s):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    enum Before {
        A(u8),
        B,
        C { x: u16 },
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    enum Inserted {
        A(u8),
        New,
        B,
        C { x: u16 },
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    enum Appended {
        A(u8),
        B,
        C { x: u16 },
        New,
    }

    fn golden(dir: &Path) {
        let mut c = Catalog::new();
        for v in [Before::A(1), Before::B, Before::C { x: 300 }] {
            c.add("e", v);
        }
        c.check_or_write(dir, "t.golden", "0.1.0", true);
    }

    #[test]
    fn an_inserted_variant_fails_and_an_appended_one_does_not() {
        let dir = std::env::temp_dir().join(format!("compat-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        golden(&dir);
        let text = std::fs::read_to_string(dir.join("0.1.0/t.golden")).expect("written");
        assert!(
            text.contains("e/B 01") && text.contains("e/C 02ac02"),
            "{text}"
        );

        let mut appended = Catalog::new();
        for v in [Appended::A(1), Appended::B, Appended::C { x: 300 }] {
            appended.add("e", v);
        }
        appended.check_or_write(&dir, "t.golden", "0.1.0", false);

        let mut inserted = Catalog::new();
        for v in [Inserted::A(1), Inserted::B, Inserted::C { x: 300 }] {
            inserted.add("e", v);
        }
        let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            inserted.check_or_write(&dir, "t.golden", "0.1.0", false)
        }))
        .expect_err("an insertion is caught");
        let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("e/B encodes differently"), "{msg}");

        // A sample of a later release without its line fails until it is written.
        let mut grown = Catalog::new();
        for v in [
            Appended::A(1),
            Appended::B,
            Appended::C { x: 300 },
            Appended::New,
        ] {
            grown.add("e", v);
        }
        let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            grown.check_or_write(&dir, "t.golden", "0.2.0", false)
        }))
        .expect_err("a missing line is caught");
        let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("RAFTIPAM_WRITE_COMPAT=1"), "{msg}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
