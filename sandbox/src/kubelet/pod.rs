//! One pod's life on a process node: run the first container's command as a
//! process, probe readiness, restart per `restartPolicy`, report status, and
//! stop with SIGTERM then SIGKILL when the pod goes away.
//! See <https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/>.
//!
//! The same code runs pods for the sandbox (status written into its store) and
//! for the node agent of the real control plane (status written through the
//! API server's `pods/status`): the difference is the [`PodHost`].

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::apiserver::store::now_rfc3339;

use super::env::{EnvSources, NodeInfo, container_argv, container_env, referenced};
use super::process::{self, PodProcess, ProcessRegistry};

/// What a pod worker needs from the node it runs on.
pub trait PodHost: Send + Sync + 'static {
    /// The node's name and address (downward API, `status.hostIP`).
    fn node(&self) -> &NodeInfo;
    /// The ConfigMaps and Secrets of `namespace` named by `refs` (those that exist).
    fn env_sources(
        &self,
        namespace: &str,
        refs: Vec<(&'static str, String)>,
    ) -> impl Future<Output = EnvSources> + Send;
    /// Writes `status` as the status of the pod `spec` runs (and of no newer
    /// pod of the same name).
    fn report(&self, spec: &PodSpec, status: Value) -> impl Future<Output = ()> + Send;
}

pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub pod: Value,
    pub ip: Ipv4Addr,
    pub log: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
enum ContainerState {
    Waiting(String),
    Running { started_at: String },
    Terminated { code: i32, at: String },
}

struct Observed {
    phase: &'static str,
    state: ContainerState,
    last_state: Option<ContainerState>,
    ready: bool,
    restarts: i64,
    ready_since: String,
    start_time: String,
    pid: Option<i32>,
}

/// Port of an `httpGet` probe: a number, or the name of a container port.
fn probe_port(container: &Value, port: &Value) -> Option<u16> {
    match port {
        Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Value::String(s) => s.parse().ok().or_else(|| {
            container["ports"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == s.as_str())?["containerPort"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
        }),
        _ => None,
    }
}

struct Probe {
    port: u16,
    path: String,
    period: Duration,
    initial_delay: Duration,
}

fn readiness_probe(container: &Value) -> Option<Probe> {
    let p = &container["readinessProbe"];
    let get = &p["httpGet"];
    if !get.is_object() {
        return None;
    }
    Some(Probe {
        port: probe_port(container, &get["port"])?,
        path: get["path"].as_str().unwrap_or("/").to_string(),
        // Real default is 10s; tests want pods Ready fast, so default to 1s.
        period: Duration::from_secs(p["periodSeconds"].as_u64().unwrap_or(1).max(1)),
        initial_delay: Duration::from_secs(p["initialDelaySeconds"].as_u64().unwrap_or(0)),
    })
}

/// A bare HTTP/1.1 GET: 200..400 is success, like the kubelet's prober.
async fn http_ok(ip: Ipv4Addr, port: u16, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.32\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 32];
        let n = s.read(&mut buf).await.ok()?;
        let head = std::str::from_utf8(&buf[..n]).ok()?;
        let code: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

fn state_json(s: &ContainerState) -> Value {
    match s {
        ContainerState::Waiting(reason) => json!({"waiting": {"reason": reason}}),
        ContainerState::Running { started_at } => json!({"running": {"startedAt": started_at}}),
        ContainerState::Terminated { code, at } => json!({"terminated": {
            "exitCode": code, "reason": if *code == 0 { "Completed" } else { "Error" }, "finishedAt": at}}),
    }
}

fn status_json(spec: &PodSpec, node: &NodeInfo, o: &Observed) -> Value {
    let container = &spec.pod["spec"]["containers"][0];
    let cond = |t: &str, ok: bool, since: &str| json!({"type": t, "status": if ok { "True" } else { "False" }, "lastTransitionTime": since});
    let mut cs = json!({
        "name": container["name"],
        "image": container["image"].as_str().unwrap_or("sandbox/local"),
        "imageID": "",
        "ready": o.ready,
        "started": matches!(o.state, ContainerState::Running { .. }),
        "restartCount": o.restarts,
        "state": state_json(&o.state),
    });
    if let Some(pid) = o.pid {
        cs["containerID"] = json!(format!("sandbox://{pid}"));
    }
    if let Some(last) = &o.last_state {
        cs["lastState"] = state_json(last);
    }
    json!({
        "phase": o.phase,
        "podIP": spec.ip.to_string(),
        "podIPs": [{"ip": spec.ip.to_string()}],
        "hostIP": node.host_ip,
        "hostIPs": [{"ip": node.host_ip}],
        "startTime": o.start_time,
        "qosClass": "BestEffort",
        "conditions": [
            cond("PodScheduled", true, &o.start_time),
            cond("Initialized", true, &o.start_time),
            cond("ContainersReady", o.ready, &o.ready_since),
            cond("Ready", o.ready, &o.ready_since),
        ],
        "containerStatuses": [cs],
    })
}

async fn report<H: PodHost>(host: &H, spec: &PodSpec, o: &Observed) {
    host.report(spec, status_json(spec, host.node(), o)).await;
}

/// Runs the pod until `stop` turns true; then terminates its process.
pub async fn run<H: PodHost>(host: Arc<H>, spec: PodSpec, registry: ProcessRegistry, mut stop: watch::Receiver<bool>) {
    let container = spec.pod["spec"]["containers"][0].clone();
    let sources = host.env_sources(&spec.namespace, referenced(&container)).await;
    let env = container_env(&sources, &spec.pod, &container, &spec.ip.to_string(), host.node());
    let argv = container_argv(&container, &env);
    let grace = Duration::from_secs(spec.pod["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap_or(30));
    let restart_policy = spec.pod["spec"]["restartPolicy"]
        .as_str()
        .unwrap_or("Always")
        .to_string();
    let probe = readiness_probe(&container);
    let now = now_rfc3339();
    let mut o = Observed {
        phase: "Pending",
        state: ContainerState::Waiting("ContainerCreating".into()),
        last_state: None,
        ready: false,
        restarts: 0,
        ready_since: now.clone(),
        start_time: now,
        pid: None,
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut proc: PodProcess = match process::spawn(&argv, &env, &spec.log, &registry) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(pod = %spec.name, error = %e, "starting container");
                o.state = ContainerState::Waiting("RunContainerError".into());
                if restart_policy == "Never" {
                    o.phase = "Failed";
                }
                report(&*host, &spec, &o).await;
                if restart_policy == "Never" || wait_or_stop(&mut stop, backoff).await {
                    let _ = stop.wait_for(|s| *s).await;
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        o.phase = "Running";
        o.pid = Some(proc.pid());
        o.state = ContainerState::Running {
            started_at: now_rfc3339(),
        };
        let became_ready_now = probe.is_none();
        if became_ready_now {
            o.ready = true;
            o.ready_since = now_rfc3339();
        }
        report(&*host, &spec, &o).await;
        let mut probe_tick =
            tokio::time::interval(probe.as_ref().map(|p| p.period).unwrap_or(Duration::from_secs(3600)));
        let probe_start = tokio::time::Instant::now() + probe.as_ref().map(|p| p.initial_delay).unwrap_or_default();
        let code = loop {
            tokio::select! {
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    proc.terminate(grace).await;
                    return;
                }
                code = proc.wait() => break code,
                _ = probe_tick.tick(), if probe.is_some() => {
                    if tokio::time::Instant::now() < probe_start { continue; }
                    let Some(p) = &probe else { continue };
                    let ok = http_ok(spec.ip, p.port, &p.path).await;
                    if ok != o.ready {
                        o.ready = ok;
                        o.ready_since = now_rfc3339();
                        report(&*host, &spec, &o).await;
                    }
                }
            }
        };
        drop(proc);
        let terminated = ContainerState::Terminated {
            code,
            at: now_rfc3339(),
        };
        o.ready = false;
        o.ready_since = now_rfc3339();
        o.pid = None;
        let restart = restart_policy == "Always" || (restart_policy == "OnFailure" && code != 0);
        if !restart {
            o.phase = if code == 0 { "Succeeded" } else { "Failed" };
            o.state = terminated;
            report(&*host, &spec, &o).await;
            let _ = stop.wait_for(|s| *s).await;
            return;
        }
        o.last_state = Some(terminated);
        o.restarts += 1;
        o.state = ContainerState::Waiting("CrashLoopBackOff".into());
        report(&*host, &spec, &o).await;
        if wait_or_stop(&mut stop, backoff).await {
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Sleeps `d`; true if told to stop meanwhile.
async fn wait_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = async { let _ = stop.wait_for(|s| *s).await; } => true,
    }
}
