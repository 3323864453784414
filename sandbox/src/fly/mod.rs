//! A fake Fly.io Machines API ("flaps") for one app, whose machines are local
//! processes. Dev/test only.
//!
//! ```ignore
//! let fake = FakeFly::start(FakeFlyOptions { app: "sportsbook".into(), ..Default::default() }).await?;
//! let id = fake.create_machine(MachineSpec { group: "web".into(), cmd: vec![leaky_app], ..Default::default() }).await?;
//! // point a client at fake.base_url() (it appends /v1/apps/...) with `Authorization: Bearer <token>`
//! fake.set_secret("DB_POOL_MAX", "5");   // machines see it at their next start/restart/update
//! fake.hold_lease(&id, Duration::from_secs(30))?;  // someone else holds the lease
//! fake.inject_faults(2, 503);            // the next two requests answer 503
//! fake.request_counts();                 // (method, route) -> requests, to count writes
//! fake.shutdown().await;                 // stops every machine; dropping the fake kills them
//! ```
//!
//! # The real API, as read in the client and the docs
//!
//! From `superfly/fly-go`:
//! - `flaps/flaps.go`: requests go to `{FLY_FLAPS_BASE_URL or https://api.machines.dev}/v1{path}`,
//!   `Authorization` is `tokens.FlapsHeader()` (`Bearer <token>` or `FlyV1 <macaroons>`),
//!   `Content-Type: application/json` only when there is a body. Any status > 299 is an
//!   error whose message is the body's `error` (or `message`) field. Only GETs are
//!   retried (on ECONNRESET, twice).
//! - `http.go`: the transport (rehttp) retries every method on 502/503 and temporary
//!   errors, up to 3 times with 100 ms..1 s jittered delays. Nothing reads
//!   `Retry-After`, and 429 is not retried. (The fake still sends `Retry-After` on 429.)
//! - `flaps/flaps_machines.go`: `NonceHeader = "fly-machine-lease-nonce"`, sent by
//!   Update, Start, Stop, Restart, Destroy, Cordon, Uncordon, Suspend and ReleaseLease
//!   when a nonce is given — never by SetMetadata/DeleteMetadata or Kill, so the
//!   fake does not lease-gate metadata or signals. Paths under `/apps/{app}/machines`:
//!   `POST ""` launch (`LaunchMachineInput`), `POST /{id}` update (same body, whole
//!   config), `POST /{id}/start` (answers `MachineStartResponse`: `previous_state`),
//!   `POST /{id}/stop` (`StopMachineInput`: `signal`, `timeout`),
//!   `POST /{id}/restart?force_stop=bool[&timeout=<Go duration>][&signal=..]`,
//!   `GET /{id}`, `GET ?<raw state string>` (List), `DELETE /{id}?kill=bool`,
//!   `POST /{id}/signal` `{"signal": 9}` (Kill), `GET|POST|DELETE /{id}/lease`
//!   (acquire/refresh with `?ttl=<seconds>`, refresh sends the nonce header),
//!   `POST /{id}/cordon|uncordon|suspend`, `GET /{id}/metadata` (a string map),
//!   `POST /{id}/metadata/{key}` `{"value": ...}`, `DELETE /{id}/metadata/{key}`.
//!   `AcquireLease` retries every error (409 included) with `flaps/retry.go`'s
//!   backoff (100 ms..500 ms, no time limit) until its context ends.
//! - `flaps/flaps_machines_wait.go` (+ `_test.go`): `GET /{id}/wait?state=..&timeout=..`
//!   with `state` repeated per state (default `started`), `timeout` in whole seconds
//!   clamped by the client to 1..60 (default 60), optional `version` and
//!   `from_event_id`. Older fly-go/flyctl sent `instance_id=` instead of `version`.
//! - `flaps/flaps_secrets.go` + `secrets_types.go`: app secrets at
//!   `/apps/{app}/secrets`: `GET` (`?version=`, `?show_secrets=true`) answers
//!   `{"secrets": [{"name", "digest", "value"?}]}`; `GET|POST|DELETE /{name}`
//!   (`POST` body `{"value"}`, answers the secret and `version`; `DELETE` answers
//!   `{"version"}`); `POST ""` `{"values": {name: value|null}}` sets and deletes,
//!   answers `{"secrets", "version"}`.
//! - `machine_types.go`: `Machine` JSON fields `id, name, state, region, image_ref,
//!   instance_id, version, private_ip, created_at, updated_at, config, events,
//!   checks, nonce`; `MachineConfig` (`env, init{exec,entrypoint,cmd}, metadata,
//!   services, checks, image, restart, processes, stop_config{timeout,signal}`...);
//!   process group in `metadata.fly_process_group` (older: `process_group`),
//!   `fly_platform_version: "v2"` marks Fly Launch machines; `MachineLease`
//!   `{status, data{nonce, expires_at (unix s), owner, version}, message, code}`;
//!   `LaunchMachineInput{config, region, name, skip_launch, lease_ttl, ...}`.
//! - `duration.go`: `fly.Duration` marshals as a Go duration string, unmarshals a
//!   string or a number of nanoseconds.
//! - `flaps/flaps_error.go`: error bodies are `{"error": ...}`, optionally with a
//!   string `status` code (`insufficient_capacity`, `name_taken`, ...); a 409 whose
//!   error says "insufficient ... available to fulfill request" is a host capacity error.
//!
//! From `superfly/docs` (`machines/api/machines-resource.html.markerb`,
//! `machines/api/working-with-machines-api.html.markerb`, `reference/machines/*`):
//! list filters `include_deleted`, `region`, `metadata.{key}=value`; update needs the
//! whole config ("we don't support partial updates"), region and name are immutable,
//! a running machine reboots, `skip_launch` keeps a stopped one stopped; every update
//! may change `instance_id`; stop's default signal is SIGINT; wait answers 200, 400
//! or 408 (`instance_id`, `timeout` default 60, `state` started|stopped|destroyed);
//! lease create answers 201 (409 on conflict), get 404 without a lease, release needs
//! the nonce header (400 otherwise); leased machines refuse updates without the nonce;
//! metadata set/delete answer 204; auth is `Authorization: Bearer <token>`; rate
//! limits are per action per machine, 1 req/s with bursts of 3, except Get Machine at
//! 5 req/s with bursts of 10. flyctl `internal/machine/leasable_machine.go` and
//! `restart.go` (lease, update/restart with the nonce, then `Wait` for `started`).
//! A real 401 body: `{"error": "Authenticate: token validation error"}`.
//!
//! From Fly's OpenAPI document of the API (`tests/fixtures/fly/machines-openapi3.json`
//! in the main crate): `Machine` carries `host_status` (`ok`, `unknown`,
//! `unreachable`) and, when the host is not ok, `incomplete_config` (fly-go: "not
//! suitable to clone or recreate the original machine") with `config` unset; the
//! update body `UpdateMachineRequest` has `current_version` and `min_secrets_version`;
//! `Lease` has `nonce` at the top level (fly-go's `MachineLease` wraps it in
//! `{status, data}`: [`LeaseShape`] picks); restart declares no body; no field is
//! nullable; `failed` is a persistent state.
//!
//! # The real API's failure modes, on demand
//! - `answer_nulls` (on by default): `init`'s unset lists answered as `null`, as the real
//!   API's Go server marshals them; a request whose config holds a `null` is refused
//!   (400), as the document (and a validating proxy on it) refuses it.
//! - [`FakeFly::set_host_status`]: an unreachable host (the config answered as above;
//!   updates and restarts refused with 503).
//! - [`FakeFly::fail_machine`]: a `failed` machine.
//! - [`FakeFly::lose_answers`]: the API acts, then the answer is lost (a 502).
//! - [`FakeFly::before_next_lease`]: a machine started or stopped by someone else
//!   between a client's list and its lease.
//! - `secrets_lag`: a (re)start boots with secrets that many versions old unless the
//!   machine version's `min_secrets_version` asks for newer.
//! - [`FakeFly::requests`]: every request as received (method, path and query, body,
//!   whether it carried the lease nonce).
//!
//! # Where the fake decides (not documented, or simplified)
//! - Operations are synchronous: update/stop/restart answer once the process has
//!   stopped and the new one is spawned (flyd answers earlier; clients `Wait` anyway).
//! - A mutating request on a leased machine without the lease's nonce answers 409
//!   (the docs only say it fails). Starting a started machine, destroying a running
//!   one without `force`/`kill`, and `current_version` mismatches answer 412. Stopping
//!   a stopped machine and restarting a stopped one succeed.
//! - A process that exits makes its machine `stopped`; `restart.policy` is ignored.
//! - Secrets override `config.env` and apply at the next start/restart/update (the
//!   brief's model of Fly); list never shows values, whatever `show_secrets` says.
//!   Digests are the fake's own.
//! - Metadata changes keep `instance_id`. `nonce` appears on a machine only in the
//!   create response (`lease_ttl`). No suspend, exec, ps, volumes or apps endpoints.
//! - `private_ip` is a loopback address 127.0.0.x (Fly: a 6PN IPv6 address), exported
//!   as `FLY_PRIVATE_IP` with `FLY_APP_NAME`, `FLY_MACHINE_ID`, `FLY_ALLOC_ID`,
//!   `FLY_REGION`, `FLY_PROCESS_GROUP`, `FLY_MACHINE_VERSION` and `FLY_IMAGE_REF`.
//! - The command is `config.init.exec` (or `entrypoint` + `cmd`): there are no images,
//!   `config.image` is only required and echoed.

mod http;
mod ids;
mod machine;
mod ops;
mod ratelimit;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub use http::NONCE_HEADER;
pub use machine::LeaseShape;
pub use ops::{Change, RequestRecord};
pub use ratelimit::RateLimit;

use ops::Shared;

#[derive(Debug, Clone)]
pub struct FakeFlyOptions {
    /// The one app this API serves; other app names answer 404.
    pub app: String,
    /// The token every request must carry (`Bearer` or `FlyV1`).
    pub token: String,
    /// Every action but Get Machine, per action per machine (Fly: 1/s, burst 3).
    pub rate: RateLimit,
    /// Get Machine, per machine (Fly: 5/s, burst 10).
    pub get_rate: RateLimit,
    /// Where machine output goes (`<machine id>.log`); a temporary directory if None.
    pub log_dir: Option<PathBuf>,
    /// SIGKILL this long after the stop signal, unless the config or request says
    /// otherwise (Fly's default kill timeout is 5 s).
    pub stop_timeout: Duration,
    /// How the lease endpoints answer (fly-go's `{status, data}` by default).
    pub lease_shape: LeaseShape,
    /// Machines answer `init`'s unset lists as `null`, as the real API does (true by
    /// default); the OpenAPI document allows no null, so a validating proxy in front
    /// of the fake needs this off.
    pub answer_nulls: bool,
    /// A machine (re)started without `min_secrets_version` boots with the app secrets
    /// this many versions behind the newest (0: the newest).
    pub secrets_lag: u64,
}

impl Default for FakeFlyOptions {
    fn default() -> Self {
        FakeFlyOptions {
            app: "poolwarden-test".into(),
            token: "fake-fly-token".into(),
            rate: RateLimit::FLY_ACTION,
            get_rate: RateLimit::FLY_GET,
            log_dir: None,
            stop_timeout: Duration::from_secs(5),
            lease_shape: LeaseShape::default(),
            answer_nulls: true,
            secrets_lag: 0,
        }
    }
}

/// A machine to create with [`FakeFly::create_machine`].
#[derive(Debug, Clone, Default)]
pub struct MachineSpec {
    /// Process group (`metadata.fly_process_group`).
    pub group: String,
    /// Region; `iad` if empty.
    pub region: String,
    pub env: BTreeMap<String, String>,
    /// The machine's process (`config.init.exec`).
    pub cmd: Vec<String>,
    /// More metadata.
    pub metadata: BTreeMap<String, String>,
    /// `config.checks` (name → check, e.g. `{"alive": {"type": "tcp", "port": 8080,
    /// "grace_period": "2s"}}`); none when null.
    pub checks: Value,
}

impl MachineSpec {
    /// The `config` the machine is launched with.
    pub fn config(&self) -> Value {
        let mut metadata: serde_json::Map<String, Value> =
            self.metadata.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        metadata.insert("fly_platform_version".into(), json!("v2"));
        if !self.group.is_empty() {
            metadata.insert("fly_process_group".into(), json!(self.group));
        }
        let mut config = json!({
            "image": "registry.fly.io/sandbox:local",
            "env": self.env,
            "init": {"exec": self.cmd},
            "metadata": metadata,
        });
        if self.checks.is_object() {
            config["checks"] = self.checks.clone();
        }
        config
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FakeFlyError {
    #[error("starting the fake Fly API: {0}")]
    Io(#[from] std::io::Error),
    #[error("{status}: {message}")]
    Api { status: u16, message: String },
}

impl From<ops::ApiError> for FakeFlyError {
    fn from(e: ops::ApiError) -> Self {
        FakeFlyError::Api {
            status: e.status,
            message: e.message,
        }
    }
}

pub struct FakeFly {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: JoinHandle<()>,
    _log_dir: Option<tempfile::TempDir>,
}

impl FakeFly {
    /// Serves the API on 127.0.0.1 at a free port.
    pub async fn start(opts: FakeFlyOptions) -> Result<FakeFly, FakeFlyError> {
        let (log_dir, tmp) = match opts.log_dir {
            Some(d) => {
                std::fs::create_dir_all(&d)?;
                (d, None)
            }
            None => {
                let t = tempfile::Builder::new().prefix("fake-fly").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let mut shared = Shared::new(
            opts.app,
            opts.token,
            opts.rate,
            opts.get_rate,
            opts.stop_timeout,
            log_dir,
        );
        shared.lease_shape = opts.lease_shape;
        shared.answer_nulls = opts.answer_nulls;
        shared.secrets_lag = opts.secrets_lag;
        let shared = Arc::new(shared);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let router = http::router(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(error = %e, "fake fly: server stopped");
            }
        });
        Ok(FakeFly {
            shared,
            addr,
            server,
            _log_dir: tmp,
        })
    }

    /// `http://127.0.0.1:PORT`; clients append `/v1/apps/{app}/...`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn app(&self) -> &str {
        &self.shared.app
    }

    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Creates and starts a machine, as `POST /v1/apps/{app}/machines` does
    /// (not counted, not rate limited). Returns its id.
    pub async fn create_machine(&self, spec: MachineSpec) -> Result<String, FakeFlyError> {
        let mut body = json!({"config": spec.config()});
        if !spec.region.is_empty() {
            body["region"] = json!(spec.region);
        }
        let m = self.shared.create(&body).await?;
        Ok(m["id"].as_str().unwrap_or_default().to_string())
    }

    /// Stops a machine, as `POST .../{id}/stop` or Fly Proxy's autostop does (not
    /// counted, not rate limited).
    pub async fn stop_machine(&self, id: &str) -> Result<(), FakeFlyError> {
        self.shared.stop(id, &json!({}), None).await?;
        Ok(())
    }

    /// Every machine as the API shows it, destroyed ones included, oldest first.
    pub fn machines(&self) -> Vec<Value> {
        self.shared.list(&ops::ListFilter {
            include_deleted: true,
            ..Default::default()
        })
    }

    pub fn machine(&self, id: &str) -> Option<Value> {
        self.shared.machine_json(id).ok()
    }

    /// Process (group) id of a started machine.
    pub fn pid(&self, id: &str) -> Option<i32> {
        self.shared.world().machines.get(id)?.run.as_ref().map(|r| r.pid)
    }

    /// Process groups of every machine process still alive.
    pub fn pids(&self) -> Vec<i32> {
        self.shared.registry.pids()
    }

    /// Where a machine's output goes (appended across restarts).
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.shared.log_dir.join(format!("{id}.log"))
    }

    /// Sets an app secret (machines see it at their next start/restart/update).
    pub fn set_secret(&self, name: &str, value: &str) {
        if let Err(e) = self
            .shared
            .secrets_update(&[(name.to_string(), Some(value.to_string()))])
        {
            panic!("set_secret({name:?}): {}", e.message);
        }
    }

    /// Removes an app secret; false if there was none.
    pub fn unset_secret(&self, name: &str) -> bool {
        self.shared.secret_delete(name).is_ok()
    }

    /// Someone else takes the machine's lease for `ttl`; returns its nonce.
    pub fn hold_lease(&self, id: &str, ttl: Duration) -> Result<String, FakeFlyError> {
        let secs = ttl.as_secs().max(1);
        let (_, lease) = self
            .shared
            .lease_acquire(id, Some(secs), "held by a test", None, ops::OTHER_OWNER)?;
        Ok(lease["data"]["nonce"].as_str().unwrap_or_default().to_string())
    }

    /// The next `n` authenticated requests answer `status` (`{"error": ...}`).
    pub fn inject_faults(&self, n: usize, status: u16) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(std::iter::repeat_n(status, n));
    }

    /// The machine fails: its process is killed and it stays `failed`.
    pub async fn fail_machine(&self, id: &str) -> Result<(), FakeFlyError> {
        Ok(self.shared.fail(id).await?)
    }

    /// The machine's host as flyd sees it: `ok`, `unknown` or `unreachable`. Not ok,
    /// the machine answers `config: null` with an `incomplete_config`, and refuses
    /// changes (503).
    pub fn set_host_status(&self, id: &str, status: &str) -> Result<(), FakeFlyError> {
        Ok(self.shared.set_host_status(id, status)?)
    }

    /// The next `n` successful answers to `method` on a route ending in `route_suffix`
    /// (e.g. `"/machines/{id}"` for updates, `"/lease"`, `"/restart"`) are lost after
    /// the API acted: the client gets a 502 instead.
    pub fn lose_answers(&self, method: &str, route_suffix: &str, n: usize) {
        self.shared
            .lost_answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((method.to_owned(), route_suffix.to_owned(), n));
    }

    /// Just before the machine's next lease is granted, it is changed (started or
    /// stopped) by someone else.
    pub fn before_next_lease(&self, id: &str, change: Change) {
        self.shared
            .before_lease
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), change);
    }

    /// Every authenticated request so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The app secrets version the machine's running process booted with.
    pub fn running_secrets_version(&self, id: &str) -> Option<u64> {
        let w = self.shared.world();
        let m = w.machines.get(id)?;
        m.run.as_ref().and(m.secrets_version)
    }

    /// The newest app secrets version.
    pub fn secrets_version(&self) -> u64 {
        self.shared.world().secrets_version
    }

    /// Authenticated requests per (method, route), e.g.
    /// `("POST", "/v1/apps/{app}/machines/{id}")` for updates.
    pub fn request_counts(&self) -> BTreeMap<(String, String), u64> {
        self.shared.counts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Requests answered 429 (over the rate limit).
    pub fn throttled(&self) -> u64 {
        self.shared.throttled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Authenticated requests that were not GETs.
    pub fn writes(&self) -> u64 {
        self.request_counts()
            .iter()
            .filter(|((method, _), _)| method != "GET")
            .map(|(_, n)| n)
            .sum()
    }

    /// Stops serving, stops every machine (stop signal, SIGKILL after the
    /// timeout) and waits for them.
    pub async fn shutdown(self) {
        self.server.abort();
        self.shared.stop_all().await;
        self.shared.kill_all();
    }
}

impl Drop for FakeFly {
    fn drop(&mut self) {
        self.server.abort();
        self.shared.kill_all();
    }
}
