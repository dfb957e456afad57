//! `--config FILE`: a TOML file as an alternative to flags; flags (and environment variables)
//! override it.
//!
//! Top-level keys are the global options (`endpoints`, `timeout`, `json`); a table per command
//! (`[node]`, `[shim]`, `[up]`, `[check]`, ...) holds that command's options. Keys are the
//! flags' long names, with `-` or `_`:
//!
//! ```toml
//! endpoints = ["10.0.0.1:7379", "10.0.0.2:7379", "10.0.0.3:7379"]
//!
//! [shim]
//! host = "docker-17"
//! reconcile-interval = "5m"
//! ```
//!
//! How: the command line is parsed once to learn the command and which options it sets;
//! every key of the file the command line (or the environment) does not set is appended as
//! `--key value`, and the result is parsed again. So the file can say nothing the command
//! line could not, and unknown keys are errors naming the file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory};

use super::Cli;

/// The config file named by `--config FILE` / `--config=FILE` or `RAFTIPAM_CONFIG`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--" {
            break;
        }
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("RAFTIPAM_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn value_strings(key: &str, v: &toml::Value, file: &Path) -> anyhow::Result<Vec<String>> {
    Ok(match v {
        toml::Value::String(s) => vec![s.clone()],
        toml::Value::Integer(i) => vec![i.to_string()],
        toml::Value::Float(f) => vec![f.to_string()],
        toml::Value::Boolean(b) => vec![b.to_string()],
        toml::Value::Array(a) => {
            let mut out = Vec::new();
            for x in a {
                out.extend(value_strings(key, x, file)?);
            }
            out
        }
        _ => anyhow::bail!(
            "{}: the value of {key} must be a string, number, boolean or list",
            file.display()
        ),
    })
}

/// Appends `table`'s keys that `matches` did not get from the command line or the
/// environment. `cmd` is the (sub)command the keys belong to.
fn append(
    out: &mut Vec<OsString>,
    table: &toml::Table,
    cmd: &clap::Command,
    matches: &ArgMatches,
    section: &str,
    file: &Path,
) -> anyhow::Result<()> {
    for (key, v) in table {
        if v.is_table() {
            continue;
        }
        let id = key.replace('-', "_");
        let Some(arg) = cmd.get_arguments().find(|a| a.get_id().as_str() == id) else {
            anyhow::bail!(
                "{}: unknown key {key:?} in {section} (keys are the long flag names of `raftipam {}--help`)",
                file.display(),
                if section == "the top level" { String::new() } else { format!("{} ", section.trim_matches(['[', ']'])) }
            );
        };
        let Some(long) = arg.get_long() else {
            anyhow::bail!("{}: {key} cannot be set from the file", file.display());
        };
        if matches!(
            matches
                .try_get_raw(&id)
                .ok()
                .flatten()
                .and(matches.value_source(&id)),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let takes_value = arg.get_action().takes_values();
        let values = value_strings(key, v, file)?;
        if !takes_value {
            if values.iter().any(|s| s == "true") {
                out.push(format!("--{long}").into());
            }
            continue;
        }
        for s in values {
            out.push(format!("--{long}={s}").into());
        }
    }
    Ok(())
}

/// The command line with the config file's settings added where the command line (or the
/// environment) does not give them.
pub fn argv() -> anyhow::Result<Vec<OsString>> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let Some(file) = config_path(&args) else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read the config file {}", file.display()))?;
    merge(args, &file, &text)
}

/// `args` with the settings of the config file `file` (whose contents are `text`) added where
/// `args` (or the environment) does not give them.
fn merge(args: Vec<OsString>, file: &Path, text: &str) -> anyhow::Result<Vec<OsString>> {
    let file = file.to_path_buf();
    let table: toml::Table =
        toml::from_str(text).with_context(|| format!("{} is not valid TOML", file.display()))?;
    let mut root = Cli::command();
    root.build();
    // Parsed leniently (nothing required: the file may give it); a command line clap still
    // refuses is left for the real parse to report.
    let Ok(matches) = lenient(root.clone()).try_get_matches_from(&args) else {
        return Ok(args);
    };
    let mut out = args.clone();
    append(&mut out, &table, &root, &matches, "the top level", &file)?;
    // `[tls]` with `dir = "..."`: the same as a top-level `tls-dir`.
    if let Some(tls) = table.get("tls") {
        let Some(tls) = tls.as_table() else {
            anyhow::bail!(
                "{}: tls must be a table ([tls] with dir = \"...\")",
                file.display()
            );
        };
        let mut t = toml::Table::new();
        for (k, v) in tls {
            anyhow::ensure!(
                k == "dir",
                "{}: unknown key {k:?} in [tls] (the one key is dir: the directory with ca.pem, cert.pem, key.pem)",
                file.display()
            );
            t.insert("tls-dir".into(), v.clone());
        }
        append(&mut out, &t, &root, &matches, "[tls]", &file)?;
    }
    if let Some((name, sub)) = matches.subcommand() {
        if let Some(section) = table.get(name).and_then(|v| v.as_table()) {
            if let Some(cmd) = root.find_subcommand(name) {
                append(&mut out, section, cmd, sub, &format!("[{name}]"), &file)?;
            }
        }
    }
    for (k, v) in &table {
        if v.is_table() && k != "tls" && root.find_subcommand(k).is_none() {
            anyhow::bail!("{}: unknown section [{k}]", file.display());
        }
    }
    Ok(out)
}

/// `cmd` and its subcommands with no argument required.
fn lenient(mut cmd: clap::Command) -> clap::Command {
    let ids: Vec<clap::Id> = cmd.get_arguments().map(|a| a.get_id().clone()).collect();
    for id in ids {
        cmd = cmd.mut_arg(id, |a| a.required(false));
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, lenient);
    }
    cmd
}

/// The command lines the fuzz target `config_file` merges a file into.
const FUZZ_COMMANDS: &[&[&str]] = &[
    &["node"],
    &["shim"],
    &["up"],
    &["check"],
    &["status"],
    &["pool", "ls"],
    &["node", "--id", "2"],
    &["--json", "pool", "ls"],
];

/// The fuzz target `config_file` (`raftipam/fuzz/`): the first byte picks a command line,
/// the rest is the config file's text.
pub(crate) fn fuzz(data: &[u8]) {
    if let Some((&pick, text)) = data.split_first() {
        never_panics(
            FUZZ_COMMANDS[pick as usize % FUZZ_COMMANDS.len()],
            &String::from_utf8_lossy(text),
        );
    }
}

fn args(a: &[&str]) -> Vec<OsString> {
    std::iter::once("raftipam")
        .chain(a.iter().copied())
        .map(OsString::from)
        .collect()
}

/// Whatever the file says, the merge ends in args or an error naming the file, and clap then
/// parses the args or refuses them — never a panic.
fn never_panics(cmd: &[&str], text: &str) {
    let file = Path::new("/etc/raftipam/fuzzed.toml");
    match merge(args(cmd), file, text) {
        Ok(out) => {
            let _ = <Cli as clap::Parser>::try_parse_from(out);
        }
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(
                msg.contains("fuzzed.toml"),
                "an error that names no file: {msg}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use proptest::prelude::*;

    const EXAMPLE: &str = include_str!("../../../packaging/raftipam.toml");

    /// The committed corpus of the `config_file` fuzz target (`fuzz/corpus/config_file/`):
    /// what the fuzzer once found stays fixed.
    #[test]
    fn the_config_file_fuzz_corpus_holds() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/config_file");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.expect("corpus entry").path();
            fuzz(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
            n += 1;
        }
        assert!(n >= 5, "the corpus is committed: {n} inputs");
    }

    #[test]
    fn the_example_file_fills_in_what_the_command_line_leaves_out() {
        let file = Path::new("raftipam.toml");
        let out = merge(args(&["node", "--id", "7"]), file, EXAMPLE).expect("merge");
        let out: Vec<String> = out.iter().map(|a| a.to_string_lossy().into()).collect();
        assert!(
            out.contains(&"--listen=10.0.0.1:7379".to_string()),
            "{out:?}"
        );
        // The command line wins: the file's id is not added.
        assert!(!out.iter().any(|a| a == "--id=1"), "{out:?}");
        assert!(Cli::try_parse_from(&out).is_ok(), "{out:?}");
        let e = merge(args(&["node"]), file, "[node]\nbogus = 1\n").expect_err("unknown key");
        assert!(
            format!("{e:#}").contains("unknown key \"bogus\" in [node]"),
            "{e:#}"
        );
        let e = merge(args(&["node"]), file, "[node\n").expect_err("not TOML");
        assert!(
            format!("{e:#}").contains("raftipam.toml is not valid TOML"),
            "{e:#}"
        );
        let e = merge(args(&["status"]), file, "[nonsense]\n").expect_err("no such section");
        assert!(
            format!("{e:#}").contains("unknown section [nonsense]"),
            "{e:#}"
        );
    }

    /// A TOML value of any kind, nested a little.
    fn value() -> impl Strategy<Value = toml::Value> {
        let leaf = prop_oneof![
            any::<String>().prop_map(toml::Value::String),
            "[a-z0-9:./ -]{0,24}".prop_map(toml::Value::String),
            any::<i64>().prop_map(toml::Value::Integer),
            any::<f64>().prop_map(toml::Value::Float),
            any::<bool>().prop_map(toml::Value::Boolean),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
                prop::collection::btree_map("[a-z-]{1,12}", inner, 0..3)
                    .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
            ]
        })
    }

    /// Keys a config file may really hold (and some it may not), in and out of sections.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "endpoints",
                "timeout",
                "json",
                "tls-dir",
                "insecure",
                "id",
                "listen",
                "data-dir",
                "metrics",
                "plugin-socket",
                "host",
                "docker-host",
                "reconcile-interval",
                "snapshot-every",
                "http",
                "socket",
                "dir",
                "config",
            ])
            .prop_map(str::to_string),
            "[a-z_-]{1,16}",
        ]
    }

    fn section() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "", "node", "shim", "up", "check", "tls", "pool", "addr", "cluster", "bogus",
        ])
        .prop_map(str::to_string)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn random_tables_never_panic(
            entries in prop::collection::vec((section(), key(), value()), 0..12),
            cmd in prop::sample::select(vec![
                vec!["node"], vec!["shim"], vec!["up"], vec!["check"], vec!["status"],
                vec!["pool", "ls"], vec!["node", "--id", "2"], vec!["--json", "pool", "ls"],
            ]),
        ) {
            let mut root = toml::Table::new();
            for (sec, k, v) in entries {
                if sec.is_empty() {
                    root.insert(k, v);
                } else {
                    let t = root
                        .entry(sec)
                        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                    if let toml::Value::Table(t) = t {
                        t.insert(k, v);
                    }
                }
            }
            let text = toml::to_string(&root).unwrap_or_default();
            never_panics(&cmd, &text);
        }

        #[test]
        fn mutated_example_files_never_panic(
            cuts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
            cmd in prop::sample::select(vec![vec!["node"], vec!["shim"], vec!["check"], vec!["up"]]),
        ) {
            let mut b = EXAMPLE.as_bytes().to_vec();
            for (at, byte, how) in cuts {
                let i = at.index(b.len().max(1));
                match how {
                    0 => { if i < b.len() { b[i] = byte; } }
                    1 => b.insert(i.min(b.len()), byte),
                    2 => { if i < b.len() { b.remove(i); } }
                    _ => b.truncate(i),
                }
            }
            never_panics(&cmd, &String::from_utf8_lossy(&b));
        }
    }
}
