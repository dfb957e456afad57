//! Where the long-running commands (`node`, `shim`, `up`) log: stderr, as journald takes it
//! under systemd. Colour only when stderr is a terminal and `NO_COLOR` is not set (journald
//! would otherwise store the escape codes); `--log-format json` writes one JSON object a line
//! for log shippers. `RUST_LOG` chooses what is logged (default: info, openraft's warnings).
//!
//! Log lines carry strings other processes sent (endpoint names from dockerd, CNI container
//! ids, hosts' versions), and the formatter writes field values as they are. Every line goes
//! through [`SafeStderr`], which writes control characters (escape sequences among them, a
//! carriage return, a newline inside a line) and invisible format characters (bidirectional
//! overrides, zero-width characters) escaped, so a log read on a terminal runs none of them
//! and a name cannot forge a line. The formatter's own colours (`ESC [ ... m`, only on a
//! terminal) pass.

use std::io::IsTerminal;

use clap::ValueEnum;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

/// Whether log lines may carry colour: stderr is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>).
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Starts logging (once per process; later calls change nothing).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let colour = colour();
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder
            .with_writer(SafeStderr {
                json: false,
                colour,
            })
            .with_ansi(colour)
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_writer(SafeStderr {
                json: true,
                colour: false,
            })
            .with_ansi(false)
            .try_init(),
    };
}

/// stderr, with what [`escape_line`] escapes escaped.
#[derive(Clone, Copy, Debug)]
pub struct SafeStderr {
    /// JSON lines: escapes in JSON's spelling (`\u001b`), which a JSON string may hold.
    pub json: bool,
    /// The formatter's colours (SGR sequences) pass.
    pub colour: bool,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for SafeStderr {
    type Writer = SafeWriter;

    fn make_writer(&'a self) -> SafeWriter {
        SafeWriter(*self)
    }
}

/// One event's writer (the formatter writes each event whole, in one call).
pub struct SafeWriter(SafeStderr);

impl std::io::Write for SafeWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = escape_line(&String::from_utf8_lossy(buf), self.0.json, self.0.colour);
        std::io::stderr().lock().write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `text` (one event, ending with its newline) with every control character but the final
/// newline and tabs, and every invisible format character, escaped: `\u{1b}` (or, for
/// JSON, `\u001b`). With `sgr`, colour sequences (`ESC [ digits and ; m`) are kept.
pub fn escape_line(text: &str, json: bool, sgr: bool) -> String {
    let body = text.strip_suffix('\n').unwrap_or(text);
    if !body.chars().any(|c| c != '\t' && super::unprintable(c)) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\u{1b}' && sgr {
            let rest = &body[i + 1..];
            if let Some(params) = rest.strip_prefix('[') {
                let n = params
                    .bytes()
                    .take_while(|b| b.is_ascii_digit() || *b == b';')
                    .count();
                if params.as_bytes().get(n) == Some(&b'm') {
                    out.push_str(&body[i..i + 2 + n + 1]);
                    for _ in 0..n + 2 {
                        chars.next();
                    }
                    continue;
                }
            }
        }
        if c != '\t' && super::unprintable(c) {
            if json {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            } else {
                out.extend(c.escape_default());
            }
        } else {
            out.push(c);
        }
    }
    if text.ends_with('\n') {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape_line;

    #[test]
    fn control_and_invisible_characters_are_escaped_colours_kept_where_asked() {
        let evil = "INFO owner=h/web\u{1b}[2J\u{1b}]0;pwned\u{7}\r\nFAKE\u{9b}31m\u{202e}x\n";
        let text = escape_line(evil, false, false);
        assert_eq!(
            text,
            "INFO owner=h/web\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\r\\nFAKE\\u{9b}31m\\u{202e}x\n"
        );
        assert_eq!(text.matches('\n').count(), 1, "one line stays one line");
        let json = escape_line("{\"f\":\"a\u{202e}b\"}\n", true, false);
        assert_eq!(json, "{\"f\":\"a\\u202eb\"}\n");
        serde_json::from_str::<serde_json::Value>(&json).expect("still JSON");
        let coloured = "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m web\u{1b}[2J\n";
        assert_eq!(
            escape_line(coloured, false, true),
            "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m web\\u{1b}[2J\n"
        );
        let plain = "INFO all fine\twith a tab\n";
        assert_eq!(escape_line(plain, false, false), plain);
    }
}
