//! A client of the Fly.io Machines API, the calls poolwarden needs and nothing more.
//! Every request is one Fly's published OpenAPI document of the API declares
//! (`tests/fixtures/fly/machines-openapi3.json`, checked through a validating proxy by
//! `tests/e2e_fly_spec.rs`); answers are read in the document's shape and in fly-go's
//! (`flaps`), where the two differ (the table in `tests/fixtures/fly/README.md`).
//!
//! Retries: 408 is "not yet" for a wait; 429 (refused before anything was done) is
//! retried with backoff, honouring `Retry-After`. 5xx and lost answers are retried for
//! reads and idempotent writes only: a non-idempotent call (update, restart, lease)
//! answered so may have acted, and [`super::writes`] finds out before trying again.
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
/// The older key of the same (fly-go `MachineConfig.ProcessGroup`: "fly_process_group
/// used to be called process_group"), read when the newer one is missing.
pub const OLD_PROCESS_GROUP_KEY: &str = "process_group";
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

    /// An answer that says nothing of whether the API acted: no answer, or a 5xx from
    /// Fly's proxy or flyd.
    pub fn is_lost_answer(&self) -> bool {
        match self {
            ApiError::Status { status, .. } => status.is_server_error(),
            ApiError::Transport { .. } => true,
            ApiError::Decode { .. } => false,
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
    /// The machine's version: "InstanceID is unique for each version of the machine"
    /// (the document); what `current_version` and wait's `version` name.
    #[serde(default)]
    pub instance_id: String,
    #[serde(default)]
    pub private_ip: String,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    /// The whole config, as returned; null when the host is not reachable.
    #[serde(default)]
    pub config: Value,
    /// With `host_status` other than ok, the API answers `config: null` and this, a
    /// config rebuilt from other sources, "not suitable to clone or recreate the
    /// original machine" (fly-go): read for grouping, never written back.
    #[serde(default)]
    pub incomplete_config: Value,
    /// `ok`, `unknown` or `unreachable` (absent from older answers: then the config
    /// alone says whether it was read).
    #[serde(default)]
    pub host_status: Option<String>,
    /// The status of each of `config.checks` (absent or null without checks).
    #[serde(default)]
    pub checks: Option<Vec<CheckStatus>>,
    /// The machine's events, newest first (`MachineEvent`: `type`, `timestamp` in ms).
    #[serde(default)]
    pub events: Option<Vec<Value>>,
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

    /// On its way from one state to another: the "transient" states of Fly's machine
    /// states table. `created`, `failed` and a state this build does not know are not:
    /// such a machine is counted unavailable, and its group is not taken for a rollout
    /// in progress.
    pub fn in_transition(self) -> bool {
        matches!(
            self,
            MachineState::Starting
                | MachineState::Stopping
                | MachineState::Suspending
                | MachineState::Replacing
                | MachineState::Destroying
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

    /// Why the config as read must not be written back, if it must not: the host is
    /// not reachable, or the API answered no config.
    pub fn incomplete(&self) -> Option<String> {
        match self.host_status.as_deref() {
            Some(status) if status != "ok" => Some(format!("host_status is {status}, the config is incomplete")),
            _ if !self.config.is_object() => Some("the API answered no config".to_owned()),
            _ if !self.incomplete_config.is_null() => Some("the API answered an incomplete config".to_owned()),
            _ => None,
        }
    }

    /// `config.metadata`, or the incomplete config's (fly-go `GetConfig`).
    pub fn metadata(&self) -> BTreeMap<String, String> {
        if self.config.is_object() {
            string_map(&self.config["metadata"])
        } else {
            string_map(&self.incomplete_config["metadata"])
        }
    }

    /// The process group (`fly_process_group`, else the older `process_group`); Fly's
    /// default group is `app`.
    pub fn process_group(&self) -> String {
        let mut metadata = self.metadata();
        [PROCESS_GROUP_KEY, OLD_PROCESS_GROUP_KEY]
            .into_iter()
            .find_map(|key| metadata.remove(key).filter(|g| !g.is_empty()))
            .unwrap_or_else(|| "app".to_owned())
    }

    /// A release-command or console machine, which `fly deploy` and `fly console` run
    /// for a moment and which are no part of any process group: fly-go's `ListActive`
    /// leaves them out (`IsReleaseCommandMachine || IsFlyAppsConsole`), and so does
    /// poolwarden.
    pub fn is_release_command_or_console(&self) -> bool {
        let metadata = self.metadata();
        let group = self.process_group();
        let fly_apps_v2 = metadata.get("fly_platform_version").map(String::as_str) == Some("v2");
        group == "fly_app_release_command"
            || metadata.get(OLD_PROCESS_GROUP_KEY).map(String::as_str) == Some("release_command")
            || (fly_apps_v2 && group == "fly_app_console")
    }

    /// Why poolwarden must not write to the machine, if it must not: a config that
    /// cannot be read whole, a `failed` machine (flyd gave up on it: someone must look),
    /// or a state this build does not know.
    pub fn unwritable(&self) -> Option<String> {
        self.incomplete().or_else(|| match self.state {
            MachineState::Failed => Some("the machine is failed".to_owned()),
            MachineState::Unknown => Some("its state is not one poolwarden knows".to_owned()),
            _ => None,
        })
    }

    /// Started on a host the API can reach: available.
    pub fn is_up(&self) -> bool {
        self.state == MachineState::Started && self.incomplete().is_none()
    }

    /// Not destroyed or being destroyed.
    pub fn is_active(&self) -> bool {
        !matches!(self.state, MachineState::Destroyed | MachineState::Destroying)
    }

    /// The ids of the machine's events as read (`MachineEvent.id`).
    pub fn event_ids(&self) -> std::collections::BTreeSet<String> {
        self.events
            .iter()
            .flatten()
            .filter_map(|e| e["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Whether an event of one of `kinds` is there that was not among `seen`.
    pub fn has_new_event(&self, kinds: &[&str], seen: &std::collections::BTreeSet<String>) -> bool {
        self.events
            .iter()
            .flatten()
            .any(|e| kinds.iter().any(|k| e["type"] == *k) && e["id"].as_str().is_some_and(|id| !seen.contains(id)))
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
    /// What poolwarden wrote as the lease's description: unique to the attempt, so a
    /// lease found after a lost answer is known to be its own.
    pub description: String,
}

impl Lease {
    /// A lease answer in the document's shape (`Lease`: `nonce` at the top level) or
    /// fly-go's (`MachineLease`: `{status, data: {nonce, ...}}`, the docs' examples).
    fn from_answer(v: &Value) -> Option<Lease> {
        let lease = if v["data"].is_object() { &v["data"] } else { v };
        let nonce = lease["nonce"].as_str().filter(|n| !n.is_empty())?;
        Some(Lease {
            nonce: nonce.to_owned(),
            description: lease["description"].as_str().unwrap_or_default().to_owned(),
        })
    }
}

/// An update of a machine: its whole config, sent back.
#[derive(Clone, Debug)]
pub struct Update<'a> {
    pub config: &'a Value,
    /// The version the config was read from: the API refuses the update once the
    /// machine has moved on (another update, or this one already applied).
    pub current_version: &'a str,
    /// Leave a machine that is not running stopped (Fly's Update Machine docs).
    pub skip_launch: bool,
    /// Boot with app secrets at least this version (flyctl's `MinSecretsVersion`).
    pub min_secrets_version: Option<u64>,
}

/// Whether a call may be sent again after an answer that says nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// Reads and idempotent writes: again on 429, 5xx and lost answers.
    Always,
    /// Non-idempotent writes: again on 429 only, which is refused before acting.
    OnlyRefused,
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
        self.call(
            Method::GET,
            &format!("/v1/apps/{app}/machines"),
            None,
            None,
            Retry::Always,
        )
        .await
    }

    pub async fn get_machine(&self, app: &str, id: &str) -> Result<Machine, ApiError> {
        self.call(
            Method::GET,
            &format!("/v1/apps/{app}/machines/{id}"),
            None,
            None,
            Retry::Always,
        )
        .await
    }

    /// Updates the machine with its whole config, once (see [`super::writes`] for the
    /// retry). A started machine restarts with it; any other is started too unless
    /// `skip_launch` ("if the Machine isn't running, and you don't want it to start
    /// up, set skip_launch" — Fly's Update Machine docs). Nulls in the config as read
    /// (Go's nil lists: `init.cmd: null`) are left out: the document declares no field
    /// nullable, and an absent field means the same to the API.
    pub async fn update_machine(
        &self,
        app: &str,
        m: &Machine,
        update: &Update<'_>,
        lease: &Lease,
    ) -> Result<Machine, ApiError> {
        let mut body = json!({
            "config": without_nulls(update.config),
            "region": m.region,
            "current_version": update.current_version,
        });
        if update.skip_launch {
            body["skip_launch"] = json!(true);
        }
        if let Some(v) = update.min_secrets_version {
            body["min_secrets_version"] = json!(v);
        }
        self.call(
            Method::POST,
            &format!("/v1/apps/{app}/machines/{}", m.id),
            Some(body),
            Some(lease),
            Retry::OnlyRefused,
        )
        .await
    }

    /// Asks for a lease, once, described as `description` (see [`super::writes`]).
    /// The TTL goes in the body (`CreateLeaseRequest`, which the document requires);
    /// fly-go sends it as `?ttl=`, which the document does not declare.
    pub async fn acquire_lease(
        &self,
        app: &str,
        id: &str,
        ttl: Duration,
        description: &str,
    ) -> Result<Lease, ApiError> {
        let path = format!("/v1/apps/{app}/machines/{id}/lease");
        let body = json!({"ttl": ttl.as_secs().max(1), "description": description});
        let v: Value = self
            .call(Method::POST, &path, Some(body), None, Retry::OnlyRefused)
            .await?;
        Lease::from_answer(&v).ok_or_else(|| ApiError::Decode {
            method: Method::POST,
            path,
            message: "the lease has no nonce".to_owned(),
        })
    }

    /// The machine's live lease, if any (404: none).
    pub async fn get_lease(&self, app: &str, id: &str) -> Result<Option<Lease>, ApiError> {
        let path = format!("/v1/apps/{app}/machines/{id}/lease");
        match self.call::<Value>(Method::GET, &path, None, None, Retry::Always).await {
            Ok(v) => Ok(Lease::from_answer(&v)),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn release_lease(&self, app: &str, id: &str, lease: &Lease) -> Result<(), ApiError> {
        self.call::<Value>(
            Method::DELETE,
            &format!("/v1/apps/{app}/machines/{id}/lease"),
            None,
            Some(lease),
            Retry::Always,
        )
        .await
        .map(drop)
    }

    /// Restarts the machine, once (see [`super::writes`]). No body and no `force_stop`:
    /// the document declares neither (fly-go sends `?force_stop=false`, the default).
    pub async fn restart(&self, app: &str, id: &str, lease: &Lease) -> Result<(), ApiError> {
        self.call::<Value>(
            Method::POST,
            &format!("/v1/apps/{app}/machines/{id}/restart"),
            None,
            Some(lease),
            Retry::OnlyRefused,
        )
        .await
        .map(drop)
    }

    /// Waits (at most `timeout`, capped at the API's 60 s) until the machine's
    /// `version` is `state` (`instance_id=` is the document's deprecated name).
    pub async fn wait(
        &self,
        app: &str,
        id: &str,
        version: &str,
        state: MachineState,
        timeout: Duration,
    ) -> Result<Waited, ApiError> {
        let secs = timeout.as_secs().clamp(1, 60);
        let state = state.as_str();
        let path = format!("/v1/apps/{app}/machines/{id}/wait?state={state}&timeout={secs}&version={version}");
        match self.call::<Value>(Method::GET, &path, None, None, Retry::Always).await {
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
            Retry::Always,
        )
        .await
        .map(drop)
    }

    /// The names of the app's secrets (values are never read).
    pub async fn secret_names(&self, app: &str) -> Result<Vec<String>, ApiError> {
        let path = format!("/v1/apps/{app}/secrets");
        let v: Value = self.call(Method::GET, &path, None, None, Retry::Always).await?;
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

    /// Sets app secrets (app-wide; a machine reads them when it boots with at least the
    /// answered secrets version). Setting the same values again is harmless, so it is
    /// retried like a read.
    pub async fn set_secrets(&self, app: &str, values: &BTreeMap<String, String>) -> Result<u64, ApiError> {
        let path = format!("/v1/apps/{app}/secrets");
        let v: Value = self
            .call(
                Method::POST,
                &path,
                Some(json!({ "values": values })),
                None,
                Retry::Always,
            )
            .await?;
        // `AppSecretsUpdateResp`: `version` (and the deprecated `Version`).
        v["version"]
            .as_u64()
            .or_else(|| v["Version"].as_u64())
            .ok_or_else(|| ApiError::Decode {
                method: Method::POST,
                path,
                message: "no secrets version in the answer".to_owned(),
            })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        lease: Option<&Lease>,
        retry: Retry,
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
                    let refused = e.status() == Some(StatusCode::TOO_MANY_REQUESTS);
                    let retryable = refused || (retry == Retry::Always && e.is_lost_answer());
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

/// The value without its null members, at every depth.
pub fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(v: Value) -> Machine {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_lease_answer_is_read_in_the_documents_shape_and_in_fly_gos() {
        let document = json!({"nonce": "abc", "expires_at": 1, "description": "d"});
        let fly_go = json!({"status": "success", "data": {"nonce": "abc", "description": "d"}});
        for answer in [document, fly_go] {
            let lease = Lease::from_answer(&answer).unwrap();
            assert_eq!((lease.nonce.as_str(), lease.description.as_str()), ("abc", "d"));
        }
        assert!(Lease::from_answer(&json!({"status": "success", "data": {}})).is_none());
        assert!(Lease::from_answer(&json!({"nonce": ""})).is_none());
    }

    #[test]
    fn nulls_are_left_out_at_every_depth() {
        let read = json!({"init": {"cmd": null, "exec": ["a"]}, "env": {"A": "1"}, "x": [{"y": null}]});
        assert_eq!(
            without_nulls(&read),
            json!({"init": {"exec": ["a"]}, "env": {"A": "1"}, "x": [{}]})
        );
    }

    #[test]
    fn the_process_group_falls_back_to_the_older_key_then_app() {
        let with = |md: Value| machine(json!({"id": "m", "state": "started", "config": {"metadata": md}}));
        assert_eq!(
            with(json!({"fly_process_group": "web", "process_group": "x"})).process_group(),
            "web"
        );
        assert_eq!(with(json!({"process_group": "worker"})).process_group(), "worker");
        assert_eq!(with(json!({})).process_group(), "app");
        assert!(with(json!({"fly_process_group": "fly_app_release_command"})).is_release_command_or_console());
        assert!(with(json!({"process_group": "release_command"})).is_release_command_or_console());
        assert!(
            with(json!({"fly_process_group": "fly_app_console", "fly_platform_version": "v2"}))
                .is_release_command_or_console()
        );
        assert!(!with(json!({"fly_process_group": "web"})).is_release_command_or_console());
    }

    #[test]
    fn an_unreachable_host_makes_the_config_incomplete_and_its_metadata_still_groups() {
        let m = machine(json!({
            "id": "m", "state": "started", "host_status": "unreachable", "config": null,
            "incomplete_config": {"metadata": {"fly_process_group": "web"}}
        }));
        assert!(m.incomplete().is_some_and(|w| w.contains("unreachable")));
        assert!(m.unwritable().is_some());
        assert!(!m.is_up());
        assert_eq!(m.process_group(), "web");
        let ok = machine(json!({"id": "m", "state": "started", "host_status": "ok", "config": {}}));
        assert_eq!(ok.incomplete(), None);
        assert!(ok.is_up());
    }

    #[test]
    fn failed_and_unknown_machines_are_unwritable_and_not_in_transition() {
        for state in ["failed", "launch_failed"] {
            let m = machine(json!({"id": "m", "state": state, "config": {}}));
            assert!(m.unwritable().is_some(), "{state}");
            assert!(!m.state.in_transition(), "{state}");
        }
        for state in ["starting", "stopping", "replacing", "destroying", "suspending"] {
            assert!(
                machine(json!({"id": "m", "state": state})).state.in_transition(),
                "{state}"
            );
        }
        assert!(!machine(json!({"id": "m", "state": "created"})).state.in_transition());
    }

    #[test]
    fn a_restart_is_told_apart_by_an_event_that_was_not_there_before() {
        let before = machine(json!({"id": "m", "events": [{"id": "1", "type": "start", "timestamp": 5}]}));
        let seen = before.event_ids();
        let after = machine(json!({"id": "m", "events": [
            {"id": "2", "type": "restart", "timestamp": 5},
            {"id": "1", "type": "start", "timestamp": 5}
        ]}));
        assert!(!before.has_new_event(&["restart", "start"], &seen));
        assert!(after.has_new_event(&["restart", "start"], &seen));
        assert!(!after.has_new_event(&["update"], &seen));
    }
}
