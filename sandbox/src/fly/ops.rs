//! What the API does, independent of HTTP: machine lifecycle (create, update,
//! start, stop, restart, destroy, wait), leases, metadata and app secrets.
//! Lifecycle operations on one machine are serialized by its `op` lock, as flyd
//! does; the world lock is never held across an await.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};

use super::ids;
use super::machine::{
    Lease, LeaseShape, Machine, Run, Secret, State, StopRequest, World, argv, now, object_mut, parse_duration,
    parse_signal, ports, process_env, valid_secret_name,
};
use super::ratelimit::{Limiter, RateLimit};
use crate::kubelet::ips;
use crate::kubelet::process::{self, PodProcess, ProcessRegistry};

/// Owner of leases taken through the API (Fly reports the token's user).
pub const API_OWNER: &str = "sandbox@fly.test";
/// Owner of leases taken with `FakeFly::hold_lease`.
pub const OTHER_OWNER: &str = "someone-else@fly.test";
/// Lease TTL when the request names none.
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
const DEFAULT_REGION: &str = "iad";

/// An API error: `{"error": message}` with `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    fn machine_not_found(id: &str) -> ApiError {
        ApiError::new(404, format!("machine not found: {id}"))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A change made to a machine outside the client under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Started, as Fly Proxy's autostart starts a stopped machine on a request.
    Start,
    /// Stopped, as autostop does.
    Stop,
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub method: String,
    /// The path and query, e.g. `/v1/apps/a/machines/1/wait?state=started&version=01J..`.
    pub uri: String,
    /// The route it matched, e.g. `/v1/apps/{app}/machines/{id}/wait`.
    pub route: String,
    /// The body as sent (empty when none).
    pub body: String,
    /// Whether it carried `fly-machine-lease-nonce`.
    pub nonce: bool,
}

pub struct Shared {
    pub app: String,
    pub token: String,
    pub rate: RateLimit,
    pub get_rate: RateLimit,
    pub stop_timeout: Duration,
    pub log_dir: PathBuf,
    pub registry: ProcessRegistry,
    pub faults: Mutex<VecDeque<u16>>,
    pub counts: Mutex<BTreeMap<(String, String), u64>>,
    /// Requests refused with 429.
    pub throttled: std::sync::atomic::AtomicU64,
    pub limiter: Limiter,
    /// How the lease endpoints answer.
    pub lease_shape: LeaseShape,
    /// Machines answer `init`'s unset lists as null, as the real API does.
    pub answer_nulls: bool,
    /// A (re)start without `min_secrets_version` boots with the secrets this many
    /// versions behind the newest: the host has not heard of the newest yet.
    pub secrets_lag: u64,
    /// Answers lost after the API acted: (method, route suffix, how many more).
    pub lost_answers: Mutex<Vec<(String, String, usize)>>,
    /// What happens to a machine just before its next lease is taken (someone else,
    /// or Fly Proxy's autostart, acting between a client's list and its lease).
    pub before_lease: Mutex<BTreeMap<String, Change>>,
    /// Every authenticated request, in order.
    pub requests: Mutex<Vec<RequestRecord>>,
    world: Mutex<World>,
    changed: watch::Sender<u64>,
}

/// What a list request filters on (`GET /v1/apps/{app}/machines?...`).
#[derive(Debug, Default)]
pub struct ListFilter {
    pub include_deleted: bool,
    pub region: Option<String>,
    pub metadata: Vec<(String, String)>,
    pub states: BTreeSet<String>,
}

const KNOWN_STATES: &[&str] = &[
    "created",
    "starting",
    "started",
    "stopping",
    "stopped",
    "replacing",
    "destroying",
    "destroyed",
    "suspended",
];

impl ListFilter {
    pub fn from_query(pairs: &[(String, String)]) -> ListFilter {
        let mut f = ListFilter::default();
        for (k, v) in pairs {
            match k.as_str() {
                "include_deleted" => f.include_deleted = v.is_empty() || v == "true" || v == "1",
                "region" if !v.is_empty() => f.region = Some(v.clone()),
                "state" => f
                    .states
                    .extend(v.split(',').filter(|s| !s.is_empty()).map(str::to_string)),
                // fly-go's List(ctx, app, state) sends `?<state>` as the whole query.
                s if v.is_empty() && KNOWN_STATES.contains(&s) => {
                    f.states.insert(s.to_string());
                }
                _ => {
                    if let Some(key) = k.strip_prefix("metadata.") {
                        f.metadata.push((key.to_string(), v.clone()));
                    }
                }
            }
        }
        f
    }

    fn matches(&self, m: &Machine) -> bool {
        (self.include_deleted || m.state != State::Destroyed)
            && self.region.as_ref().is_none_or(|r| *r == m.region)
            && self
                .metadata
                .iter()
                .all(|(k, v)| m.config["metadata"][k].as_str() == Some(v))
            && (self.states.is_empty() || self.states.contains(m.state.as_str()))
    }
}

impl Shared {
    pub fn new(
        app: String,
        token: String,
        rate: RateLimit,
        get_rate: RateLimit,
        stop_timeout: Duration,
        log_dir: PathBuf,
    ) -> Shared {
        Shared {
            app,
            token,
            rate,
            get_rate,
            stop_timeout,
            log_dir,
            registry: ProcessRegistry::default(),
            faults: Mutex::new(VecDeque::new()),
            counts: Mutex::new(BTreeMap::new()),
            throttled: Default::default(),
            limiter: Limiter::default(),
            lease_shape: LeaseShape::default(),
            answer_nulls: false,
            secrets_lag: 0,
            lost_answers: Mutex::new(Vec::new()),
            before_lease: Mutex::new(BTreeMap::new()),
            requests: Mutex::new(Vec::new()),
            world: Mutex::new(World::default()),
            changed: watch::channel(0).0,
        }
    }

    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// The op lock of a machine that is not destroyed.
    fn op_lock(&self, id: &str) -> ApiResult<Arc<tokio::sync::Mutex<()>>> {
        let w = self.world();
        let m = w
            .machines
            .get(id)
            .filter(|m| m.state != State::Destroyed)
            .ok_or_else(|| ApiError::machine_not_found(id))?;
        Ok(m.op.clone())
    }

    fn with_machine<T>(&self, id: &str, f: impl FnOnce(&mut Machine) -> ApiResult<T>) -> ApiResult<T> {
        let mut w = self.world();
        let m = w.machines.get_mut(id).ok_or_else(|| ApiError::machine_not_found(id))?;
        f(m)
    }

    /// Like `with_machine`, but a destroyed machine is not found.
    fn with_live_machine<T>(&self, id: &str, f: impl FnOnce(&mut Machine) -> ApiResult<T>) -> ApiResult<T> {
        self.with_machine(id, |m| {
            if m.state == State::Destroyed {
                return Err(ApiError::machine_not_found(id));
            }
            f(m)
        })
    }

    pub fn machine_json(&self, id: &str) -> ApiResult<Value> {
        self.with_machine(id, |m| Ok(m.to_json()))
    }

    pub fn list(&self, filter: &ListFilter) -> Vec<Value> {
        let w = self.world();
        let mut ms: Vec<&Machine> = w.machines.values().filter(|m| filter.matches(m)).collect();
        ms.sort_by_key(|m| m.seq);
        ms.into_iter().map(Machine::to_json).collect()
    }

    fn stop_request(&self, config: &Value, signal: Option<&Value>, timeout: Option<&Value>) -> StopRequest {
        let sc = &config["stop_config"];
        StopRequest {
            signal: signal
                .and_then(parse_signal)
                .or_else(|| parse_signal(&sc["signal"]))
                .unwrap_or(Signal::SIGINT),
            timeout: timeout
                .and_then(parse_duration)
                .or_else(|| parse_duration(&sc["timeout"]))
                .unwrap_or(self.stop_timeout),
        }
    }

    // ---- processes -------------------------------------------------------

    /// Starts the machine's process with its current config and the app's
    /// current secrets. The caller holds the machine's op lock.
    fn spawn_process(self: &Arc<Self>, id: &str) -> ApiResult<()> {
        let mut guard = self.world();
        let World {
            machines,
            secrets,
            secrets_version,
            secrets_history,
            closed,
            next_generation,
            ..
        } = &mut *guard;
        if *closed {
            return Err(ApiError::new(503, "the fake Fly API is shutting down"));
        }
        let m = machines.get_mut(id).ok_or_else(|| ApiError::machine_not_found(id))?;
        *next_generation += 1;
        let generation = *next_generation;
        let argv = argv(&m.config);
        // The newest secrets unless the host lags behind them; never older than the
        // machine version's `min_secrets_version`.
        let version = secrets_version
            .saturating_sub(self.secrets_lag)
            .max(m.min_secrets_version)
            .min(*secrets_version);
        let empty = BTreeMap::new();
        let booted = if version == *secrets_version {
            &*secrets
        } else {
            secrets_history.get(&version).unwrap_or(&empty)
        };
        let env = process_env(&self.app, m, booted);
        m.secrets_version = Some(version);
        let log = self.log_dir.join(format!("{id}.log"));
        m.state = State::Starting;
        match process::spawn(&argv, &env, &log, &self.registry) {
            Ok(proc) => {
                let (stop, stop_rx) = oneshot::channel();
                let pid = proc.pid();
                let task = tokio::spawn(supervise(self.clone(), id.to_string(), generation, proc, stop_rx));
                m.run = Some(Run {
                    generation,
                    pid,
                    stop,
                    task,
                });
                m.state = State::Started;
                m.push_event("start", "started", "flyd", None);
            }
            Err(e) => {
                // Like an init that cannot exec its command: started, then exited.
                tracing::warn!(machine = %id, error = %e, ?argv, "fake fly: starting machine");
                if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&log) {
                    let _ = writeln!(f, "fake fly: cannot run {argv:?}: {e}");
                }
                m.state = State::Stopped;
                m.push_event("start", "started", "flyd", None);
                m.push_exit_event(127, false);
            }
        }
        m.touch();
        drop(guard);
        self.notify();
        Ok(())
    }

    /// Stops the machine's process, if any, showing `during` meanwhile; a plain
    /// stop (`during` = stopping) ends in `stopped`, other callers set the
    /// next state themselves. Returns the exit code.
    async fn stop_process(&self, id: &str, req: StopRequest, during: State) -> Option<i32> {
        let run = {
            let mut w = self.world();
            let m = w.machines.get_mut(id)?;
            let run = m.run.take()?;
            m.state = during;
            m.touch();
            run
        };
        self.notify();
        let _ = run.stop.send(req);
        let code = run.task.await.unwrap_or(-1);
        if let Some(m) = self.world().machines.get_mut(id) {
            m.push_exit_event(code, true);
            if during == State::Stopping {
                m.state = State::Stopped;
            }
            m.touch();
        }
        self.notify();
        Some(code)
    }

    // ---- machines ---------------------------------------------------------

    /// `POST /v1/apps/{app}/machines` (fly-go `Launch`, body `LaunchMachineInput`).
    pub async fn create(self: &Arc<Self>, body: &Value) -> ApiResult<Value> {
        let config = body["config"].clone();
        validate_config(&config)?;
        let region = body["region"]
            .as_str()
            .filter(|r| !r.is_empty())
            .unwrap_or(DEFAULT_REGION)
            .to_string();
        let skip_launch = body["skip_launch"].as_bool().unwrap_or(false);
        let lease_ttl = body["lease_ttl"].as_u64().filter(|t| *t > 0);
        let id = ids::machine_id();
        let op = Arc::new(tokio::sync::Mutex::new(()));
        let _op = op.clone().lock_owned().await;
        let nonce = {
            let mut w = self.world();
            let name = match body["name"].as_str().filter(|n| !n.is_empty()) {
                Some(n) if w.machines.values().any(|m| m.name == n && m.state != State::Destroyed) => {
                    return Err(ApiError::new(409, format!("a machine named {n:?} already exists")));
                }
                Some(n) => n.to_string(),
                None => ids::name(),
            };
            let private_ip = ips::allocate(&ports(&config))
                .ok_or_else(|| ApiError::new(409, "insufficient IPs available to fulfill request"))?;
            w.next_seq += 1;
            let created = now();
            let mut m = Machine {
                id: id.clone(),
                name,
                region,
                config,
                state: State::Created,
                instance_id: ids::ulid(),
                private_ip,
                ip_released: false,
                created_at: created.clone(),
                updated_at: created,
                events: VecDeque::new(),
                lease: None,
                seq: w.next_seq,
                op,
                run: None,
                host_status: "ok".to_owned(),
                answer_nulls: self.answer_nulls,
                min_secrets_version: 0,
                secrets_version: None,
            };
            m.push_event("launch", "created", "user", None);
            let nonce = lease_ttl.map(|ttl| {
                let lease = new_lease(API_OWNER, "", Duration::from_secs(ttl));
                let nonce = lease.nonce.clone();
                m.lease = Some(lease);
                nonce
            });
            w.machines.insert(id.clone(), m);
            nonce
        };
        self.notify();
        if !skip_launch {
            self.spawn_process(&id)?;
        }
        let mut out = self.machine_json(&id)?;
        if let Some(n) = nonce {
            out["nonce"] = json!(n);
        }
        Ok(out)
    }

    /// `POST /v1/apps/{app}/machines/{id}` (fly-go `Update`): the whole config
    /// replaces the old one, a new `instance_id`, and a started machine is
    /// stopped and started again with it (unless `skip_launch`).
    pub async fn update(self: &Arc<Self>, id: &str, body: &Value, nonce: Option<&str>) -> ApiResult<Value> {
        let config = body["config"].clone();
        validate_config(&config)?;
        let op = self.op_lock(id)?;
        let _op = op.lock().await;
        let min_secrets_version = match &body["min_secrets_version"] {
            Value::Null => None,
            v => Some(
                v.as_u64()
                    .ok_or_else(|| ApiError::new(400, "min_secrets_version: an unsigned integer is required"))?,
            ),
        };
        let (was_running, old_config) = self.with_machine(id, |m| {
            check_lease(m, nonce)?;
            check_host(m)?;
            if let Some(r) = body["region"].as_str().filter(|r| !r.is_empty() && *r != m.region) {
                return Err(ApiError::new(
                    400,
                    format!("region is immutable: machine is in {}, not {r}", m.region),
                ));
            }
            if let Some(n) = body["name"].as_str().filter(|n| !n.is_empty() && *n != m.name) {
                return Err(ApiError::new(
                    400,
                    format!("name is immutable: machine is {}, not {n}", m.name),
                ));
            }
            if let Some(v) = body["current_version"]
                .as_str()
                .filter(|v| !v.is_empty() && *v != m.instance_id)
            {
                return Err(ApiError::new(
                    412,
                    format!(
                        "current_version {v} does not match the machine's version {}",
                        m.instance_id
                    ),
                ));
            }
            Ok((m.run.is_some(), m.config.clone()))
        })?;
        if was_running {
            let req = self.stop_request(&old_config, None, None);
            self.stop_process(id, req, State::Replacing).await;
        }
        let skip_launch = body["skip_launch"].as_bool().unwrap_or(false);
        let newest_secrets = self.world().secrets_version;
        if let Some(v) = min_secrets_version.filter(|v| *v > newest_secrets) {
            return Err(ApiError::new(
                400,
                format!("min_secrets_version {v}: the newest secrets version is {newest_secrets}"),
            ));
        }
        self.with_machine(id, |m| {
            m.config = config;
            m.min_secrets_version = min_secrets_version.unwrap_or(0);
            m.instance_id = ids::ulid();
            m.push_event("update", "replacing", "user", None);
            if skip_launch {
                m.state = if m.state == State::Created {
                    State::Created
                } else {
                    State::Stopped
                };
            }
            m.touch();
            Ok(())
        })?;
        self.notify();
        if !skip_launch {
            self.spawn_process(id)?;
        }
        self.machine_json(id)
    }

    /// `POST .../{id}/start` (fly-go `Start`): answers `MachineStartResponse`.
    pub async fn start(self: &Arc<Self>, id: &str, nonce: Option<&str>) -> ApiResult<Value> {
        let op = self.op_lock(id)?;
        let _op = op.lock().await;
        let previous = self.with_machine(id, |m| {
            check_lease(m, nonce)?;
            match m.state {
                State::Created | State::Stopped | State::Failed => Ok(m.state),
                s => Err(ApiError::new(
                    412,
                    format!("unable to start machine from current state: '{}'", s.as_str()),
                )),
            }
        })?;
        self.spawn_process(id)?;
        Ok(json!({"previous_state": previous.as_str(), "migrated": false, "new_host": ""}))
    }

    /// `POST .../{id}/stop` (fly-go `Stop`, body `StopMachineInput`: `signal`, `timeout`).
    /// Stopping a stopped machine is a no-op.
    pub async fn stop(self: &Arc<Self>, id: &str, body: &Value, nonce: Option<&str>) -> ApiResult<Value> {
        let op = self.op_lock(id)?;
        let _op = op.lock().await;
        let config = self.with_machine(id, |m| {
            check_lease(m, nonce)?;
            Ok(m.config.clone())
        })?;
        let req = self.stop_request(&config, Some(&body["signal"]), Some(&body["timeout"]));
        self.stop_process(id, req, State::Stopping).await;
        Ok(json!({"ok": true}))
    }

    /// `POST .../{id}/restart?force_stop=&timeout=&signal=` (fly-go `Restart`):
    /// stop, then start with the same config (same `instance_id`) and the
    /// app's current secrets. A stopped machine is just started.
    pub async fn restart(
        self: &Arc<Self>,
        id: &str,
        force_stop: bool,
        signal: Option<&Value>,
        timeout: Option<&Value>,
        nonce: Option<&str>,
    ) -> ApiResult<Value> {
        let op = self.op_lock(id)?;
        let _op = op.lock().await;
        let config = self.with_machine(id, |m| {
            check_lease(m, nonce)?;
            check_host(m)?;
            Ok(m.config.clone())
        })?;
        let mut req = self.stop_request(&config, signal, timeout);
        if force_stop {
            req.signal = Signal::SIGKILL;
        }
        self.with_machine(id, |m| {
            m.push_event("restart", "stopping", "user", None);
            Ok(())
        })?;
        self.stop_process(id, req, State::Stopping).await;
        self.spawn_process(id)?;
        Ok(json!({"ok": true}))
    }

    /// `DELETE .../{id}?force=true|kill=true` (fly-go `Destroy`).
    pub async fn destroy(self: &Arc<Self>, id: &str, force: bool, nonce: Option<&str>) -> ApiResult<Value> {
        let op = self.op_lock(id)?;
        let _op = op.lock().await;
        let config = self.with_machine(id, |m| {
            check_lease(m, nonce)?;
            if m.run.is_some() && !force {
                return Err(ApiError::new(
                    412,
                    "unable to destroy machine, not currently stopped (use force or kill)",
                ));
            }
            Ok(m.config.clone())
        })?;
        let mut req = self.stop_request(&config, None, None);
        req.signal = Signal::SIGKILL;
        self.stop_process(id, req, State::Destroying).await;
        self.with_machine(id, |m| {
            m.state = State::Destroyed;
            m.lease = None;
            m.push_event("destroy", "destroyed", "user", None);
            m.touch();
            if !m.ip_released {
                m.ip_released = true;
                ips::release(m.private_ip);
            }
            Ok(())
        })?;
        self.notify();
        Ok(json!({"ok": true}))
    }

    /// `POST .../{id}/signal` (fly-go `Kill` sends `{"signal": 9}`, no nonce).
    pub fn signal(&self, id: &str, body: &Value) -> ApiResult<Value> {
        let signal =
            parse_signal(&body["signal"]).ok_or_else(|| ApiError::new(400, "signal: a signal name or number"))?;
        let pid = self.with_live_machine(id, |m| {
            m.run
                .as_ref()
                .map(|r| r.pid)
                .ok_or_else(|| ApiError::new(412, format!("machine is not running: {}", m.state.as_str())))
        })?;
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
        Ok(json!({"ok": true}))
    }

    /// The machine's process dies and flyd gives up on it: `failed`.
    pub async fn fail(&self, id: &str) -> ApiResult<()> {
        let op = self.op_lock(id)?;
        let _op = op.lock().await;
        let req = StopRequest {
            signal: Signal::SIGKILL,
            timeout: Duration::ZERO,
        };
        self.stop_process(id, req, State::Failed).await;
        self.with_machine(id, |m| {
            m.state = State::Failed;
            m.touch();
            Ok(())
        })?;
        self.notify();
        Ok(())
    }

    /// The host's status as flyd sees it (`ok`, `unknown`, `unreachable`).
    pub fn set_host_status(&self, id: &str, status: &str) -> ApiResult<()> {
        self.with_live_machine(id, |m| {
            m.host_status = status.to_owned();
            Ok(())
        })
    }

    /// `POST .../{id}/cordon|uncordon`: no proxy here, so only the lease check.
    pub fn cordon(&self, id: &str, nonce: Option<&str>) -> ApiResult<Value> {
        self.with_live_machine(id, |m| check_lease(m, nonce))?;
        Ok(json!({"ok": true}))
    }

    /// `GET .../{id}/wait?state=..&timeout=..&version=..|instance_id=..`: waits
    /// until the machine is in one of `states` (default `started`), answers 408
    /// after `timeout` seconds (1..=60, default 60). With a version that is no
    /// longer the machine's, a stop-like state is reached at once (that
    /// version has stopped) and `started` never is.
    pub async fn wait(
        &self,
        id: &str,
        states: &[String],
        timeout: Option<&str>,
        version: Option<&str>,
    ) -> ApiResult<Value> {
        let timeout = match timeout.filter(|t| !t.is_empty()) {
            None => 60,
            Some(t) => t.parse::<u64>().ok().filter(|t| (1..=60).contains(t)).ok_or_else(|| {
                ApiError::new(400, format!("invalid timeout {t:?}: must be between 1 and 60 seconds"))
            })?,
        };
        let states: Vec<&str> = if states.is_empty() {
            vec!["started"]
        } else {
            states.iter().map(String::as_str).collect()
        };
        if let Some(bad) = states
            .iter()
            .find(|s| !["started", "stopped", "suspended", "destroyed"].contains(s))
        {
            return Err(ApiError::new(
                400,
                format!("invalid state {bad:?}: one of started, stopped, suspended, destroyed"),
            ));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let mut changed = self.changed.subscribe();
        loop {
            let done = {
                let w = self.world();
                let m = w.machines.get(id).ok_or_else(|| ApiError::machine_not_found(id))?;
                if version.is_none_or(|v| v == m.instance_id) {
                    states.contains(&m.state.as_str())
                } else {
                    states.iter().any(|s| *s != "started")
                }
            };
            if done {
                return Ok(json!({"ok": true}));
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() {
                    return Err(ApiError::new(503, "the fake Fly API is shutting down"));
                },
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(ApiError::new(
                        408,
                        format!("deadline_exceeded: machine {id} did not reach {} within {timeout}s", states.join("|")),
                    ));
                }
            }
        }
    }

    // ---- leases -----------------------------------------------------------

    /// `GET .../{id}/lease`: the live lease, or 404.
    pub fn lease_get(&self, id: &str) -> ApiResult<Value> {
        self.with_machine(id, |m| {
            m.live_lease()
                .map(|l| l.to_json(self.lease_shape))
                .ok_or_else(|| ApiError::new(404, "lease not found"))
        })
    }

    /// `POST .../{id}/lease` (`?ttl=` as fly-go sends it, or `{"ttl", "description"}`
    /// as the docs show). A new lease answers 201; the holder (matching
    /// `fly-machine-lease-nonce`) refreshes it (200, same nonce); anyone else
    /// gets 409 while it is live.
    pub fn lease_acquire(
        &self,
        id: &str,
        ttl: Option<u64>,
        description: &str,
        nonce: Option<&str>,
        owner: &str,
    ) -> ApiResult<(u16, Value)> {
        let ttl = ttl
            .filter(|t| *t > 0)
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LEASE_TTL);
        self.with_live_machine(id, |m| {
            if let Some(l) = m.live_lease() {
                if nonce != Some(l.nonce.as_str()) {
                    return Err(held_error(m.id.as_str(), l));
                }
                let mut l = l.clone();
                l.expires_at = expires_at(ttl);
                if !description.is_empty() {
                    l.description = description.to_string();
                }
                let out = l.to_json(self.lease_shape);
                m.lease = Some(l);
                return Ok((200, out));
            }
            // A lease's version is the machine version it was taken on (flyctl compares
            // it with `instance_id` to skip a second read).
            let lease = Lease {
                version: m.instance_id.clone(),
                ..new_lease(owner, description, ttl)
            };
            let out = lease.to_json(self.lease_shape);
            m.lease = Some(lease);
            Ok((201, out))
        })
    }

    /// `DELETE .../{id}/lease` with `fly-machine-lease-nonce`.
    pub fn lease_release(&self, id: &str, nonce: Option<&str>) -> ApiResult<Value> {
        self.with_live_machine(id, |m| {
            let l = m.live_lease().ok_or_else(|| ApiError::new(404, "lease not found"))?;
            match nonce {
                None => Err(ApiError::new(400, "fly-machine-lease-nonce header is required")),
                Some(n) if n != l.nonce => Err(ApiError::new(400, "lease nonce does not match")),
                Some(_) => {
                    m.lease = None;
                    Ok(json!({"ok": true}))
                }
            }
        })
    }

    // ---- metadata ---------------------------------------------------------

    pub fn metadata_get(&self, id: &str) -> ApiResult<Value> {
        self.with_machine(id, |m| {
            Ok(json!(m.config["metadata"].as_object().cloned().unwrap_or_default()))
        })
    }

    /// `POST .../{id}/metadata/{key}` with `{"value": ...}`: changes the config
    /// in place, no restart and no new version.
    pub fn metadata_set(&self, id: &str, key: &str, body: &Value) -> ApiResult<()> {
        let value = body["value"]
            .as_str()
            .ok_or_else(|| ApiError::new(400, "value: a string is required"))?;
        self.with_live_machine(id, |m| {
            object_mut(&mut m.config["metadata"]).insert(key.to_string(), json!(value));
            m.touch();
            Ok(())
        })
    }

    pub fn metadata_delete(&self, id: &str, key: &str) -> ApiResult<()> {
        self.with_live_machine(id, |m| {
            if let Some(md) = m.config["metadata"].as_object_mut() {
                md.remove(key);
            }
            m.touch();
            Ok(())
        })
    }

    // ---- secrets ----------------------------------------------------------

    pub fn secrets_list(&self) -> Value {
        let w = self.world();
        let secrets: Vec<Value> = w.secrets.iter().map(|(k, s)| s.to_json(k)).collect();
        json!({"secrets": secrets})
    }

    pub fn secret_get(&self, name: &str) -> ApiResult<Value> {
        let w = self.world();
        w.secrets
            .get(name)
            .map(|s| s.to_json(name))
            .ok_or_else(|| ApiError::new(404, format!("secret not found: {name}")))
    }

    /// Sets (`Some`) or deletes (`None`) secrets; answers the new version.
    /// Machines see the change at their next start, restart or update.
    pub fn secrets_update(&self, values: &[(String, Option<String>)]) -> ApiResult<u64> {
        if let Some((bad, _)) = values.iter().find(|(k, _)| !valid_secret_name(k)) {
            return Err(ApiError::new(400, format!("invalid secret name {bad:?}")));
        }
        let mut w = self.world();
        let at = now();
        for (name, value) in values {
            match value {
                Some(v) => {
                    let created_at = w
                        .secrets
                        .get(name)
                        .map(|s| s.created_at.clone())
                        .unwrap_or_else(|| at.clone());
                    let secret = Secret {
                        value: v.clone(),
                        digest: ids::digest(v),
                        created_at,
                        updated_at: at.clone(),
                    };
                    w.secrets.insert(name.clone(), secret);
                }
                None => {
                    w.secrets.remove(name);
                }
            }
        }
        w.secrets_version += 1;
        let (version, snapshot) = (w.secrets_version, w.secrets.clone());
        w.secrets_history.insert(version, snapshot);
        Ok(version)
    }

    pub fn secret_delete(&self, name: &str) -> ApiResult<u64> {
        if !self.world().secrets.contains_key(name) {
            return Err(ApiError::new(404, format!("secret not found: {name}")));
        }
        self.secrets_update(&[(name.to_string(), None)])
    }

    // ---- shutdown ---------------------------------------------------------

    /// No machine starts any more; every running one is stopped (its stop
    /// signal, then SIGKILL after its timeout), concurrently.
    pub async fn stop_all(&self) {
        let runs: Vec<(Run, StopRequest)> = {
            let mut w = self.world();
            w.closed = true;
            let mut runs = Vec::new();
            for m in w.machines.values_mut() {
                if let Some(run) = m.run.take() {
                    let req = self.stop_request(&m.config, None, None);
                    m.state = State::Stopped;
                    runs.push((run, req));
                }
            }
            runs
        };
        futures::future::join_all(runs.into_iter().map(|(run, req)| async move {
            let _ = run.stop.send(req);
            let _ = run.task.await;
        }))
        .await;
        self.notify();
    }

    /// Kills whatever is left and gives back the machines' addresses.
    pub fn kill_all(&self) {
        let mut w = self.world();
        w.closed = true;
        self.registry.kill_all();
        for m in w.machines.values_mut() {
            if !m.ip_released {
                m.ip_released = true;
                ips::release(m.private_ip);
            }
        }
    }
}

/// Runs until the process exits or is told to stop; returns its exit code.
async fn supervise(
    shared: Arc<Shared>,
    id: String,
    generation: u64,
    mut proc: PodProcess,
    stop: oneshot::Receiver<StopRequest>,
) -> i32 {
    tokio::select! {
        req = stop => {
            // A dropped sender (the fake went away) means: kill it now.
            let req = req.unwrap_or(StopRequest { signal: Signal::SIGKILL, timeout: Duration::ZERO });
            proc.terminate_with(req.signal, req.timeout).await
        }
        code = proc.wait() => {
            drop(proc);
            {
                let mut w = shared.world();
                let current = w.machines.get_mut(&id).filter(|m| m.run.as_ref().is_some_and(|r| r.generation == generation));
                if let Some(m) = current {
                    // The process exited by itself: the machine stops.
                    m.run = None;
                    m.state = State::Stopped;
                    m.push_exit_event(code, false);
                    m.touch();
                }
            }
            shared.notify();
            code
        }
    }
}

fn validate_config(config: &Value) -> ApiResult<()> {
    if !config.is_object() {
        return Err(ApiError::new(400, "config: an object is required"));
    }
    if config["image"].as_str().is_none_or(str::is_empty) {
        return Err(ApiError::new(400, "config.image is required"));
    }
    if argv(config).is_empty() {
        return Err(ApiError::new(
            400,
            "config.init.exec (or init.cmd) is required: the fake runs commands, it has no images",
        ));
    }
    Ok(())
}

fn expires_at(ttl: Duration) -> i64 {
    jiff::Timestamp::now().as_second() + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2)
}

pub fn new_lease(owner: &str, description: &str, ttl: Duration) -> Lease {
    Lease {
        nonce: ids::nonce(),
        owner: owner.to_string(),
        description: description.to_string(),
        expires_at: expires_at(ttl),
        version: ids::ulid(),
    }
}

fn held_error(id: &str, l: &Lease) -> ApiError {
    let until = jiff::Timestamp::from_second(l.expires_at)
        .map(|t| t.to_string())
        .unwrap_or_default();
    ApiError::new(409, format!("machine {id} is leased by {} until {until}", l.owner))
}

/// A machine on a host flyd cannot reach cannot be changed.
fn check_host(m: &Machine) -> ApiResult<()> {
    if m.host_status == "ok" {
        return Ok(());
    }
    Err(ApiError::new(
        503,
        format!("machine {} is on a host that is {}", m.id, m.host_status),
    ))
}

/// A mutating request on a leased machine needs the lease's nonce.
fn check_lease(m: &Machine, nonce: Option<&str>) -> ApiResult<()> {
    match m.live_lease() {
        Some(l) if nonce != Some(l.nonce.as_str()) => Err(held_error(&m.id, l)),
        _ => Ok(()),
    }
}
