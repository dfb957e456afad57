//! Docker's request and reply bodies, field for field.
//!
//! The names and shapes follow moby's `daemon/libnetwork/ipams/remote/api/api.go`. dockerd
//! encodes with Go's `encoding/json`, so a nil map arrives as `null` and every field may be
//! missing (Go's zero value); decoding here is as forgiving as Go's about those two things and
//! strict about types. Unknown fields are ignored, as Go ignores them.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// The content type of every reply: the one dockerd's plugin client asks for in `Accept`
/// (`pkg/plugins/transport/mimetype.go`).
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// The option key (in `RequestAddress`) that marks a gateway request, and its value.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
/// The value of [`REQUEST_ADDRESS_TYPE`] for a network's gateway (`netlabel.Gateway`).
pub const GATEWAY_TYPE: &str = "com.docker.network.gateway";
/// The option key that carries the endpoint (container) name (`netlabel.EndpointName`).
pub const ENDPOINT_NAME: &str = "com.docker.network.endpoint.name";
/// The endpoint's MAC address option (sent because the plugin says `RequiresMACAddress`).
pub const ENDPOINT_MAC: &str = "com.docker.network.endpoint.macaddress";

/// Options as Docker sends them; `None` is Go's nil map (`null` or absent).
pub type Options = Option<BTreeMap<String, String>>;

/// Go decodes `null` into a string as "leave it empty"; do the same.
fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn null_as_false<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or_default())
}

/// Reply to `/Plugin.Activate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActivateResponse {
    /// The plugin kinds served: `["IpamDriver"]`.
    pub implements: Vec<String>,
}

/// Reply to `/IpamDriver.GetCapabilities`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CapabilitiesResponse {
    /// Whether dockerd must send each endpoint's MAC address.
    #[serde(rename = "RequiresMACAddress")]
    pub requires_mac_address: bool,
    /// Whether dockerd must replay pools and addresses when it starts.
    pub requires_request_replay: bool,
}

/// Reply to `/IpamDriver.GetDefaultAddressSpaces`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddressSpacesResponse {
    /// Address space of local-scope networks (bridge, macvlan).
    pub local_default_address_space: String,
    /// Address space of global-scope networks (overlay).
    pub global_default_address_space: String,
}

/// Body of `/IpamDriver.RequestPool`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPoolRequest {
    /// Address space (`local` or `global` from dockerd).
    #[serde(deserialize_with = "null_as_empty")]
    pub address_space: String,
    /// The subnet (`--subnet`), CIDR; empty to let the allocator choose.
    #[serde(deserialize_with = "null_as_empty")]
    pub pool: String,
    /// The sub-range (`--ip-range`), CIDR; may be empty.
    #[serde(deserialize_with = "null_as_empty")]
    pub sub_pool: String,
    /// `--ipam-opt` options.
    pub options: Options,
    /// With an empty `pool`: choose an IPv6 subnet.
    #[serde(rename = "V6", deserialize_with = "null_as_false")]
    pub v6: bool,
}

/// Reply to `/IpamDriver.RequestPool`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestPoolResponse {
    /// The pool's id, `space/subnet[/range]`.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// The subnet, CIDR.
    pub pool: String,
    /// Driver data (none).
    pub data: BTreeMap<String, String>,
}

/// Body of `/IpamDriver.ReleasePool`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReleasePoolRequest {
    /// The pool's id.
    #[serde(rename = "PoolID", deserialize_with = "null_as_empty")]
    pub pool_id: String,
}

/// Body of `/IpamDriver.RequestAddress`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestAddressRequest {
    /// The pool's id.
    #[serde(rename = "PoolID", deserialize_with = "null_as_empty")]
    pub pool_id: String,
    /// The address wanted (`--ip`, `--gateway`, an aux address), or empty for any.
    #[serde(deserialize_with = "null_as_empty")]
    pub address: String,
    /// `RequestAddressType` for a gateway; the endpoint name for an endpoint; `null` for an
    /// aux address.
    pub options: Options,
}

/// Reply to `/IpamDriver.RequestAddress`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestAddressResponse {
    /// The address with the subnet's prefix length, `a.b.c.d/len`.
    pub address: String,
    /// Driver data (none).
    pub data: BTreeMap<String, String>,
}

/// Body of `/IpamDriver.ReleaseAddress`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReleaseAddressRequest {
    /// The pool's id.
    #[serde(rename = "PoolID", deserialize_with = "null_as_empty")]
    pub pool_id: String,
    /// The address to release.
    #[serde(deserialize_with = "null_as_empty")]
    pub address: String,
}

/// The empty reply of the release methods, `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// The error reply, `{"Err": "..."}`, sent with a non-200 status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What went wrong, in words a user can act on.
    #[serde(rename = "Err")]
    pub err: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_dockerd_sends() {
        let aux: RequestAddressRequest = serde_json::from_str(
            r#"{"PoolID":"local/10.0.0.0/24","Address":"10.0.0.9","Options":null}"#,
        )
        .expect("valid");
        assert_eq!(aux.options, None);
        let pool: RequestPoolRequest =
            serde_json::from_str("{\"AddressSpace\":\"local\",\"Pool\":\"\",\"SubPool\":\"\",\"Options\":null,\"V6\":true}\n")
                .expect("valid");
        assert!(pool.v6 && pool.pool.is_empty());
        let missing: ReleasePoolRequest = serde_json::from_str("{}").expect("valid");
        assert_eq!(missing.pool_id, "");
    }

    #[test]
    fn rejects_wrong_types() {
        assert!(serde_json::from_str::<RequestPoolRequest>(r#"{"V6":"yes"}"#).is_err());
        assert!(serde_json::from_str::<RequestAddressRequest>(r#"{"Options":{"a":1}}"#).is_err());
    }

    #[test]
    fn encodes_docker_field_names() {
        let caps = CapabilitiesResponse {
            requires_mac_address: false,
            requires_request_replay: false,
        };
        assert_eq!(
            serde_json::to_string(&caps).expect("encodes"),
            r#"{"RequiresMACAddress":false,"RequiresRequestReplay":false}"#
        );
        let pool = RequestPoolResponse {
            pool_id: "p".into(),
            pool: "10.0.0.0/24".into(),
            data: BTreeMap::new(),
        };
        assert_eq!(
            serde_json::to_string(&pool).expect("encodes"),
            r#"{"PoolID":"p","Pool":"10.0.0.0/24","Data":{}}"#
        );
    }
}
