//! Talking to the local dockerd: which endpoints of raftipam networks this host has.
//!
//! Plain HTTP/1.1 on dockerd's unix socket (`/var/run/docker.sock` by default), spoken by
//! hyper; the JSON is Docker's Engine API (`GET /networks`, `GET /networks/{id}`). Every call
//! is bounded by a timeout, so a stuck dockerd never stalls a reconciliation pass forever.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::net::UnixStream;

/// dockerd's API socket when nothing else is said.
pub const DEFAULT_DOCKER_HOST: &str = "/var/run/docker.sock";

/// Longest time one Docker API call may take.
pub const DOCKER_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why dockerd could not be asked.
#[derive(Debug, Error)]
pub enum DockerError {
    /// The socket could not be reached.
    #[error("cannot reach dockerd at {socket}: {why} (is dockerd running? name its socket with --docker-host)")]
    Connect {
        /// The socket.
        socket: String,
        /// The reason.
        why: String,
    },
    /// The call failed at the HTTP level or timed out.
    #[error("dockerd at {socket} failed on GET {path}: {why}")]
    Call {
        /// The socket.
        socket: String,
        /// The API path.
        path: String,
        /// The reason.
        why: String,
    },
}

/// One address of a container in a raftipam network on this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The network's name.
    pub network: String,
    /// The network's id.
    pub network_id: String,
    /// The container's name (Docker's endpoint name).
    pub container: String,
    /// The container's id.
    pub container_id: String,
    /// The network's IPAM driver.
    pub ipam_driver: String,
    /// The address.
    pub addr: IpAddr,
}

/// A client of one dockerd.
#[derive(Clone, Debug)]
pub struct Docker {
    socket: PathBuf,
    timeout: Duration,
}

#[derive(Deserialize)]
struct NetworkSummary {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "IPAM", default)]
    ipam: Option<Ipam>,
}

#[derive(Deserialize)]
struct Ipam {
    #[serde(rename = "Driver", default)]
    driver: Option<String>,
}

#[derive(Deserialize)]
struct NetworkDetail {
    #[serde(rename = "Containers", default)]
    containers: Option<std::collections::BTreeMap<String, ContainerEndpoint>>,
}

#[derive(Deserialize)]
struct ContainerEndpoint {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "IPv4Address", default)]
    ipv4: String,
    #[serde(rename = "IPv6Address", default)]
    ipv6: String,
}

/// `a.b.c.d/len` (or a bare address, or empty) as an address.
fn parse_cidr_addr(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let a = s.split('/').next().unwrap_or(s);
    a.parse().ok()
}

impl Docker {
    /// A client of the dockerd listening on `socket` (a path, or `unix://PATH`).
    pub fn new(socket: impl AsRef<str>) -> Docker {
        let s = socket.as_ref();
        let path = s.strip_prefix("unix://").unwrap_or(s);
        Docker {
            socket: PathBuf::from(path),
            timeout: DOCKER_CALL_TIMEOUT,
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn call_err(&self, path: &str, why: impl ToString) -> DockerError {
        DockerError::Call {
            socket: self.socket.display().to_string(),
            path: path.to_string(),
            why: why.to_string(),
        }
    }

    /// `GET path`, its JSON body decoded, within the timeout.
    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, DockerError> {
        match tokio::time::timeout(self.timeout, self.get_inner(path)).await {
            Ok(r) => r,
            Err(_) => Err(self.call_err(
                path,
                format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                ),
            )),
        }
    }

    async fn get_inner<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, DockerError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| DockerError::Connect {
                socket: self.socket.display().to_string(),
                why: e.to_string(),
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.call_err(path, e))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::builder()
            .method("GET")
            .uri(path)
            .header(hyper::header::HOST, "docker")
            .body(Empty::<Bytes>::new())
            .map_err(|e| self.call_err(path, e))?;
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| self.call_err(path, e))?;
        let status = res.status();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| self.call_err(path, e))?
            .to_bytes();
        driver.abort();
        if !status.is_success() {
            return Err(self.call_err(
                path,
                format!("{status}: {}", String::from_utf8_lossy(&body).trim()),
            ));
        }
        serde_json::from_slice(&body).map_err(|e| self.call_err(path, format!("bad JSON: {e}")))
    }

    /// Answers if dockerd is up (`GET /_ping`).
    pub async fn ping(&self) -> Result<(), DockerError> {
        // /_ping answers "OK", which is not JSON; /version is.
        let _: serde_json::Value = self.get("/version").await?;
        Ok(())
    }

    /// `(id, name, IPAM driver)` of every network.
    pub async fn networks(&self) -> Result<Vec<(String, String, String)>, DockerError> {
        let list: Vec<NetworkSummary> = self.get("/networks").await?;
        Ok(list
            .into_iter()
            .map(|n| {
                let driver = n
                    .ipam
                    .and_then(|i| i.driver)
                    .unwrap_or_else(|| "default".to_string());
                (n.id, n.name, driver)
            })
            .collect())
    }

    /// Every address of every container in the networks whose IPAM driver is `driver`.
    pub async fn endpoints(&self, driver: &str) -> Result<Vec<Endpoint>, DockerError> {
        Ok(self
            .all_endpoints()
            .await?
            .into_iter()
            .filter(|e| e.ipam_driver == driver)
            .collect())
    }

    /// Every address of every container in every network, whatever its IPAM driver.
    pub async fn all_endpoints(&self) -> Result<Vec<Endpoint>, DockerError> {
        let mut out = Vec::new();
        for (id, name, driver) in self.networks().await? {
            let detail: NetworkDetail = match self.get(&format!("/networks/{id}")).await {
                Ok(d) => d,
                // Removed between the list and the inspect: it has no endpoints.
                Err(DockerError::Call { why, .. }) if why.starts_with("404") => continue,
                Err(e) => return Err(e),
            };
            for (cid, c) in detail.containers.unwrap_or_default() {
                for a in [&c.ipv4, &c.ipv6] {
                    if let Some(addr) = parse_cidr_addr(a) {
                        out.push(Endpoint {
                            network: name.clone(),
                            network_id: id.clone(),
                            container: c.name.clone(),
                            container_id: cid.clone(),
                            ipam_driver: driver.clone(),
                            addr,
                        });
                    }
                }
            }
        }
        out.sort_by_key(|a| a.addr);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_with_or_without_a_prefix() {
        assert_eq!(
            parse_cidr_addr("10.1.0.5/24"),
            Some("10.1.0.5".parse().unwrap())
        );
        assert_eq!(
            parse_cidr_addr("fd00::5/64"),
            Some("fd00::5".parse().unwrap())
        );
        assert_eq!(parse_cidr_addr(""), None);
        assert_eq!(parse_cidr_addr("junk"), None);
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_clear_error() {
        let d = Docker::new("unix:///nonexistent/docker.sock");
        let e = d.endpoints("raftipam").await.unwrap_err();
        assert!(e.to_string().contains("cannot reach dockerd"), "{e}");
    }
}
