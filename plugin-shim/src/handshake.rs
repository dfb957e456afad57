//! The three calls dockerd makes when it meets the plugin: `Plugin.Activate`,
//! `IpamDriver.GetCapabilities` and `IpamDriver.GetDefaultAddressSpaces`.
//!
//! They take no input and touch no state, but their answers shape everything after, so the
//! choices are recorded here.
//!
//! ## `RequiresMACAddress: true`
//!
//! raftipam identifies an endpoint by `{host, endpoint name}`, not by MAC address, but it
//! needs dockerd to send the MAC anyway: Docker 20.10 (Debian's `docker.io`) sends *no*
//! endpoint name, and without `RequiresMACAddress` a container's `RequestAddress` carries
//! nil options — the same form as an `--aux-address` request (moby 20.10
//! `libnetwork/network.go` `ipamAllocateVersion`, `endpoint.go`). A `docker run --ip X` would
//! then be taken for an aux address and become a *shared* reservation, so two containers
//! could get the same address (seen with a real dockerd: `raftipam/tests/docker_e2e/`).
//! With `RequiresMACAddress`, libnetwork puts `com.docker.network.endpoint.macaddress` in
//! every endpoint's options, so endpoint requests always have non-nil options and are
//! exclusive allocations, while aux addresses keep nil options.
//!
//! ## `RequiresRequestReplay: false`
//!
//! With replay on, dockerd's `Controller.reservePools` (moby `daemon/libnetwork/controller.go`)
//! calls `Network.ipamAllocate` for every network in its local store at every start — a
//! `RequestPool`, the gateway `RequestAddress` and every aux `RequestAddress` again — and then
//! `Endpoint.assignAddress` for every endpoint (`network.go`, `endpoint.go`). moby's
//! `docs/ipam.md` says what it is for: drivers "which decide not to persist the pools".
//! raftipam persists and replicates everything, so it gains nothing, and it would lose:
//! pools and shared reservations are *reference-counted per holder* (several hosts share one
//! network's pool and gateway), so each replayed `RequestPool` and gateway/aux reservation
//! would add one more reference from this host that no `ReleasePool` / `ReleaseAddress`
//! ever takes back — after a dockerd restart the network's delete would no longer free its
//! pool or gateway. (Replayed endpoint requests would be harmless: they are idempotent per
//! `{host, endpoint}`.) The cost of `false`: a shim on a [`crate::MemoryBackend`] forgets
//! everything when it restarts, which is why that backend is for tests and embedding.
//!
//! ## Address spaces `local` and `global`
//!
//! The same names as Docker's default IPAM, so that networks behave as users expect; pools
//! in different spaces never conflict.

use crate::wire::{ActivateResponse, AddressSpacesResponse, CapabilitiesResponse};

/// The plugin kind this process implements.
pub const IMPLEMENTS: &str = "IpamDriver";
/// Default address space of local-scope networks.
pub const LOCAL_ADDRESS_SPACE: &str = "local";
/// Default address space of global-scope networks.
pub const GLOBAL_ADDRESS_SPACE: &str = "global";

/// `/Plugin.Activate`: `{"Implements": ["IpamDriver"]}`.
pub fn activate() -> ActivateResponse {
    ActivateResponse {
        implements: vec![IMPLEMENTS.to_string()],
    }
}

/// `/IpamDriver.GetCapabilities`: the MAC address wanted (so that endpoint requests are told
/// from aux addresses), no replay wanted (see the module documentation for why).
pub fn capabilities() -> CapabilitiesResponse {
    CapabilitiesResponse {
        requires_mac_address: true,
        requires_request_replay: false,
    }
}

/// `/IpamDriver.GetDefaultAddressSpaces`: `local` and `global`.
pub fn default_address_spaces() -> AddressSpacesResponse {
    AddressSpacesResponse {
        local_default_address_space: LOCAL_ADDRESS_SPACE.to_string(),
        global_default_address_space: GLOBAL_ADDRESS_SPACE.to_string(),
    }
}
