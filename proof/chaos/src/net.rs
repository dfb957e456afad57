//! The chaos run's network: one Linux bridge in this machine's namespace and one network
//! namespace per node, each with a veth into the bridge and its own address. Partitions are
//! blackhole routes inside a node's namespace (its packets to a peer are dropped): both
//! directions for a partition, one for a one-way partition. With [`Net::add_proxies`], each
//! node also gets a TCP proxy in its namespace ([`super::proxy`]) for delay, loss, reordering
//! and slow links. Everything is made with `ip` (iproute2), named after the run, and removed
//! when the [`Net`] is dropped. Traffic goes only between this machine's own namespaces.

use std::collections::BTreeSet;
use std::process::Command;

use super::proxy::{LinkFault, Proxy, PROXY_PORT};

/// What went wrong setting up or changing the network.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {why}")]
pub struct NetError {
    what: String,
    why: String,
}

fn ip(args: &[&str]) -> Result<(), NetError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| NetError {
            what: format!("ip {}", args.join(" ")),
            why: format!("cannot run `ip` (install iproute2): {e}"),
        })?;
    if !out.status.success() {
        return Err(NetError {
            what: format!("ip {}", args.join(" ")),
            why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// The bridge, the namespaces and the routes of one run.
#[derive(Debug)]
pub struct Net {
    tag: String,
    prefix: String,
    nodes: usize,
    /// Blackhole routes in place: (from node, to node), 1-based.
    blocked: BTreeSet<(usize, usize)>,
    /// Node `i`'s proxy at `i - 1`, if the run has them.
    proxies: Vec<Proxy>,
}

impl Net {
    /// Makes the bridge `rc{tag}` with `{prefix}.1/24` and `nodes` namespaces `rc{tag}-n{i}`
    /// at `{prefix}.{10+i}`. `prefix` is three octets, e.g. `10.232.17`.
    pub fn create(tag: &str, prefix: &str, nodes: usize) -> Result<Net, NetError> {
        let bridge = format!("rc{tag}");
        if Command::new("ip")
            .args(["link", "show", &bridge])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Err(NetError {
                what: format!("creating bridge {bridge}"),
                why: "it exists already (another run with this tag?)".into(),
            });
        }
        let net = Net {
            tag: tag.to_string(),
            prefix: prefix.to_string(),
            nodes,
            blocked: BTreeSet::new(),
            proxies: Vec::new(),
        };
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{prefix}.1/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 1..=nodes {
            let ns = net.ns(i);
            let outside = format!("rc{tag}n{i}");
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &outside, "master", &bridge])?;
            ip(&["link", "set", &outside, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", net.addr(i)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// Node `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("rc{}-n{i}", self.tag)
    }

    /// Node `i`'s address.
    pub fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, 10 + i)
    }

    /// Node `i`'s packets to node `j` are dropped from now on.
    pub fn block(&mut self, i: usize, j: usize) -> Result<(), NetError> {
        if i == j || !self.blocked.insert((i, j)) {
            return Ok(());
        }
        self.blackhole("add", i, j)
    }

    /// `ip route add|del blackhole ADDR(j)/32` in node `i`'s namespace.
    fn blackhole(&self, op: &str, i: usize, j: usize) -> Result<(), NetError> {
        ip(&[
            "-n",
            &self.ns(i),
            "route",
            op,
            "blackhole",
            &format!("{}/32", self.addr(j)),
        ])
    }

    /// Starts a proxy in every node's namespace, listening on the node's address at
    /// [`PROXY_PORT`] and passing bytes on to `upstream_port` there; `seed` draws their jitter
    /// and losses.
    pub fn add_proxies(&mut self, upstream_port: u16, seed: u64) -> Result<(), NetError> {
        for i in 1..=self.nodes {
            let ip = self.addr(i);
            let addr = |port: u16| -> Result<std::net::SocketAddr, NetError> {
                format!("{ip}:{port}").parse().map_err(|e| NetError {
                    what: format!("the address {ip}:{port}"),
                    why: format!("{e}"),
                })
            };
            let p = Proxy::start(
                Some(&self.ns(i)),
                addr(PROXY_PORT)?,
                addr(upstream_port)?,
                seed ^ ((i as u64) << 32),
            )
            .map_err(|e| NetError {
                what: format!("starting node {i}'s proxy"),
                why: e.to_string(),
            })?;
            self.proxies.push(p);
        }
        Ok(())
    }

    /// Node `i`'s traffic gets `fault` from now on (until [`Net::heal`]): its own proxy's
    /// connections, and on every other node's proxy the connections that node `i` opened.
    pub fn set_link(&self, i: usize, fault: LinkFault) -> Result<(), NetError> {
        let p = self
            .proxies
            .get(i.wrapping_sub(1))
            .ok_or_else(|| NetError {
                what: format!("a link fault on node {i}"),
                why: "the run has no proxy for it (Net::add_proxies)".into(),
            })?;
        p.set(fault);
        let ip: std::net::IpAddr = self.addr(i).parse().map_err(|e| NetError {
            what: format!("node {i}'s address {}", self.addr(i)),
            why: format!("{e}"),
        })?;
        for (k, other) in self.proxies.iter().enumerate() {
            if k + 1 != i {
                other.set_from(ip, fault);
            }
        }
        Ok(())
    }

    /// Chunks the proxies held back so far.
    pub fn held_chunks(&self) -> u64 {
        self.proxies
            .iter()
            .map(|p| p.stats().held.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }

    /// Every blackhole route removed; every proxy passing bytes at once again.
    pub fn heal(&mut self) -> Result<(), NetError> {
        self.proxies.iter().for_each(Proxy::clear);
        let blocked: Vec<(usize, usize)> = std::mem::take(&mut self.blocked).into_iter().collect();
        let mut first = None;
        for (i, j) in blocked {
            if let Err(e) = self.blackhole("del", i, j) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// How many blackhole routes are in place.
    pub fn blocked(&self) -> usize {
        self.blocked.len()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // The proxies first: their sockets live in the namespaces.
        self.proxies.clear();
        for i in 1..=self.nodes {
            // The veth first: deleting one end deletes both at once, while a namespace's own
            // devices go only when the kernel's asynchronous cleanup gets to it (sockets that
            // lived there, e.g. a proxy's, can delay that past the next run's start).
            let _ = ip(&["link", "del", &format!("rc{}n{i}", self.tag)]);
            let _ = ip(&["netns", "del", &self.ns(i)]);
        }
        let _ = ip(&["link", "del", &format!("rc{}", self.tag)]);
    }
}
