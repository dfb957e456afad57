//! What other inventories say is in use on the LAN, read from their files: `/etc/ethers`, a
//! dnsmasq lease file, ISC dhcpd's `dhcpd.leases`, and `arp-scan`'s output. Each gives
//! [`Entry`]s (an address, the device's MAC, a name where there is one, where it came from)
//! that an operator can report as conflicts
//! ([`Detection::Import`](allocator_core::Detection::Import)) before raftipam hands the
//! addresses out.
//!
//! The parsers take any text and never panic. A line they cannot read is an [`ImportError`]
//! with its line number and what is wrong, and the rest of the file is still read; lines that
//! carry nothing for us (comments, headers, IPv6 leases, which name no MAC) are skipped
//! silently. Owns the four formats; never touches the network or the cluster.

use std::fmt;
use std::net::IpAddr;

use allocator_core::Mac;

/// Which inventory an entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// `/etc/ethers`.
    Ethers,
    /// A dnsmasq lease file.
    Dnsmasq,
    /// ISC dhcpd's `dhcpd.leases`.
    Dhcpd,
    /// `arp-scan`'s output.
    ArpScan,
}

impl Source {
    /// A short label for messages and records.
    pub fn label(self) -> &'static str {
        match self {
            Source::Ethers => "ethers",
            Source::Dnsmasq => "dnsmasq",
            Source::Dhcpd => "dhcpd",
            Source::ArpScan => "arp-scan",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One device an inventory knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its address (`None`: `/etc/ethers` gave a host name instead).
    pub ip: Option<IpAddr>,
    /// Its MAC.
    pub mac: Mac,
    /// A host name, or what `arp-scan` says of the vendor.
    pub name: Option<String>,
    /// Where it came from.
    pub source: Source,
    /// The line it was read from (the first line of a dhcpd block).
    pub line: usize,
}

/// A line that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportError {
    /// Which inventory.
    pub source: Source,
    /// Its line number (from 1).
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}: {}", self.source, self.line, self.what)
    }
}

impl std::error::Error for ImportError {}

/// What a file gave: the entries read, and the lines that could not be.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// Entries, in the file's order (dhcpd: the last block of each address).
    pub entries: Vec<Entry>,
    /// Lines that could not be read.
    pub errors: Vec<ImportError>,
}

/// Longest host name kept (a DNS name's limit); longer ones are an error.
const MAX_NAME: usize = 253;

fn parse_mac(s: &str) -> Result<Mac, String> {
    let mac: Mac = s.parse()?;
    if !mac.is_unicast() {
        return Err(format!(
            "{mac} is not a device's address (zeros, multicast or broadcast)"
        ));
    }
    Ok(mac)
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|_| format!("{s:?} is not an IP address"))
}

fn check_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > MAX_NAME || s.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "{:?} is not a host name (1 to {MAX_NAME} bytes, no spaces or control characters)",
            s.chars().take(64).collect::<String>()
        ));
    }
    Ok(s.to_string())
}

/// Text before a `#`.
fn uncomment(line: &str) -> &str {
    line.split('#').next().unwrap_or_default()
}

/// `/etc/ethers` (ethers(5)): a MAC and an IP address or a host name a line; `#` comments.
pub fn parse_ethers(text: &str) -> Imported {
    let mut out = Imported::default();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let words: Vec<&str> = uncomment(raw).split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        let read = || -> Result<Entry, String> {
            let [mac, who] = words[..] else {
                return Err(format!(
                    "expected a MAC and an address or host name, found {} word(s)",
                    words.len()
                ));
            };
            let mac = parse_mac(mac)?;
            let (ip, name) = match who.parse::<IpAddr>() {
                Ok(ip) => (Some(ip), None),
                Err(_) => (None, Some(check_name(who)?)),
            };
            Ok(Entry {
                ip,
                mac,
                name,
                source: Source::Ethers,
                line,
            })
        };
        match read() {
            Ok(e) => out.entries.push(e),
            Err(what) => out.errors.push(ImportError {
                source: Source::Ethers,
                line,
                what,
            }),
        }
    }
    out
}

/// A dnsmasq lease file: `EXPIRY MAC IP HOSTNAME CLIENT-ID` a line (`*` for no host name).
/// IPv6 leases (an IAID where the MAC would be) and the `duid` line name no MAC: skipped.
pub fn parse_dnsmasq(text: &str) -> Imported {
    let mut out = Imported::default();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let words: Vec<&str> = raw.split_whitespace().collect();
        if words.is_empty() || words[0] == "duid" {
            continue;
        }
        let read = || -> Result<Option<Entry>, String> {
            if words.len() < 4 {
                return Err(format!(
                    "expected EXPIRY MAC IP HOSTNAME [CLIENT-ID], found {} word(s)",
                    words.len()
                ));
            }
            words[0]
                .parse::<u64>()
                .map_err(|_| format!("{:?} is not an expiry time", words[0]))?;
            let ip = parse_ip(words[2])?;
            if ip.is_ipv6() && !words[1].contains([':', '-']) {
                return Ok(None); // an IPv6 lease: an IAID, no MAC
            }
            let mac = parse_mac(words[1]).map_err(|e| {
                if words[1].get(2..3) == Some("-") {
                    format!("{e} (a hardware type prefix: not an Ethernet lease)")
                } else {
                    e
                }
            })?;
            let name = match words[3] {
                "*" => None,
                n => Some(check_name(n)?),
            };
            Ok(Some(Entry {
                ip: Some(ip),
                mac,
                name,
                source: Source::Dnsmasq,
                line,
            }))
        };
        match read() {
            Ok(Some(e)) => out.entries.push(e),
            Ok(None) => {}
            Err(what) => out.errors.push(ImportError {
                source: Source::Dnsmasq,
                line,
                what,
            }),
        }
    }
    out
}

/// `arp-scan`'s output: `IP<TAB>MAC<TAB>VENDOR` lines (a `(DUP: n)` mark dropped from the
/// vendor). Header and summary lines (anything not starting with an address) are skipped.
pub fn parse_arp_scan(text: &str) -> Imported {
    let mut out = Imported::default();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let mut fields = raw.split('\t');
        let first = fields.next().unwrap_or_default().trim();
        let Ok(ip) = first.parse::<IpAddr>() else {
            continue;
        };
        let read = || -> Result<Entry, String> {
            let mac = fields
                .next()
                .map(str::trim)
                .ok_or_else(|| "an address without a MAC".to_string())?;
            let mac = parse_mac(mac)?;
            let vendor: String = fields.collect::<Vec<_>>().join(" ");
            let vendor = match vendor.find("(DUP:") {
                Some(at) => vendor[..at].trim().to_string(),
                None => vendor.trim().to_string(),
            };
            let vendor: String = vendor
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_NAME)
                .collect();
            Ok(Entry {
                ip: Some(ip),
                mac,
                name: (!vendor.is_empty()).then_some(vendor),
                source: Source::ArpScan,
                line,
            })
        };
        match read() {
            Ok(e) => out.entries.push(e),
            Err(what) => out.errors.push(ImportError {
                source: Source::ArpScan,
                line,
                what,
            }),
        }
    }
    out
}

/// A token of dhcpd's configuration syntax, with its line.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Str(String),
    Open,
    Close,
    Semi,
}

/// Splits dhcpd's syntax into tokens; an unterminated string is an error at its line.
fn tokens(text: &str) -> Result<Vec<(usize, Tok)>, ImportError> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<(usize, Tok)>, line: usize| {
        if !word.is_empty() {
            out.push((line, Tok::Word(std::mem::take(word))));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                flush(&mut word, &mut out, line);
                line += 1;
            }
            '#' => {
                flush(&mut word, &mut out, line);
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '"' => {
                flush(&mut word, &mut out, line);
                let start = line;
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => {
                            return Err(ImportError {
                                source: Source::Dhcpd,
                                line: start,
                                what: "a string is not closed".into(),
                            })
                        }
                        Some('"') => break,
                        Some('\\') => {
                            if let Some(n) = chars.next() {
                                if n == '\n' {
                                    line += 1;
                                }
                                s.push(n);
                            }
                        }
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            s.push(c);
                        }
                    }
                }
                out.push((start, Tok::Str(s)));
            }
            '{' | '}' | ';' => {
                flush(&mut word, &mut out, line);
                out.push((
                    line,
                    match c {
                        '{' => Tok::Open,
                        '}' => Tok::Close,
                        _ => Tok::Semi,
                    },
                ));
            }
            c if c.is_whitespace() => flush(&mut word, &mut out, line),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out, line);
    Ok(out)
}

/// ISC dhcpd's `dhcpd.leases`: `lease IP { ... hardware ethernet MAC; client-hostname "x";
/// binding state active; }` blocks (and `host NAME { hardware ethernet MAC; fixed-address
/// IP; }`). A lease whose binding state is not `active` is not in use: left out. dhcpd appends
/// a new block for each change, so the last block of an address wins. Other blocks
/// (`lease6`, `failover`, ...) are skipped.
pub fn parse_dhcpd_leases(text: &str) -> Imported {
    let mut out = Imported::default();
    let toks = match tokens(text) {
        Ok(t) => t,
        Err(e) => {
            out.errors.push(e);
            return out;
        }
    };
    let err = |line: usize, what: String| ImportError {
        source: Source::Dhcpd,
        line,
        what,
    };
    let mut i = 0;
    // Statement words so far at the top level, and the line they started on.
    let mut head: Vec<(usize, String)> = Vec::new();
    while i < toks.len() {
        let (line, tok) = &toks[i];
        i += 1;
        match tok {
            Tok::Word(w) | Tok::Str(w) => head.push((*line, w.clone())),
            Tok::Semi => head.clear(),
            Tok::Close => {
                out.errors.push(err(*line, "a '}' closes no block".into()));
                head.clear();
            }
            Tok::Open => {
                // The block's statements, each a list of words (nested blocks skipped).
                let start = head.first().map_or(*line, |h| h.0);
                let mut stmts: Vec<Vec<String>> = Vec::new();
                let mut cur: Vec<String> = Vec::new();
                let mut depth = 1;
                while i < toks.len() && depth > 0 {
                    let (_, t) = &toks[i];
                    i += 1;
                    match t {
                        Tok::Open => depth += 1,
                        Tok::Close => depth -= 1,
                        Tok::Semi if depth == 1 => stmts.push(std::mem::take(&mut cur)),
                        Tok::Word(w) | Tok::Str(w) if depth == 1 => cur.push(w.clone()),
                        _ => {}
                    }
                }
                if depth > 0 {
                    out.errors.push(err(start, "a block is not closed".into()));
                    break;
                }
                let kind: Vec<&str> = head.iter().map(|(_, w)| w.as_str()).collect();
                match kind[..] {
                    ["lease", ip] => match lease_entry(ip, &stmts, start) {
                        Ok(Some(e)) => {
                            out.entries.retain(|x| x.ip != e.ip);
                            out.entries.push(e);
                        }
                        Ok(None) => {
                            let ip = ip.parse().ok();
                            out.entries.retain(|x| x.ip != ip || ip.is_none());
                        }
                        Err(what) => out.errors.push(err(start, what)),
                    },
                    ["host", name] => match host_entry(name, &stmts, start) {
                        Ok(Some(e)) => out.entries.push(e),
                        Ok(None) => {}
                        Err(what) => out.errors.push(err(start, what)),
                    },
                    _ => {}
                }
                head.clear();
            }
        }
    }
    out
}

fn hardware(stmts: &[Vec<String>]) -> Option<Result<Mac, String>> {
    stmts
        .iter()
        .rev()
        .find(|s| s.first().map(String::as_str) == Some("hardware"))
        .map(|s| match &s[..] {
            [_, kind, mac] if kind == "ethernet" => parse_mac(mac),
            [_, kind, ..] => Err(format!("hardware {kind}: not Ethernet")),
            _ => Err("a hardware statement without an address".into()),
        })
}

fn lease_entry(ip: &str, stmts: &[Vec<String>], line: usize) -> Result<Option<Entry>, String> {
    let ip = parse_ip(ip)?;
    let state = stmts
        .iter()
        .rev()
        .find(|s| s.len() == 3 && s[0] == "binding" && s[1] == "state")
        .map(|s| s[2].as_str());
    if state.is_some_and(|s| s != "active") {
        return Ok(None);
    }
    let Some(mac) = hardware(stmts) else {
        return Ok(None); // an abandoned lease names no device
    };
    let name = stmts
        .iter()
        .rev()
        .find(|s| s.len() == 2 && s[0] == "client-hostname")
        .map(|s| check_name(&s[1]))
        .transpose()?;
    Ok(Some(Entry {
        ip: Some(ip),
        mac: mac?,
        name,
        source: Source::Dhcpd,
        line,
    }))
}

fn host_entry(name: &str, stmts: &[Vec<String>], line: usize) -> Result<Option<Entry>, String> {
    let Some(mac) = hardware(stmts) else {
        return Ok(None);
    };
    let ip = stmts
        .iter()
        .find(|s| s.len() == 2 && s[0] == "fixed-address")
        .map(|s| parse_ip(&s[1]))
        .transpose()?;
    Ok(Some(Entry {
        ip,
        mac: mac?,
        name: Some(check_name(name)?),
        source: Source::Dhcpd,
        line,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(s: &str) -> Mac {
        s.parse().expect("mac")
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    #[test]
    fn ethers_gives_addresses_or_host_names_and_names_its_bad_lines() {
        let text = "\
# static devices
8:0:20:1:2:3        10.213.0.9
02:42:ac:11:00:02   printer.lan   # by name
zz:42:ac:11:00:02   10.213.0.10
02:42:ac:11:00:03
ff:ff:ff:ff:ff:ff   10.213.0.11

02:42:ac:11:00:04   10.213.0.12 extra
";
        let got = parse_ethers(text);
        assert_eq!(got.entries.len(), 2, "{got:?}");
        assert_eq!(
            (got.entries[0].ip, got.entries[0].mac, got.entries[0].line),
            (ip("10.213.0.9"), mac("08:00:20:01:02:03"), 2)
        );
        assert_eq!(got.entries[1].ip, None);
        assert_eq!(got.entries[1].name.as_deref(), Some("printer.lan"));
        let lines: Vec<usize> = got.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![4, 5, 6, 8]);
        assert!(
            got.errors[0].to_string().starts_with("ethers line 4: "),
            "{}",
            got.errors[0]
        );
        assert!(
            got.errors[0].what.contains("not a MAC address"),
            "{}",
            got.errors[0]
        );
        assert!(
            got.errors[3].what.contains("found 3 word(s)"),
            "{}",
            got.errors[3]
        );
    }

    #[test]
    fn dnsmasq_leases_give_ipv4_devices_and_skip_ipv6_ones() {
        let text = "\
1700000000 02:42:ac:11:00:02 10.213.0.50 printer 01:02:42:ac:11:00:02
0 02:42:ac:11:00:03 10.213.0.51 * *
duid 00:01:00:01:2c:5d:aa:bb:02:42:ac:11:00:02
1700000000 1234567 fd00:213::50 nas 00:01:00:01
soon 02:42:ac:11:00:04 10.213.0.52 x *
1700000000 06-02:42:ac:11:00:05 10.213.0.53 x *
1700000000 02:42:ac:11:00:06 10.213.0.300 x *
1700000000 02:42:ac:11:00:07
";
        let got = parse_dnsmasq(text);
        assert_eq!(got.entries.len(), 2, "{got:?}");
        assert_eq!(got.entries[0].name.as_deref(), Some("printer"));
        assert_eq!(got.entries[1].name, None);
        assert_eq!(got.entries[1].ip, ip("10.213.0.51"));
        let lines: Vec<usize> = got.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![5, 6, 7, 8], "{:?}", got.errors);
        assert!(
            got.errors[1].what.contains("hardware type prefix"),
            "{}",
            got.errors[1]
        );
        assert!(
            got.errors[2].what.contains("not an IP address"),
            "{}",
            got.errors[2]
        );
    }

    #[test]
    fn arp_scan_output_gives_responders_and_skips_its_headers() {
        let text = "Interface: br0, type: EN10MB, MAC: 02:42:ac:11:00:01, IPv4: 10.213.0.1
Starting arp-scan 1.10.0 with 256 hosts (https://github.com/royhills/arp-scan)
10.213.0.7\t02:42:ac:11:00:07\tHewlett Packard
10.213.0.7\t0a:bb:cc:dd:ee:01\t(Unknown: locally administered) (DUP: 2)
10.213.0.8\tnot-a-mac\tX
10.213.0.9

3 packets received by filter, 0 packets dropped by kernel
Ending arp-scan 1.10.0: 256 hosts scanned in 1.960 seconds (130.61 hosts/sec). 2 responded
";
        let got = parse_arp_scan(text);
        assert_eq!(got.entries.len(), 2, "{got:?}");
        assert_eq!(got.entries[0].name.as_deref(), Some("Hewlett Packard"));
        assert_eq!(
            got.entries[1].name.as_deref(),
            Some("(Unknown: locally administered)"),
            "the DUP mark goes"
        );
        assert_eq!(got.entries[1].mac, mac("0a:bb:cc:dd:ee:01"));
        let lines: Vec<usize> = got.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![5, 6]);
    }

    #[test]
    fn dhcpd_leases_keep_the_last_active_block_of_each_address() {
        let text = r#"# The format of this file is documented in the dhcpd.leases(5) manual page.
authoring-byte-order little-endian;
server-duid "\000\001\000\001";

lease 10.213.0.60 {
  starts 4 2023/11/02 10:00:00;
  binding state active;
  hardware ethernet 02:42:ac:11:00:60;
  client-hostname "cam-1";
  on commit { set x = "a;b}"; }
}
lease 10.213.0.61 {
  binding state active;
  hardware ethernet 02:42:ac:11:00:61;
}
lease 10.213.0.61 {
  binding state free;
  hardware ethernet 02:42:ac:11:00:61;
}
lease 10.213.0.62 {
  binding state abandoned;
}
lease 10.213.0.63 {
  hardware token-ring 02:42:ac:11:00:63;
}
host cam-2 {
  dynamic;
  hardware ethernet 02:42:ac:11:00:64;
  fixed-address 10.213.0.64;
}
lease6 fd00::5 { ia-na "x"; }
lease 10.213.0.600 { hardware ethernet 02:42:ac:11:00:65; }
"#;
        let got = parse_dhcpd_leases(text);
        let ips: Vec<Option<IpAddr>> = got.entries.iter().map(|e| e.ip).collect();
        assert_eq!(ips, vec![ip("10.213.0.60"), ip("10.213.0.64")], "{got:?}");
        assert_eq!(got.entries[0].name.as_deref(), Some("cam-1"));
        assert_eq!(got.entries[0].line, 5);
        assert_eq!(got.entries[1].name.as_deref(), Some("cam-2"));
        let errs: Vec<(usize, bool)> = got
            .errors
            .iter()
            .map(|e| {
                (
                    e.line,
                    e.what.contains("token-ring") || e.what.contains("not an IP"),
                )
            })
            .collect();
        assert_eq!(errs, vec![(23, true), (32, true)], "{:?}", got.errors);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        /// Text made of the formats' own pieces, so the parsers go deep, and any characters.
        fn text() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("lease ".to_string()),
                Just("host h ".to_string()),
                Just("{".to_string()),
                Just("}".to_string()),
                Just(";".to_string()),
                Just("\"".to_string()),
                Just("\\".to_string()),
                Just("#".to_string()),
                Just("\n".to_string()),
                Just("\t".to_string()),
                Just(" ".to_string()),
                Just("hardware ethernet ".to_string()),
                Just("binding state active".to_string()),
                Just("02:42:ac:11:00:02".to_string()),
                Just("10.213.0.5".to_string()),
                Just("fd00::5".to_string()),
                Just("(DUP: 2)".to_string()),
                Just("*".to_string()),
                Just("1700000000".to_string()),
                any::<String>(),
            ];
            proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            #[test]
            fn no_text_panics_a_parser_and_every_error_names_a_line_of_it(t in text()) {
                let lines = t.lines().count().max(1);
                for got in [parse_ethers(&t), parse_dnsmasq(&t), parse_arp_scan(&t), parse_dhcpd_leases(&t)] {
                    for e in &got.errors {
                        prop_assert!(e.line >= 1 && e.line <= lines + 1, "{e} of {lines} lines");
                        prop_assert!(!e.what.is_empty());
                    }
                    for e in &got.entries {
                        prop_assert!(e.mac.is_unicast());
                    }
                }
            }

            #[test]
            fn well_formed_lines_read_back(m in any::<[u8; 6]>(), a in any::<[u8; 4]>(), name in "[a-z][a-z0-9-]{0,20}") {
                let mac = Mac([m[0] & 0xfe | 0x02, m[1], m[2], m[3], m[4], m[5]]);
                let ip = IpAddr::from(a);
                let want = |got: Imported, name: Option<&str>| {
                    prop_assert_eq!(got.errors, vec![]);
                    prop_assert_eq!(got.entries.len(), 1);
                    let e = &got.entries[0];
                    prop_assert_eq!((e.ip, e.mac, e.name.as_deref()), (Some(ip), mac, name));
                    Ok(())
                };
                want(parse_ethers(&format!("{mac} {ip}\n")), None)?;
                want(parse_dnsmasq(&format!("0 {mac} {ip} {name} *\n")), Some(&name))?;
                want(parse_arp_scan(&format!("{ip}\t{mac}\t{name}\n")), Some(&name))?;
                want(
                    parse_dhcpd_leases(&format!("lease {ip} {{\n  binding state active;\n  hardware ethernet {mac};\n  client-hostname \"{name}\";\n}}\n")),
                    Some(&name),
                )?;
            }
        }
    }

    #[test]
    fn a_dhcpd_file_cut_short_says_where() {
        let got = parse_dhcpd_leases("lease 10.0.0.1 {\n  hardware ethernet 02:00:00:00:00:01;\n");
        assert_eq!(got.errors.len(), 1);
        assert_eq!(
            (got.errors[0].line, got.errors[0].what.as_str()),
            (1, "a block is not closed")
        );
        let got = parse_dhcpd_leases("lease 10.0.0.1 {\n client-hostname \"open\n}");
        assert_eq!(got.errors[0].line, 2);
        assert!(got.errors[0].what.contains("string"));
        let got = parse_dhcpd_leases("}\n");
        assert_eq!(got.errors[0].line, 1);
    }
}
