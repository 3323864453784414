//! A client of the Fly.io Machines API, the calls poolwarden needs and nothing more,
//! shaped after superfly/fly-go's `flaps` client (paths, bodies, the lease nonce
//! header) and flyctl's retries (408 is "not yet" for a wait; 429 and 5xx are retried
//! with backoff, honouring `Retry-After`).
//!
//! A machine's config is kept as the JSON the API returned: an update sends the
//! **whole** config back (the API has no partial update), changed only in `env`, so
//! fields poolwarden does not know survive.

use std::{collections::BTreeMap, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode, header};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};

/// The header carrying a lease's nonce on every call made under that lease.
pub const NONCE_HEADER: &str = "fly-machine-lease-nonce";
/// The metadata key of a machine's process group.
pub const PROCESS_GROUP_KEY: &str = "fly_process_group";
/// Largest response body read.
const MAX_BODY: usize = 8 << 20;
/// Attempts of one call that meets 429 or 5xx.
const ATTEMPTS: u32 = 6;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{method} {path}: HTTP {status}: {message}")]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
    },
    #[error("{method} {path}: {message}")]
    Transport {
        method: Method,
        path: String,
        message: String,
    },
    #[error("{method} {path}: unexpected answer: {message}")]
    Decode {
        method: Method,
        path: String,
        message: String,
    },
}

impl ApiError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A label for metrics.
    pub fn metric_label(&self) -> String {
        match self {
            ApiError::Status { status, .. } => format!("http_{}", status.as_u16()),
            ApiError::Transport { .. } => "transport".to_owned(),
            ApiError::Decode { .. } => "decode".to_owned(),
        }
    }
}

/// One machine as listed.
#[derive(Clone, Debug, Deserialize)]
pub struct Machine {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub state: MachineState,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub instance_id: String,
    #[serde(default)]
    pub private_ip: String,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    /// The whole config, as returned.
    #[serde(default)]
    pub config: Value,
    /// The status of each of `config.checks` (absent or null without checks).
    #[serde(default)]
    pub checks: Option<Vec<CheckStatus>>,
}

/// A machine's state, as the Machines API names it
/// (<https://fly.io/docs/machines/machine-states/>).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MachineState {
    Created,
    Starting,
    Started,
    Stopping,
    Stopped,
    Suspending,
    Suspended,
    Replacing,
    Destroying,
    Destroyed,
    Failed,
    /// A state this build does not know (or none given): never taken for started.
    #[default]
    #[serde(other)]
    Unknown,
}

impl MachineState {
    /// The word the API uses (for `wait?state=`).
    pub const fn as_str(self) -> &'static str {
        match self {
            MachineState::Created => "created",
            MachineState::Starting => "starting",
            MachineState::Started => "started",
            MachineState::Stopping => "stopping",
            MachineState::Stopped => "stopped",
            MachineState::Suspending => "suspending",
            MachineState::Suspended => "suspended",
            MachineState::Replacing => "replacing",
            MachineState::Destroying => "destroying",
            MachineState::Destroyed => "destroyed",
            MachineState::Failed => "failed",
            MachineState::Unknown => "unknown",
        }
    }

    /// At rest: not on its way from one state to another.
    pub fn settled(self) -> bool {
        matches!(
            self,
            MachineState::Started | MachineState::Stopped | MachineState::Suspended
        )
    }
}

/// One health check's status (fly-go `MachineCheckStatus`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct CheckStatus {
    #[serde(default)]
    pub name: String,
    /// `passing`, `warning` or `critical`.
    #[serde(default)]
    pub status: String,
}

impl Machine {
    /// Whether the machine declares health checks (`config.checks`).
    pub fn has_checks(&self) -> bool {
        self.config["checks"].as_object().is_some_and(|c| !c.is_empty())
    }

    /// Every declared check is passing.
    pub fn checks_pass(&self) -> bool {
        self.checks
            .as_deref()
            .is_some_and(|c| !c.is_empty() && c.iter().all(|c| c.status == "passing"))
    }

    /// `config.env` as strings (the API's env values are strings).
    pub fn env(&self) -> BTreeMap<String, String> {
        string_map(&self.config["env"])
    }

    /// `config.metadata`.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        string_map(&self.config["metadata"])
    }

    /// The process group; Fly's default group is `app`.
    pub fn process_group(&self) -> String {
        self.metadata()
            .remove(PROCESS_GROUP_KEY)
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| "app".to_owned())
    }

    /// Not destroyed or being destroyed.
    pub fn is_active(&self) -> bool {
        !matches!(self.state, MachineState::Destroyed | MachineState::Destroying)
    }
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// A lease held on a machine.
#[derive(Clone, Debug)]
pub struct Lease {
    pub nonce: String,
}

/// What waiting for a machine's state came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Waited {
    Reached,
    /// The API's own wait timed out (408).
    TimedOut,
}

/// The Machines API of one organisation's token.
#[derive(Clone)]
pub struct MachinesApi {
    base: String,
    token: String,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for MachinesApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is never printed.
        f.debug_struct("MachinesApi").field("base", &self.base).finish()
    }
}

impl MachinesApi {
    /// `base` is the API's root URL (`https://api.machines.dev` on Fly), without `/v1`.
    pub fn new(base: &str, token: &str) -> Result<Self, String> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("loading the system's root certificates: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    pub async fn list_machines(&self, app: &str) -> Result<Vec<Machine>, ApiError> {
        self.call(Method::GET, &format!("/v1/apps/{app}/machines"), None, None)
            .await
    }

    pub async fn get_machine(&self, app: &str, id: &str) -> Result<Machine, ApiError> {
        self.call(Method::GET, &format!("/v1/apps/{app}/machines/{id}"), None, None)
            .await
    }

    /// Updates the machine with its whole config. A started machine restarts with
    /// it; any other is started too unless `skip_launch` ("if the Machine isn't
    /// running, and you don't want it to start up, set skip_launch" — Fly's Update
    /// Machine docs).
    pub async fn update_machine(
        &self,
        app: &str,
        m: &Machine,
        config: &Value,
        skip_launch: bool,
        lease: &Lease,
    ) -> Result<Machine, ApiError> {
        let mut body = json!({"config": config, "region": m.region});
        if skip_launch {
            body["skip_launch"] = json!(true);
        }
        self.call(
            Method::POST,
            &format!("/v1/apps/{app}/machines/{}", m.id),
            Some(body),
            Some(lease),
        )
        .await
    }

    pub async fn acquire_lease(&self, app: &str, id: &str, ttl: Duration) -> Result<Lease, ApiError> {
        let path = format!("/v1/apps/{app}/machines/{id}/lease?ttl={}", ttl.as_secs().max(1));
        let v: Value = self.call(Method::POST, &path, Some(json!({})), None).await?;
        match v["data"]["nonce"].as_str() {
            Some(nonce) if !nonce.is_empty() => Ok(Lease {
                nonce: nonce.to_owned(),
            }),
            _ => Err(ApiError::Decode {
                method: Method::POST,
                path,
                message: "the lease has no nonce".to_owned(),
            }),
        }
    }

    pub async fn release_lease(&self, app: &str, id: &str, lease: &Lease) -> Result<(), ApiError> {
        self.call::<Value>(
            Method::DELETE,
            &format!("/v1/apps/{app}/machines/{id}/lease"),
            None,
            Some(lease),
        )
        .await
        .map(drop)
    }

    pub async fn restart(&self, app: &str, id: &str, lease: &Lease) -> Result<(), ApiError> {
        self.call::<Value>(
            Method::POST,
            &format!("/v1/apps/{app}/machines/{id}/restart?force_stop=false"),
            Some(json!({})),
            Some(lease),
        )
        .await
        .map(drop)
    }

    /// Waits (at most `timeout`, capped at the API's 60 s) until the machine's
    /// instance `instance_id` is `state`.
    pub async fn wait(
        &self,
        app: &str,
        id: &str,
        instance_id: &str,
        state: MachineState,
        timeout: Duration,
    ) -> Result<Waited, ApiError> {
        let secs = timeout.as_secs().clamp(1, 60);
        let state = state.as_str();
        let path = format!("/v1/apps/{app}/machines/{id}/wait?state={state}&timeout={secs}&instance_id={instance_id}");
        match self.call::<Value>(Method::GET, &path, None, None).await {
            Ok(_) => Ok(Waited::Reached),
            Err(e) if e.status() == Some(StatusCode::REQUEST_TIMEOUT) => Ok(Waited::TimedOut),
            Err(e) => Err(e),
        }
    }

    /// Sets one metadata key; the machine is not restarted.
    pub async fn set_metadata(&self, app: &str, id: &str, key: &str, value: &str) -> Result<(), ApiError> {
        self.call::<Value>(
            Method::POST,
            &format!("/v1/apps/{app}/machines/{id}/metadata/{key}"),
            Some(json!({ "value": value })),
            None,
        )
        .await
        .map(drop)
    }

    /// The names of the app's secrets (values are never read).
    pub async fn secret_names(&self, app: &str) -> Result<Vec<String>, ApiError> {
        let path = format!("/v1/apps/{app}/secrets");
        let v: Value = self.call(Method::GET, &path, None, None).await?;
        let list = v.get("secrets").unwrap_or(&v);
        list.as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|s| s["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .ok_or_else(|| ApiError::Decode {
                method: Method::GET,
                path,
                message: "no list of secrets".to_owned(),
            })
    }

    /// Sets app secrets (app-wide; machines read them when they next start).
    pub async fn set_secrets(&self, app: &str, values: &BTreeMap<String, String>) -> Result<(), ApiError> {
        self.call::<Value>(
            Method::POST,
            &format!("/v1/apps/{app}/secrets"),
            Some(json!({ "values": values })),
            None,
        )
        .await
        .map(drop)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        lease: Option<&Lease>,
    ) -> Result<T, ApiError> {
        let mut delay = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            match self.once(&method, path, body.as_ref(), lease).await {
                Ok(bytes) => {
                    let bytes = if bytes.is_empty() {
                        Bytes::from_static(b"null")
                    } else {
                        bytes
                    };
                    return serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
                        method: method.clone(),
                        path: path.to_owned(),
                        message: e.to_string(),
                    });
                }
                Err((e, retry_after)) => {
                    let retryable = match &e {
                        ApiError::Status { status, .. } => {
                            *status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
                        }
                        ApiError::Transport { .. } => true,
                        ApiError::Decode { .. } => false,
                    };
                    if !retryable || attempt >= ATTEMPTS {
                        return Err(e);
                    }
                    let wait = retry_after.unwrap_or(delay).min(Duration::from_secs(10));
                    tracing::debug!(error = %e, wait_ms = wait.as_millis() as u64, "Machines API: retrying");
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(Duration::from_secs(8));
                    attempt += 1;
                }
            }
        }
    }

    async fn once(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        lease: Option<&Lease>,
    ) -> Result<Bytes, (ApiError, Option<Duration>)> {
        let transport = |message: String| {
            (
                ApiError::Transport {
                    method: method.clone(),
                    path: path.to_owned(),
                    message,
                },
                None,
            )
        };
        let req = self
            .request(method, path, body, lease)
            .map_err(|e| transport(e.to_string()))?;
        let response = tokio::time::timeout(Duration::from_secs(75), self.http.request(req))
            .await
            .map_err(|_| transport("no answer within 75 s".to_owned()))?
            .map_err(|e| {
                let source = std::error::Error::source(&e)
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                transport(format!("{e}{source}"))
            })?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let bytes = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| transport(format!("reading the answer: {e}")))?
            .to_bytes();
        if status.is_success() {
            return Ok(bytes);
        }
        Err((
            ApiError::Status {
                method: method.clone(),
                path: path.to_owned(),
                status,
                message: error_message(&bytes),
            },
            retry_after,
        ))
    }

    /// The request, authorized, with the lease's nonce when the call holds one.
    fn request(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        lease: Option<&Lease>,
    ) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::ACCEPT, "application/json");
        if let Some(lease) = lease {
            req = req.header(NONCE_HEADER, &lease.nonce);
        }
        let payload = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        req.body(Full::new(payload))
    }
}

/// `Retry-After` in seconds (the Machines API does not send the date form).
fn retry_after(headers: &hyper::HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The API's `error` text, or the start of the body when it is not the API's JSON.
fn error_message(bytes: &[u8]) -> String {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned())
}
