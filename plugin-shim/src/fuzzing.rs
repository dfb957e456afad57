//! Entry points of the cargo-fuzz target `router` (`plugin-shim/fuzz/`), the same functions
//! the stable tests (`tests/fuzz_router.rs`: a proptest and the committed corpus) drive.
//!
//! A fuzz input is up to 8 calls separated by 0x00 bytes; each call's first byte picks a
//! method (every method of the protocol, and one that does not exist) and the rest is its
//! body. They run in order against one router over an in-memory allocator seeded with two
//! pools. Every answer must be JSON; a failure must be a non-200 `{"Err": "<non-empty>"}`,
//! never a 500; a RequestAddress success must carry a CIDR. A broken promise panics (the
//! fuzzer's signal), so this module may panic where the library never does.

/// The router over an in-memory allocator holding `local/10.0.0.0/24` and `local/fd00::/64`,
/// with a 512-byte body limit.
pub async fn seeded_router() -> axum::Router {
    use std::sync::Arc;

    use crate::{router, Backend, MemoryBackend, ShimConfig};
    use allocator_core::{Op, PoolSpec};

    let backend = Arc::new(MemoryBackend::default());
    for subnet in ["10.0.0.0/24", "fd00::/64"] {
        let spec = {
            let mut spec = PoolSpec::default();
            spec.space = "local".into();
            spec.subnet = subnet.parse().ok();
            spec
        };
        backend
            .apply(Op::RequestPool {
                spec,
                holder: "seed".into(),
            })
            .await
            .expect("seed pool");
    }
    router(backend, ShimConfig::new("host-a").with_body_limit(512))
}

/// Sends one call through `app` and checks its answer (panics on a broken promise).
pub async fn call_and_check(app: &axum::Router, method: &str, path: &str, body: &[u8]) {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use serde_json::Value;
    use tower::ServiceExt;

    let req = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::from(body.to_vec()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    assert_ne!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{method} {path} {:?} -> {bytes:?}",
        String::from_utf8_lossy(body)
    );
    let v: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {bytes:?}"));
    if status != StatusCode::OK {
        let err = v.get("Err").and_then(Value::as_str).unwrap_or("");
        assert!(!err.trim().is_empty(), "{method} {path} -> {status} {v}");
    } else {
        assert!(
            v.is_object() && v.get("Err").is_none(),
            "{method} {path} -> {v}"
        );
        if path == "/IpamDriver.RequestAddress" {
            let addr = v.get("Address").and_then(Value::as_str).unwrap_or("");
            assert!(
                addr.parse::<ipnet::IpNet>().is_ok(),
                "Address {addr:?} is not CIDR"
            );
        }
    }
}

/// Runs one fuzz input through the plugin's router (see the file's comment).
pub fn router_call(data: &[u8]) {
    use crate::router::METHODS;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let app = seeded_router().await;
        for call in data.split(|b| *b == 0).take(8) {
            let Some((&pick, body)) = call.split_first() else {
                continue;
            };
            let path = match METHODS.get(pick as usize % (METHODS.len() + 1)) {
                Some(m) => format!("/{m}"),
                None => "/IpamDriver.NoSuchMethod".to_string(),
            };
            call_and_check(&app, "POST", &path, body).await;
        }
    });
}

/// Entry point of the cargo-fuzz target `cni_input`: what a runtime hands the CNI plugin.
/// The first byte picks the command (`ADD`, `DEL`, `CHECK`, `GC`, `STATUS`, `VERSION`, or one
/// that does not exist); up to the first 0x00 is `CNI_ARGS`, the rest the configuration on
/// stdin. Decoding must end in a configuration or a [`crate::cni::CniError`] with a spec code
/// and a message, never a panic; a decoded configuration must hold its own promises (every
/// range's gateway and exclusions inside its subnet, an `ADD` result that is JSON with the
/// addresses given).
pub fn cni_input(data: &[u8]) {
    use crate::cni::spec::{add_result, parse_config, Env, Granted};

    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let commands = ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "PUT"];
    let command = commands[pick as usize % commands.len()];
    let (args, stdin) = match rest.iter().position(|b| *b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let args = String::from_utf8_lossy(args).into_owned();
    let env = Env::read(|k| match k {
        "CNI_COMMAND" => Some(command.to_string()),
        "CNI_CONTAINERID" => Some("fuzz-1".into()),
        "CNI_IFNAME" => Some("eth0".into()),
        "CNI_NETNS" => Some("/var/run/netns/fuzz".into()),
        "CNI_ARGS" => Some(args.clone()),
        _ => None,
    });
    let env = match env {
        Ok(env) => env,
        Err(e) => {
            assert!(e.code > 0 && !e.msg.is_empty(), "{e:?}");
            return;
        }
    };
    match parse_config(stdin, &env) {
        Err(e) => assert!(e.code > 0 && !e.msg.is_empty(), "{e:?}"),
        Ok(conf) => {
            let Some(ipam) = conf.ipam else { return };
            assert!(!ipam.ranges.is_empty());
            let mut granted = Vec::new();
            for r in &ipam.ranges {
                let subnet = r.pool.subnet;
                if let Some(g) = r.gateway {
                    assert!(subnet.contains(&g), "{g} outside {subnet}");
                }
                if let Some(range) = r.pool.range {
                    assert!(subnet.contains(&range), "{range} outside {subnet}");
                }
                for x in &r.exclude {
                    assert!(
                        subnet.contains(&x.first) && subnet.contains(&x.last),
                        "{x} outside {subnet}"
                    );
                }
                granted.push(Granted {
                    address: subnet,
                    gateway: r.gateway,
                });
            }
            let out = add_result(&conf.version, &granted, &ipam);
            let text = out.to_string();
            let back: serde_json::Value = serde_json::from_str(&text).expect("the result is JSON");
            assert_eq!(
                back["ips"].as_array().map(Vec::len),
                Some(granted.len()),
                "{text}"
            );
        }
    }
}

/// Entry point of the cargo-fuzz target `lan_frames` (`plugin-shim/fuzz/`), also replayed by
/// `tests/fuzz_lan.rs`: `data` read as an Ethernet frame by every parser of
/// [`crate::probe::packet`] and the watcher, and as text by the routing table parsers. None
/// may panic; a frame read as ARP or as neighbor discovery must be what it says (a parsed
/// ARP frame carries EtherType 0x0806, a parsed neighbor frame a correct checksum, which the
/// parser checked); and a probe built from the first bytes must read back as itself.
pub fn lan_frames(data: &[u8]) {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use crate::probe::{packet, parse_ipv6_route, parse_route, watch_observe};
    use allocator_core::Mac;

    let arp = packet::parse_arp(data);
    let nd = packet::parse_neighbor(data);
    assert!(
        arp.is_none() || nd.is_none(),
        "one frame read as both ARP and IPv6"
    );
    let _ = watch_observe(data, Mac([2, 0, 0, 0, 0, 1]));
    let text = String::from_utf8_lossy(data);
    let _ = parse_route(&text);
    let _ = parse_ipv6_route(&text);
    if data.len() >= 22 {
        let mut m = [0u8; 6];
        m.copy_from_slice(&data[..6]);
        let mac = Mac(m);
        let v4 = Ipv4Addr::new(data[6], data[7], data[8], data[9]);
        let got = packet::parse_arp(&packet::arp_probe(mac, v4)).expect("our probe parses");
        assert_eq!((got.sender_mac, got.target_ip), (mac, v4));
        assert!(got.is_probe());
        let mut o = [0u8; 16];
        o.copy_from_slice(&data[6..22]);
        let v6 = Ipv6Addr::from(o);
        let ns = packet::parse_neighbor(&packet::neighbor_solicitation(mac, v6))
            .expect("our solicitation parses");
        assert_eq!((ns.target, ns.mac, ns.advert), (v6, mac, false));
    }
}
