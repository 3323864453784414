//! The fake's model of an app: its machines (config, state, lease, process) and
//! its secrets, and how a machine config turns into a process (argv, env).

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::ids;

/// Machine states, as in Fly's machine-states table (a subset: no suspend).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// "Machine encountered an error and could not start successfully" (persistent).
    Failed,
    Created,
    Starting,
    Started,
    Stopping,
    Stopped,
    Replacing,
    Destroying,
    Destroyed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Failed => "failed",
            State::Created => "created",
            State::Starting => "starting",
            State::Started => "started",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Replacing => "replacing",
            State::Destroying => "destroying",
            State::Destroyed => "destroyed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Lease {
    pub nonce: String,
    pub owner: String,
    pub description: String,
    /// Unix seconds.
    pub expires_at: i64,
    pub version: String,
}

impl Lease {
    pub fn live(&self) -> bool {
        self.expires_at > jiff::Timestamp::now().as_second()
    }

    /// The body of the lease endpoints: the document's `Lease` (the lease itself), or
    /// fly-go's `MachineLease`, the same wrapped as `{status, data}` (the docs' examples).
    pub fn to_json(&self, shape: LeaseShape) -> Value {
        let lease = json!({
            "nonce": self.nonce,
            "expires_at": self.expires_at,
            "owner": self.owner,
            "description": self.description,
            "version": self.version,
        });
        match shape {
            LeaseShape::Document => lease,
            LeaseShape::FlyGo => json!({"status": "success", "data": lease}),
        }
    }
}

/// How the lease endpoints answer: the OpenAPI document's `Lease` has `nonce` at the
/// top level; fly-go's `MachineLease` (and the docs' examples) wrap it in `{status, data}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeaseShape {
    Document,
    #[default]
    FlyGo,
}

#[derive(Debug, Clone)]
pub struct Secret {
    pub value: String,
    pub digest: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Secret {
    /// Name and digest, never the value.
    pub fn to_json(&self, name: &str) -> Value {
        json!({"name": name, "digest": self.digest, "created_at": self.created_at, "updated_at": self.updated_at})
    }
}

/// How to stop a machine's process.
#[derive(Debug, Clone, Copy)]
pub struct StopRequest {
    pub signal: Signal,
    pub timeout: Duration,
}

/// A running process: its supervisor task answers `stop` and returns the exit code.
pub struct Run {
    pub generation: u64,
    pub pid: i32,
    pub stop: oneshot::Sender<StopRequest>,
    pub task: JoinHandle<i32>,
}

pub struct Machine {
    pub id: String,
    pub name: String,
    pub region: String,
    pub config: Value,
    pub state: State,
    pub instance_id: String,
    pub private_ip: Ipv4Addr,
    pub ip_released: bool,
    pub created_at: String,
    pub updated_at: String,
    /// Newest first, like the API.
    pub events: VecDeque<Value>,
    pub lease: Option<Lease>,
    pub seq: u64,
    /// Serializes lifecycle operations (start, stop, update, ...) on this machine.
    pub op: Arc<tokio::sync::Mutex<()>>,
    pub run: Option<Run>,
    /// `ok`, `unknown` or `unreachable`: the host's, as flyd last heard from it. Not
    /// ok, the API cannot read the machine's config: it answers `config: null` and an
    /// `incomplete_config` rebuilt from other sources.
    pub host_status: String,
    /// Answer the config as the real API marshals it: `init`'s unset lists as `null`
    /// (Go's nil slices), which the OpenAPI document does not allow.
    pub answer_nulls: bool,
    /// The oldest app secrets version the machine's current version may boot with
    /// (`min_secrets_version` of its last update).
    pub min_secrets_version: u64,
    /// The app secrets version the running process was started with.
    pub secrets_version: Option<u64>,
}

const MAX_EVENTS: usize = 30;

impl Machine {
    pub fn live_lease(&self) -> Option<&Lease> {
        self.lease.as_ref().filter(|l| l.live())
    }

    pub fn process_group(&self) -> String {
        process_group(&self.config)
    }

    pub fn push_event(&mut self, kind: &str, status: &str, source: &str, request: Option<Value>) {
        let mut e = json!({
            "id": ids::ulid(),
            "type": kind,
            "status": status,
            "source": source,
            "timestamp": jiff::Timestamp::now().as_millisecond(),
        });
        if let Some(r) = request {
            e["request"] = r;
        }
        self.events.push_front(e);
        self.events.truncate(MAX_EVENTS);
    }

    pub fn push_exit_event(&mut self, code: i32, requested_stop: bool) {
        let signal = if code > 128 { code - 128 } else { 0 };
        self.push_event(
            "exit",
            "stopped",
            "flyd",
            Some(json!({"exit_event": {
                "exit_code": code,
                "signal": signal,
                "requested_stop": requested_stop,
                "exited_at": jiff::Timestamp::now().to_string(),
            }})),
        );
    }

    pub fn touch(&mut self) {
        self.updated_at = now();
    }

    /// The machine as the API shows it (fly-go `Machine`).
    pub fn to_json(&self) -> Value {
        let mut config = self.config.clone();
        if self.answer_nulls {
            // Go marshals a nil slice of `MachineInit` as null.
            let init = object_mut(&mut config["init"]);
            for key in ["exec", "entrypoint", "cmd"] {
                init.entry(key).or_insert(Value::Null);
            }
        }
        let mut out = json!({
            "id": self.id,
            "name": self.name,
            "state": self.state.as_str(),
            "region": self.region,
            "image_ref": image_ref(self.config["image"].as_str().unwrap_or_default()),
            "instance_id": self.instance_id,
            "private_ip": self.private_ip.to_string(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "config": config,
            "events": self.events,
            "checks": self.check_statuses(),
            "host_status": self.host_status,
        });
        if self.host_status != "ok" {
            // What the API can rebuild without the host: the metadata and the image,
            // not env, init or services.
            out["incomplete_config"] = json!({
                "image": self.config["image"],
                "metadata": self.config["metadata"],
            });
            out["config"] = Value::Null;
        }
        out
    }

    /// The status of each of `config.checks` (fly-go `MachineCheckStatus`): passing
    /// once the machine has been started for the check's `grace_period` (default
    /// 1 s), critical before and while it is not started.
    fn check_statuses(&self) -> Value {
        let Some(checks) = self.config["checks"].as_object() else {
            return json!([]);
        };
        let started_ms = self
            .events
            .iter()
            .find(|e| e["type"] == "start")
            .and_then(|e| e["timestamp"].as_i64());
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let statuses: Vec<Value> = checks
            .iter()
            .map(|(name, c)| {
                let grace = c["grace_period"].as_str().and_then(duration_ms).unwrap_or(1000);
                let passing = self.state == State::Started && started_ms.is_some_and(|t| now_ms - t >= grace);
                json!({
                    "name": name,
                    "status": if passing { "passing" } else { "critical" },
                    "output": if passing { "ok" } else { "not yet passing" },
                    "updated_at": now(),
                })
            })
            .collect();
        Value::Array(statuses)
    }
}

/// Milliseconds of a Go duration of one unit (`500ms`, `2s`, `1m`).
fn duration_ms(text: &str) -> Option<i64> {
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = digits.parse().ok()?;
    match unit {
        "ms" => Some(n),
        "s" => Some(n * 1000),
        "m" => Some(n * 60_000),
        _ => None,
    }
}

#[derive(Default)]
pub struct World {
    pub machines: BTreeMap<String, Machine>,
    pub secrets: BTreeMap<String, Secret>,
    pub secrets_version: u64,
    /// The app's secrets as of each version (0: none), so a machine can boot with an
    /// older version than the newest, as a host the newest has not reached yet does.
    pub secrets_history: BTreeMap<u64, BTreeMap<String, Secret>>,
    pub next_seq: u64,
    pub next_generation: u64,
    /// Set by shutdown: no machine starts any more.
    pub closed: bool,
}

pub fn now() -> String {
    crate::apiserver::store::now_rfc3339()
}

pub fn process_group(config: &Value) -> String {
    let md = &config["metadata"];
    md["fly_process_group"]
        .as_str()
        .filter(|g| !g.is_empty())
        .or_else(|| md["process_group"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn strings(v: &Value) -> Option<Vec<String>> {
    let a = v.as_array().filter(|a| !a.is_empty())?;
    Some(a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
}

/// The command a machine runs. There are no images, so it comes from the config:
/// `init.exec` (or `processes[0].exec`), else `entrypoint` followed by `cmd`.
pub fn argv(config: &Value) -> Vec<String> {
    let init = &config["init"];
    let p = &config["processes"][0];
    if let Some(exec) = strings(&p["exec"]).or_else(|| strings(&init["exec"])) {
        return exec;
    }
    let mut argv = strings(&p["entrypoint"])
        .or_else(|| strings(&init["entrypoint"]))
        .unwrap_or_default();
    argv.extend(strings(&p["cmd"]).or_else(|| strings(&init["cmd"])).unwrap_or_default());
    argv
}

fn string_map(v: &Value) -> impl Iterator<Item = (String, String)> + '_ {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
}

/// The process environment: `config.env` (and `processes[0].env`), then the
/// app's secrets, which override variables of the same name, then the
/// variables Fly sets on every machine.
pub fn process_env(app: &str, m: &Machine, secrets: &BTreeMap<String, Secret>) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = string_map(&m.config["env"]).collect();
    env.extend(string_map(&m.config["processes"][0]["env"]));
    env.extend(secrets.iter().map(|(k, s)| (k.clone(), s.value.clone())));
    let ip = m.private_ip.to_string();
    let mut fly = vec![
        ("FLY_APP_NAME", app.to_string()),
        ("FLY_MACHINE_ID", m.id.clone()),
        ("FLY_ALLOC_ID", m.id.clone()),
        ("FLY_REGION", m.region.clone()),
        ("FLY_PRIVATE_IP", ip),
        ("FLY_MACHINE_VERSION", m.instance_id.clone()),
        (
            "FLY_IMAGE_REF",
            m.config["image"].as_str().unwrap_or_default().to_string(),
        ),
    ];
    let group = m.process_group();
    if !group.is_empty() {
        fly.push(("FLY_PROCESS_GROUP", group));
    }
    env.extend(fly.into_iter().map(|(k, v)| (k.to_string(), v)));
    env.into_iter().collect()
}

/// Ports the machine will listen on (services, checks, `PORT`), so its address
/// is one where they are free.
pub fn ports(config: &Value) -> Vec<u16> {
    let port = |v: &Value| v.as_u64().and_then(|p| u16::try_from(p).ok());
    let mut out: Vec<u16> = config["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| port(&s["internal_port"]))
        .collect();
    out.extend(
        config["checks"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, c)| port(&c["port"])),
    );
    if let Some(p) = config["env"]["PORT"].as_str().and_then(|p| p.parse().ok()) {
        out.push(p);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// `registry/repository:tag@digest` split like fly-go's `MachineImageRef`.
pub fn image_ref(image: &str) -> Value {
    let (rest, digest) = image.split_once('@').unwrap_or((image, ""));
    let (registry, path) = match rest.split_once('/') {
        Some((first, path)) if first.contains('.') || first.contains(':') || first == "localhost" => (first, path),
        _ => ("registry-1.docker.io", rest),
    };
    let (repository, tag) = match path.rsplit_once(':') {
        Some((r, t)) => (r, t),
        None => (path, "latest"),
    };
    json!({"registry": registry, "repository": repository, "tag": tag, "digest": digest, "labels": {}})
}

/// A duration as fly-go's `fly.Duration` marshals it: a Go duration string
/// (`5s`, `1m30s`, `500ms`) or a number of nanoseconds. A string without a
/// unit is taken as seconds (the docs describe stop's `timeout` as seconds).
pub fn parse_duration(v: &Value) -> Option<Duration> {
    match v {
        Value::Number(n) => n.as_u64().map(Duration::from_nanos),
        Value::String(s) => parse_go_duration(s),
        _ => None,
    }
}

pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<f64>() {
        return (secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

/// `SIGTERM`, `TERM`, `15` or 15.
pub fn parse_signal(v: &Value) -> Option<Signal> {
    match v {
        Value::Number(n) => n.as_i64().and_then(|n| Signal::try_from(i32::try_from(n).ok()?).ok()),
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => {
            let s = s.trim().to_ascii_uppercase();
            if let Ok(n) = s.parse::<i32>() {
                return Signal::try_from(n).ok();
            }
            let name = if s.starts_with("SIG") { s } else { format!("SIG{s}") };
            Signal::from_str(&name).ok()
        }
        _ => None,
    }
}

/// Secret names are environment variable names.
pub fn valid_secret_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Adds `key: value` to a JSON object, making it one if needed.
pub fn object_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut().unwrap_or_else(|| unreachable!("just made an object"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_duration(&json!(2_000_000_000u64)), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration(&json!("3s")), Some(Duration::from_secs(3)));
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal(&json!("SIGINT")), Some(Signal::SIGINT));
        assert_eq!(parse_signal(&json!("term")), Some(Signal::SIGTERM));
        assert_eq!(parse_signal(&json!(9)), Some(Signal::SIGKILL));
        assert_eq!(parse_signal(&json!("")), None);
    }

    #[test]
    fn commands() {
        assert_eq!(argv(&json!({"init": {"exec": ["a", "b"]}})), vec!["a", "b"]);
        assert_eq!(
            argv(&json!({"init": {"entrypoint": ["sh"], "cmd": ["-c", "x"]}})),
            vec!["sh", "-c", "x"]
        );
        assert!(argv(&json!({"image": "x"})).is_empty());
    }

    #[test]
    fn image_refs() {
        let r = image_ref("registry.fly.io/app:deployment-1");
        assert_eq!(r["registry"], "registry.fly.io");
        assert_eq!(r["repository"], "app");
        assert_eq!(r["tag"], "deployment-1");
        assert_eq!(image_ref("library/ubuntu")["registry"], "registry-1.docker.io");
    }
}
