//! The plugin process: what runs when a CNI runtime executes `raftipam` with `CNI_COMMAND`
//! set. It decodes the environment and stdin, answers `VERSION` itself, forwards everything
//! else to the host agent's local socket, and writes the result (or the error object) in
//! the version the configuration asked for.

use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

use super::agent::{AgentOk, AgentReply, AgentRequest};
use super::spec::{
    add_result, code, parse_config, version_result, CniError, Command, Env, DEFAULT_SOCKET,
    NEWEST_VERSION,
};

/// Longest time one call may take, the agent's answer included (kubelet gives a whole pod
/// four minutes; a call that cannot be decided sooner is better retried).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What the process prints and how it exits.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Written to stdout (empty for a `DEL`, `CHECK`, `GC` or `STATUS` that succeeded).
    pub stdout: String,
    /// The exit code: 0, or non-zero with an error object on stdout.
    pub exit: u8,
}

/// Runs one call: `get` reads the environment, `stdin` is the configuration.
pub async fn run(get: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    let version = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .filter(|v| super::spec::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| NEWEST_VERSION.to_string());
    match call(get, stdin).await {
        Ok(out) => Outcome {
            stdout: out.map(|v| v.to_string()).unwrap_or_default(),
            exit: 0,
        },
        Err(e) => Outcome {
            stdout: e.to_json(&version).to_string(),
            exit: 1,
        },
    }
}

async fn call(
    get: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Option<Value>, CniError> {
    let env = Env::read(&get)?;
    if env.command == Command::Version {
        return Ok(Some(version_result()));
    }
    let conf = parse_config(stdin, &env)?;
    if matches!(env.command, Command::Gc | Command::Status)
        && !super::spec::version_at_least(&conf.version, "1.1.0")
    {
        return Err(CniError::new(
            code::VERSION,
            format!(
                "{:?} exists from cniVersion 1.1.0; the configuration says {}",
                env.command, conf.version
            ),
        ));
    }
    if env.command == Command::Check && !super::spec::version_at_least(&conf.version, "0.4.0") {
        return Err(CniError::new(
            code::VERSION,
            format!(
                "CHECK exists from cniVersion 0.4.0; the configuration says {}",
                conf.version
            ),
        ));
    }
    let socket = conf
        .ipam
        .as_ref()
        .map(|i| i.socket.clone())
        .or_else(|| get("RAFTIPAM_CNI_SOCKET").filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_SOCKET.to_string());
    let req = AgentRequest {
        command: env.command,
        network: conf.name.clone(),
        attachment: env.attachment.clone(),
        netns: env.netns.clone(),
        ranges: conf
            .ipam
            .as_ref()
            .map(|i| i.ranges.clone())
            .unwrap_or_default(),
        requested: conf.requested.clone(),
        prev_ips: conf.prev_ips.clone(),
        valid_attachments: conf.valid_attachments.clone(),
    };
    let reply = match tokio::time::timeout(CALL_TIMEOUT, ask(Path::new(&socket), &req)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(CniError::new(
                code::TRY_AGAIN,
                format!(
                    "the raftipam agent at {socket} did not answer within {}; try again later",
                    humantime::format_duration(CALL_TIMEOUT)
                ),
            ))
        }
    };
    match (env.command, reply?) {
        (Command::Add, AgentOk::Granted(g)) => {
            let plan = conf
                .ipam
                .as_ref()
                .ok_or_else(|| CniError::new(code::CONFIG, "ADD without an ipam section"))?;
            Ok(Some(add_result(&conf.version, &g, plan)))
        }
        (Command::Add, other) => Err(CniError::new(
            code::REFUSED,
            format!("the agent answered {other:?} to ADD"),
        )),
        _ => Ok(None),
    }
}

/// Sends one request to the agent at `socket`.
pub async fn ask(socket: &Path, req: &AgentRequest) -> Result<AgentReply, CniError> {
    let no_agent = |why: String| {
        let c = if req.command == Command::Status {
            code::NOT_AVAILABLE
        } else {
            code::NO_AGENT
        };
        CniError::new(
            c,
            format!(
                "no raftipam agent answers on {}: start this host's agent with `--cni-socket {}` (raftipam shim, node --plugin-socket or up), or name its socket in ipam.socket",
                socket.display(),
                socket.display()
            ),
        )
        .details(why)
    };
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| no_agent(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| no_agent(e.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let body = serde_json::to_vec(req).map_err(|e| CniError::new(code::IO, e.to_string()))?;
    let http = hyper::Request::builder()
        .method("POST")
        .uri("/cni/v1")
        .header(hyper::header::HOST, "raftipam")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| CniError::new(code::IO, e.to_string()))?;
    let io = |e: String| {
        CniError::new(
            code::IO,
            format!("talking to the raftipam agent at {}: {e}", socket.display()),
        )
    };
    let res = sender
        .send_request(http)
        .await
        .map_err(|e| io(e.to_string()))?;
    let status = res.status();
    let bytes = res
        .into_body()
        .collect()
        .await
        .map_err(|e| io(e.to_string()))?
        .to_bytes();
    driver.abort();
    if !status.is_success() {
        return Err(io(format!(
            "{status}: {}",
            String::from_utf8_lossy(&bytes).trim()
        )));
    }
    serde_json::from_slice::<AgentReply>(&bytes).map_err(|e| {
        CniError::new(
            code::DECODE,
            format!("the raftipam agent answered something this plugin cannot read ({e}): are the plugin and the agent the same version?"),
        )
    })
}
