//! The pure allocator inside one's own service: one `State` behind a mutex, the service's own
//! clock passed in with every write, typed results, and a snapshot to persist however the
//! service likes (here, a file), restored at start.
//!
//! `cargo run -p allocator-core --example service`

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use allocator_core::{AllocError, Order, Owner, PoolId, PoolSpec, State};

/// A tiny address service: what a DHCP-like daemon or an orchestrator would wrap.
struct AddressService {
    state: Mutex<State>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl AddressService {
    fn new(state: State) -> Self {
        AddressService {
            state: Mutex::new(state),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn create_network(&self, cidr: &str, owner: &str) -> Result<PoolId, AllocError> {
        let subnet = cidr
            .parse()
            .map_err(|_| AllocError::Invalid(format!("{cidr:?} is not a subnet")))?;
        let spec = PoolSpec::new("services").subnet(subnet).serial(true);
        Ok(self.state().request_pool(now_ms(), &spec, owner)?.pool)
    }

    fn lease(&self, pool: &PoolId, host: &str, name: &str) -> Result<String, AllocError> {
        let owner = Owner::new(host, name);
        let got = self
            .state()
            .allocate(now_ms(), pool, &owner, Order::PoolDefault)?;
        Ok(got.addr.to_string())
    }

    fn give_back(&self, pool: &PoolId, addr: &str, host: &str) -> Result<(), AllocError> {
        let ip = addr
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| AllocError::Invalid(format!("{addr:?} is not an address")))?;
        self.state().release(now_ms(), pool, ip, host)?;
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let saved = std::env::temp_dir().join(format!("allocator-service-{}.snap", std::process::id()));
    let svc = AddressService::new(State::default());
    let pool = svc.create_network("10.77.0.0/28", "example")?;
    let a = svc.lease(&pool, "host-a", "web-1")?;
    let b = svc.lease(&pool, "host-b", "db-1")?;
    println!("web-1 got {a}, db-1 got {b}");
    // The same owner asking again gets the same address: a retry is harmless.
    assert_eq!(svc.lease(&pool, "host-a", "web-1")?, a);
    // Another host may not release what host-a holds.
    let refused = svc
        .give_back(&pool, &a, "host-b")
        .expect_err("not host-b's");
    println!("refused: {refused}");
    svc.give_back(&pool, &b, "host-b")?;

    // Persist, then start again from the file.
    std::fs::write(&saved, svc.state().to_snapshot())?;
    let restored = State::from_snapshot(&std::fs::read(&saved)?)?;
    let svc = AddressService::new(restored);
    assert_eq!(svc.lease(&pool, "host-a", "web-1")?, a);
    println!("restored from {} with web-1 still at {a}", saved.display());
    std::fs::remove_file(&saved)?;
    Ok(())
}
