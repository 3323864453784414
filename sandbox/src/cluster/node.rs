//! The node agent of the real control plane: one Node whose pods run as local
//! processes, through the same [`PodWorkers`] as the sandbox's kubelet — or,
//! for an image the node was given, that image under runc (`super::runtime`).
//!
//! It registers its Node (Ready, addresses, capacity) and keeps it alive (a
//! heartbeat Lease in `kube-node-lease`, the Ready condition's heartbeat), binds
//! every pending pod to itself through `pods/binding` (there is no scheduler),
//! runs the pods bound to it and writes their status through `pods/status`; when
//! a pod is marked for deletion it stops the process (SIGTERM, SIGKILL after the
//! grace period) and then deletes the pod with `gracePeriodSeconds=0`, as the
//! kubelet does. See <https://kubernetes.io/docs/concepts/architecture/nodes/#heartbeats>.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::apiserver::store::now_rfc3339;
use crate::kubelet::PodWorkers;
use crate::kubelet::env::{EnvSources, NodeInfo};
use crate::kubelet::pod::{Launch, PodHost, PodSpec};

use super::runtime::ImageRuntime;

/// The field manager of everything the agent writes.
const MANAGER: &str = "poolwarden-node";
/// How often the Lease is renewed and the Ready condition's heartbeat written.
const HEARTBEAT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("registering node {node}: {source}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("no directory for pod logs: {0}")]
    Logs(#[source] std::io::Error),
}

/// Pods run on the node, reached through the API server.
struct ApiHost {
    client: Client,
    node: NodeInfo,
    /// Runs the pods whose image the node was given; all others are local processes.
    images: Option<ImageRuntime>,
}

impl PodHost for ApiHost {
    fn node(&self) -> &NodeInfo {
        &self.node
    }

    async fn env_sources(&self, namespace: &str, refs: Vec<(&'static str, String)>) -> EnvSources {
        let mut out = EnvSources::new();
        for (plural, name) in refs {
            let obj = if plural == "secrets" {
                let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
                api.get_opt(&name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|s| serde_json::to_value(s).ok())
            } else {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
                api.get_opt(&name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|c| serde_json::to_value(c).ok())
            };
            if let Some(obj) = obj {
                out.insert((plural, name), obj);
            }
        }
        out
    }

    async fn report(&self, spec: &PodSpec, status: Value) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &spec.namespace);
        // The uid in the patch makes the server refuse it for a newer pod of the
        // same name (a StatefulSet's replacement): uid is immutable.
        let patch = json!({"metadata": {"uid": spec.pod["metadata"]["uid"]}, "status": status});
        if let Err(e) = pods
            .patch_status(&spec.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(pod = %spec.name, namespace = %spec.namespace, error = %e, "writing pod status");
        }
    }

    async fn launch(&self, spec: &PodSpec, argv: Vec<String>, env: Vec<(String, String)>) -> Result<Launch, String> {
        match &self.images {
            Some(images) => images.launch(&self.client, &self.node, spec, argv, env).await,
            None => Ok(Launch {
                argv,
                env,
                container: None,
            }),
        }
    }

    async fn forget(&self, spec: &PodSpec) {
        if let Some(images) = &self.images {
            images.forget(spec);
        }
    }
}

/// The running agent; [`NodeAgent::shutdown`] stops its pods.
pub struct NodeAgent {
    task: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
    workers: Arc<PodWorkers>,
}

fn node_object(info: &NodeInfo) -> Value {
    let now = now_rfc3339();
    let resources = json!({"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": info.name,
            "labels": {
                "kubernetes.io/hostname": info.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": std::env::consts::ARCH,
            },
        },
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "addresses": [
                {"type": "InternalIP", "address": info.host_ip},
                {"type": "Hostname", "address": info.name},
            ],
            "conditions": [ready_condition(&now, &now)],
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": "", "osImage": "poolwarden process node",
                "containerRuntimeVersion": "process://1", "kubeletVersion": "v1.37.0-poolwarden",
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": std::env::consts::ARCH,
            },
        },
    })
}

fn ready_condition(heartbeat: &str, since: &str) -> Value {
    json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
           "message": "poolwarden's process node agent is posting ready status",
           "lastHeartbeatTime": heartbeat, "lastTransitionTime": since})
}

/// A MicroTime, as Leases carry it.
fn micro_now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

async fn register(client: &Client, info: &NodeInfo) -> Result<String, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(node_object(info)).map_err(kube::Error::SerdeError)?;
    // Nodes take their status on create (the kubelet registers that way).
    let created = match nodes.create(&PostParams::default(), &node).await {
        Ok(n) => n,
        Err(kube::Error::Api(s)) if s.code == 409 => nodes.get(&info.name).await?,
        Err(e) => return Err(e),
    };
    Ok(created.uid().unwrap_or_default())
}

async fn heartbeat(client: Client, info: NodeInfo, node_uid: String) {
    let since = now_rfc3339();
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tick.tick().await;
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": info.name, "namespace": "kube-node-lease",
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": info.name, "uid": node_uid}]},
            "spec": {"holderIdentity": info.name, "leaseDurationSeconds": 40, "renewTime": micro_now()},
        });
        if let Err(e) = leases
            .patch(&info.name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&lease))
            .await
        {
            tracing::warn!(node = %info.name, error = %e, "renewing the node lease");
        }
        let status = json!({"status": {"conditions": [ready_condition(&now_rfc3339(), &since)]}});
        if let Err(e) = nodes
            .patch_status(&info.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            tracing::warn!(node = %info.name, error = %e, "writing the node's Ready heartbeat");
        }
    }
}

/// Pods with no node and no other scheduler named: ours to bind.
fn unscheduled(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    pod.metadata.deletion_timestamp.is_none()
        && spec.is_some_and(|s| s.node_name.is_none())
        && spec
            .and_then(|s| s.scheduler_name.as_deref())
            .is_none_or(|s| s == "default-scheduler")
}

async fn bind(client: Client, node: String, pod: Pod) {
    let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": pod.uid()},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    match pods
        .create_subresource::<Value, Value>("binding", &name, &PostParams::default(), &binding)
        .await
    {
        Ok(_) => tracing::info!(pod = %name, namespace = %ns, node = %node, "bound"),
        Err(e) => tracing::debug!(pod = %name, namespace = %ns, error = %e, "binding"),
    }
}

/// After the worker stopped the pod's process: the final delete, as the kubelet's.
async fn finish_deletion(client: Client, pod: Pod, stopped: Option<JoinHandle<()>>) {
    if let Some(task) = stopped {
        let _ = task.await;
    }
    let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match Api::<Pod>::namespaced(client, &ns).delete(&name, &params).await {
        Ok(_) => tracing::info!(pod = %name, namespace = %ns, "stopped and deleted"),
        Err(e) => tracing::debug!(pod = %name, namespace = %ns, error = %e, "final delete"),
    }
}

#[derive(Default)]
struct InFlight {
    binding: HashSet<String>,
    deleting: HashSet<String>,
}

fn sync(client: &Client, host: &Arc<ApiHost>, workers: &PodWorkers, pods: &[Arc<Pod>], in_flight: &Mutex<InFlight>) {
    let node = host.node.name.clone();
    let mut flight = in_flight.lock().unwrap_or_else(|e| e.into_inner());
    let present: HashSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
    flight.binding.retain(|uid| present.contains(uid));
    flight.deleting.retain(|uid| present.contains(uid));
    for pod in pods.iter().filter(|p| unscheduled(p)) {
        if let Some(uid) = pod.uid()
            && flight.binding.insert(uid)
        {
            tokio::spawn(bind(client.clone(), node.clone(), (**pod).clone()));
        }
    }
    let ours: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str()))
        .collect();
    let live_values: Vec<Value> = ours
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| serde_json::to_value(&***p).ok())
        .collect();
    let live: Vec<&Value> = live_values.iter().collect();
    let mut stopping: HashMap<String, JoinHandle<()>> =
        workers.sync(host, &live).into_iter().map(|s| (s.uid, s.task)).collect();
    for pod in ours.iter().filter(|p| p.metadata.deletion_timestamp.is_some()) {
        let Some(uid) = pod.uid() else { continue };
        if flight.deleting.insert(uid.clone()) {
            let stopped = stopping.remove(&uid);
            tokio::spawn(finish_deletion(client.clone(), (***pod).clone(), stopped));
        }
    }
}

impl NodeAgent {
    /// Registers node `name` (address `host_ip`) and starts running its pods:
    /// those whose image `images` has in its runtime, all others as local
    /// processes. Pod logs go to `log_dir` (kept), else to a temporary directory.
    pub async fn start(
        client: Client,
        name: &str,
        host_ip: &str,
        images: Option<ImageRuntime>,
        log_dir: Option<&std::path::Path>,
    ) -> Result<NodeAgent, NodeError> {
        let info = NodeInfo {
            name: name.to_string(),
            host_ip: host_ip.to_string(),
        };
        let node_uid = register(&client, &info).await.map_err(|source| NodeError::Register {
            node: name.to_string(),
            source,
        })?;
        let heartbeat = tokio::spawn(heartbeat(client.clone(), info.clone(), node_uid));
        let workers = Arc::new(
            match log_dir {
                Some(dir) => PodWorkers::with_log_dir(dir),
                None => PodWorkers::new("poolwarden-node-pods"),
            }
            .map_err(NodeError::Logs)?,
        );
        let host = Arc::new(ApiHost {
            client: client.clone(),
            node: info,
            images,
        });
        let w = workers.clone();
        let task = tokio::spawn(async move {
            let (reader, writer) = reflector::store::<Pod>();
            let stream = reflector(
                writer,
                watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
            )
            .default_backoff()
            .touched_objects();
            let mut stream = std::pin::pin!(stream);
            let in_flight = Mutex::new(InFlight::default());
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    ev = stream.next() => match ev {
                        Some(Err(e)) => tracing::debug!(error = %e, "pod watch"),
                        Some(Ok(_)) => {}
                        None => break,
                    },
                    _ = tick.tick() => {}
                }
                // Only a complete list says which pods are gone.
                if futures::FutureExt::now_or_never(reader.wait_until_ready()).is_none() {
                    continue;
                }
                sync(&client, &host, &w, &reader.state(), &in_flight);
            }
        });
        Ok(NodeAgent {
            task,
            heartbeat,
            workers,
        })
    }

    /// Where pod stdout/stderr go: `<namespace>_<pod>.log`.
    pub fn log_dir(&self) -> &std::path::Path {
        self.workers.log_dir()
    }

    /// Process group ids of the running pod processes.
    pub fn pod_pids(&self) -> Vec<i32> {
        self.workers.pids()
    }

    /// Stops watching and stops every pod (SIGTERM, SIGKILL after its grace period).
    pub async fn shutdown(self) {
        self.task.abort();
        self.heartbeat.abort();
        self.workers.shutdown().await;
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.task.abort();
        self.heartbeat.abort();
        self.workers.kill_all();
    }
}
