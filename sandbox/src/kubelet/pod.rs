//! One pod's life on a process node: run the first container's command as a
//! process (or, on a node that runs images, its image in an OCI runtime: the
//! host's [`PodHost::launch`]), probe readiness and liveness, restart per
//! `restartPolicy` and on liveness failure, report status, and stop with
//! SIGTERM then SIGKILL when the pod goes away.
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
use super::oci_runtime::Container;
use super::probe::{self, Kind, ProbeState};
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
    /// How the container is started: by default `argv` as a local process; a
    /// node that runs images may start it in an OCI runtime instead. An error
    /// is the reason the container cannot start (the pod waits and retries).
    fn launch(
        &self,
        spec: &PodSpec,
        argv: Vec<String>,
        env: Vec<(String, String)>,
    ) -> impl Future<Output = Result<Launch, String>> + Send {
        let _ = spec;
        async move {
            Ok(Launch {
                argv,
                env,
                container: None,
            })
        }
    }
    /// Called once when the pod's worker ends (its files can go).
    fn forget(&self, spec: &PodSpec) -> impl Future<Output = ()> + Send {
        let _ = spec;
        async {}
    }
}

/// The process that runs a container: `argv` with `env`; with `container`, that
/// process is the OCI runtime, and the container is deleted after each exit.
pub struct Launch {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub container: Option<Container>,
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
    /// The reason, and what went wrong when the container could not start.
    Waiting(String, Option<String>),
    Running {
        started_at: String,
    },
    Terminated {
        code: i32,
        at: String,
    },
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
    container_id: Option<String>,
}

fn state_json(s: &ContainerState) -> Value {
    match s {
        ContainerState::Waiting(reason, None) => json!({"waiting": {"reason": reason}}),
        ContainerState::Waiting(reason, Some(message)) => json!({"waiting": {"reason": reason, "message": message}}),
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
    if let Some(id) = &o.container_id {
        cs["containerID"] = json!(id);
    } else if let Some(pid) = o.pid {
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
        // The API server sets the QoS class from the resources and refuses a
        // change to it: keep the one the pod has.
        "qosClass": spec.pod["status"]["qosClass"].as_str().unwrap_or("BestEffort"),
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
    run_container(&*host, &spec, &registry, &mut stop).await;
    host.forget(&spec).await;
}

/// How a container's run ended.
enum Exit {
    Exited(i32),
    /// Its liveness probe failed: the kubelet kills it (then restarts it per policy).
    Unhealthy,
    Stopped,
}

async fn run_container<H: PodHost>(
    host: &H,
    spec: &PodSpec,
    registry: &ProcessRegistry,
    stop: &mut watch::Receiver<bool>,
) {
    let container = spec.pod["spec"]["containers"][0].clone();
    let grace = Duration::from_secs(spec.pod["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap_or(30));
    let restart_policy = spec.pod["spec"]["restartPolicy"]
        .as_str()
        .unwrap_or("Always")
        .to_string();
    let readiness = probe::parse(&container, Kind::Readiness);
    let liveness = probe::parse(&container, Kind::Liveness);
    let now = now_rfc3339();
    let mut o = Observed {
        phase: "Pending",
        state: ContainerState::Waiting("ContainerCreating".into(), None),
        last_state: None,
        ready: false,
        restarts: 0,
        ready_since: now.clone(),
        start_time: now,
        pid: None,
        container_id: None,
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        // Resolved at each start, as the kubelet does: a Secret made later is seen by the restart.
        let prepare = async {
            let sources = host.env_sources(&spec.namespace, referenced(&container)).await;
            let env = container_env(&sources, &spec.pod, &container, &spec.ip.to_string(), host.node());
            let argv = container_argv(&container, &env);
            host.launch(spec, argv, env).await
        };
        // The API calls of a start must not keep a stopping pod (or node) waiting.
        let launched = tokio::select! {
            l = prepare => l,
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        };
        let started = match launched {
            Ok(launch) => process::spawn(&launch.argv, &launch.env, &spec.log, registry)
                .map(|p| (p, launch.container))
                .map_err(|e| ("RunContainerError", e.to_string())),
            Err(e) => Err(("CreateContainerConfigError", e)),
        };
        let (mut proc, runtime): (PodProcess, Option<Container>) = match started {
            Ok(p) => p,
            Err((reason, e)) => {
                tracing::warn!(pod = %spec.name, namespace = %spec.namespace, error = %e, "starting container");
                o.state = ContainerState::Waiting(reason.into(), Some(e));
                if restart_policy == "Never" {
                    o.phase = "Failed";
                }
                report(host, spec, &o).await;
                if restart_policy == "Never" || wait_or_stop(stop, backoff).await {
                    let _ = stop.wait_for(|s| *s).await;
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        o.phase = "Running";
        o.pid = Some(proc.pid());
        o.container_id = runtime.as_ref().map(|c| format!("runc://{}", c.id));
        o.state = ContainerState::Running {
            started_at: now_rfc3339(),
        };
        let mut ready = readiness.as_ref().map(|p| ProbeState::new(p, Kind::Readiness));
        let mut alive = liveness.as_ref().map(|p| ProbeState::new(p, Kind::Liveness));
        if readiness.is_none() {
            o.ready = true;
            o.ready_since = now_rfc3339();
        }
        report(host, spec, &o).await;
        let hour = Duration::from_secs(3600);
        let mut ready_tick = tokio::time::interval(readiness.as_ref().map(|p| p.period).unwrap_or(hour));
        let mut live_tick = tokio::time::interval(liveness.as_ref().map(|p| p.period).unwrap_or(hour));
        let since = tokio::time::Instant::now();
        let exit = loop {
            tokio::select! {
                _ = async { let _ = stop.wait_for(|s| *s).await; } => break Exit::Stopped,
                code = proc.wait() => break Exit::Exited(code),
                _ = ready_tick.tick(), if readiness.is_some() => {
                    let (Some(p), Some(state)) = (&readiness, &mut ready) else { continue };
                    if since.elapsed() < p.initial_delay { continue; }
                    if state.observe(probe::http_ok(spec.ip, p.port, &p.path, p.timeout).await) {
                        o.ready = state.ok;
                        o.ready_since = now_rfc3339();
                        report(host, spec, &o).await;
                    }
                }
                _ = live_tick.tick(), if liveness.is_some() => {
                    let (Some(p), Some(state)) = (&liveness, &mut alive) else { continue };
                    if since.elapsed() < p.initial_delay { continue; }
                    if state.observe(probe::http_ok(spec.ip, p.port, &p.path, p.timeout).await) && !state.ok {
                        tracing::warn!(pod = %spec.name, namespace = %spec.namespace, port = p.port, path = %p.path,
                            "liveness probe failed {} times in a row; restarting the container", p.failure_threshold);
                        break Exit::Unhealthy;
                    }
                }
            }
        };
        let code = match exit {
            Exit::Stopped => {
                proc.terminate(grace).await;
                if let Some(c) = &runtime {
                    c.delete().await;
                }
                return;
            }
            Exit::Unhealthy => proc.terminate(grace).await,
            Exit::Exited(code) => {
                drop(proc);
                code
            }
        };
        if let Some(c) = &runtime {
            c.delete().await;
        }
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
            report(host, spec, &o).await;
            let _ = stop.wait_for(|s| *s).await;
            return;
        }
        o.last_state = Some(terminated);
        o.restarts += 1;
        o.state = ContainerState::Waiting("CrashLoopBackOff".into(), None);
        report(host, spec, &o).await;
        if wait_or_stop(stop, backoff).await {
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
