//! Random method names and random bodies — bytes, and JSON shaped like Docker's — driven
//! through the router: no call panics, no call fails as a bug (500), every failure is a
//! non-200 JSON `{"Err": "<non-empty>"}`, every success is JSON. The checks are those of the
//! cargo-fuzz target (`plugin_shim::fuzzing`), whose committed corpus is replayed here too.

use plugin_shim::router::METHODS;
use proptest::prelude::*;
use serde_json::{Map, Value};

use plugin_shim::fuzzing::{call_and_check, router_call, seeded_router};

const WORDS: &[&str] = &[
    "",
    "local",
    "global",
    "local/10.0.0.0/24",
    "local/10.0.0.0/24/10.0.0.128/25",
    "local/fd00::/64",
    "local/10.1.0.0/24",
    "nope",
    "10.0.0.0/24",
    "10.0.0.128/25",
    "10.0.0.5",
    "10.0.0.1",
    "10.0.0.255",
    "10.0.0.300",
    "fd00::5",
    "0.0.0.0/0",
    "::/0",
    "10.0.0.0/8",
    "com.docker.network.gateway",
    "com.docker.network.endpoint.name",
    "com.docker.network.ipam.serial",
    "RequestAddressType",
    "serial",
    "cooldown",
    "reserve",
    "true",
    "30s",
    "10.0.0.2-10.0.0.9",
    "web",
];

const KEYS: &[&str] = &[
    "PoolID",
    "Address",
    "Options",
    "AddressSpace",
    "Pool",
    "SubPool",
    "V6",
    "Err",
    "poolid",
    "x",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(WORDS).prop_map(str::to_string),
        "\\PC{0,20}"
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        word().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(word(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object with Docker's keys (mostly) and plausible or random values.
fn docker_like() -> impl Strategy<Value = Vec<u8>> {
    let options = prop::collection::btree_map(word(), word(), 0..4).prop_map(|m| {
        Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect::<Map<_, _>>(),
        )
    });
    let value = prop_oneof![3 => word().prop_map(Value::String), 1 => options, 1 => json_value()];
    prop::collection::btree_map(
        prop::sample::select(KEYS).prop_map(str::to_string),
        value,
        0..6,
    )
    .prop_map(|m| serde_json::to_vec(&Value::Object(m.into_iter().collect())).unwrap_or_default())
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => docker_like(),
        1 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => prop::collection::vec(any::<u8>(), 600..1200), // over the body limit below
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(&METHODS[..]).prop_map(|m| format!("/{m}")),
        1 => "[A-Za-z0-9._-]{0,30}".prop_map(|m| format!("/{m}")),
        1 => "[A-Za-z0-9._/-]{0,30}".prop_map(|m| format!("/IpamDriver.{m}")),
    ]
}

fn http_method() -> impl Strategy<Value = &'static str> {
    prop_oneof![8 => Just("POST"), 1 => Just("GET"), 1 => Just("PUT")]
}

fn pick(words: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop::sample::select(words).prop_map(|w| Value::String(w.to_string()))
}

/// A well-formed call of a state-changing method, so that successes and conflicts are
/// exercised as well as rejections.
fn plausible_call() -> impl Strategy<Value = (&'static str, String, Vec<u8>)> {
    const IDS: &[&str] = &[
        "local/10.0.0.0/24",
        "local/fd00::/64",
        "local/10.0.0.0/24/10.0.0.128/25",
        "local/10.3.0.0/24",
    ];
    const ADDRS: &[&str] = &[
        "",
        "",
        "10.0.0.1",
        "10.0.0.5",
        "10.0.0.130",
        "10.0.0.255",
        "fd00::1",
        "fd00::9",
        "10.3.0.7",
    ];
    const POOLS: &[&str] = &["", "10.0.0.0/24", "10.3.0.0/24", "fd00::/64", "10.0.0.0/16"];
    const SUBS: &[&str] = &["", "", "10.0.0.128/25"];
    const NAMES: &[&str] = &["web", "db", ""];
    let options = prop_oneof![
        Just(Value::Null),
        Just(serde_json::json!({"RequestAddressType": "com.docker.network.gateway"})),
        pick(NAMES).prop_map(|n| serde_json::json!({"com.docker.network.endpoint.name": n})),
        pick(NAMES).prop_map(|n| serde_json::json!({"com.docker.network.endpoint.name": n, "com.docker.network.ipam.serial": "true"})),
    ];
    let pool_options = prop_oneof![
        Just(Value::Null),
        Just(
            serde_json::json!({"serial": "true", "cooldown": "1h", "reserve": "10.0.0.2-10.0.0.4"})
        ),
    ];
    prop_oneof![
        (pick(IDS), pick(ADDRS), options).prop_map(|(p, a, o)| {
            ("/IpamDriver.RequestAddress", serde_json::json!({"PoolID": p, "Address": a, "Options": o}))
        }),
        (pick(IDS), pick(ADDRS)).prop_map(|(p, a)| ("/IpamDriver.ReleaseAddress", serde_json::json!({"PoolID": p, "Address": a}))),
        (pick(POOLS), pick(SUBS), pool_options, any::<bool>()).prop_map(|(p, s, o, v6)| {
            ("/IpamDriver.RequestPool", serde_json::json!({"AddressSpace": "local", "Pool": p, "SubPool": s, "Options": o, "V6": v6}))
        }),
        pick(IDS).prop_map(|p| ("/IpamDriver.ReleasePool", serde_json::json!({"PoolID": p}))),
    ]
    .prop_map(|(path, body)| ("POST", path.to_string(), serde_json::to_vec(&body).unwrap_or_default()))
}

fn any_call() -> impl Strategy<Value = (&'static str, String, Vec<u8>)> {
    prop_oneof![1 => (http_method(), path(), body()), 1 => plausible_call()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_call_gets_json_and_every_failure_an_err(calls in prop::collection::vec(any_call(), 1..16)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let app = seeded_router().await;
            for (method, path, body) in calls {
                call_and_check(&app, method, &path, &body).await;
            }
        });
    }
}

/// The router fuzz target's committed corpus (`fuzz/corpus/router/`), replayed through the
/// same function cargo-fuzz drives.
#[test]
fn the_router_corpus_holds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/router");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.expect("corpus entry").path();
        router_call(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
        n += 1;
    }
    assert!(n >= 10, "the corpus is committed: {n} inputs");
}

/// The CNI fuzz target's committed corpus (`fuzz/corpus/cni_input/`), replayed through the
/// same function cargo-fuzz drives, and random inputs beside it.
#[test]
fn the_cni_input_corpus_holds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/cni_input");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.expect("corpus entry").path();
        plugin_shim::fuzzing::cni_input(
            &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        );
        n += 1;
    }
    assert!(n >= 10, "the corpus is committed: {n} inputs");
}

proptest::proptest! {
    #[test]
    fn random_cni_inputs_hold(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
        plugin_shim::fuzzing::cni_input(&data);
    }
}
