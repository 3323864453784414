//! The process "kubelet": a node that runs every pod as a local process.
//! [`PodWorkers`] runs the pods (shared with the real control plane's node agent,
//! `crate::cluster::node`); [`Kubelet`] is the sandbox's node, which starts a
//! worker for each pod that appears in the store and stops it when the pod is
//! deleted (or marked for deletion).

pub mod env;
pub mod image;
pub mod ips;
pub mod oci_runtime;
pub mod pod;
pub mod probe;
pub mod process;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::apiserver::selector::{FieldSelector, LabelSelector};
use crate::apiserver::store::Store;
use env::{EnvSources, NodeInfo};
use pod::{PodHost, PodSpec};
use process::ProcessRegistry;

struct Worker {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    ip: Ipv4Addr,
}

/// The pods a node runs: one worker (a process, its probes, its status) per pod
/// uid, started for the pods given to [`PodWorkers::sync`] and stopped for those
/// no longer given. Both the sandbox kubelet and the node agent of the real
/// control plane run their pods through this.
pub struct PodWorkers {
    workers: Mutex<HashMap<String, Worker>>,
    registry: ProcessRegistry,
    log_dir: PathBuf,
    /// Removes `log_dir` on drop when it is a temporary one.
    _temp: Option<tempfile::TempDir>,
}

/// A worker told to stop: it has terminated its process when `task` ends.
pub struct Stopping {
    pub uid: String,
    pub task: JoinHandle<()>,
}

fn container_ports(pod: &Value) -> Vec<u16> {
    let c = &pod["spec"]["containers"][0];
    let mut ports: Vec<u16> = c["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["containerPort"].as_u64().and_then(|p| u16::try_from(p).ok()))
        .collect();
    if let Some(p) = c["readinessProbe"]["httpGet"]["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
    {
        ports.push(p);
    }
    ports
}

impl PodWorkers {
    pub fn new(log_prefix: &str) -> std::io::Result<PodWorkers> {
        let temp = tempfile::Builder::new().prefix(log_prefix).tempdir()?;
        Ok(PodWorkers {
            workers: Mutex::default(),
            registry: ProcessRegistry::default(),
            log_dir: temp.path().to_path_buf(),
            _temp: Some(temp),
        })
    }

    /// Pod logs in `dir`, kept after the workers are gone (with the rest of a
    /// cluster's data directory, for a failed run's post-mortem).
    pub fn with_log_dir(dir: &Path) -> std::io::Result<PodWorkers> {
        std::fs::create_dir_all(dir)?;
        Ok(PodWorkers {
            workers: Mutex::default(),
            registry: ProcessRegistry::default(),
            log_dir: dir.to_path_buf(),
            _temp: None,
        })
    }

    /// Runs exactly the pods of `live` (not being deleted, not finished) that
    /// have a container: starts a worker for each new uid, tells the workers of
    /// uids no longer in `live` to stop, and returns those.
    pub fn sync<H: PodHost>(&self, host: &Arc<H>, live: &[&Value]) -> Vec<Stopping> {
        let mut map = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        let live: HashMap<String, &Value> = live
            .iter()
            .filter_map(|p| Some((p["metadata"]["uid"].as_str()?.to_string(), *p)))
            .collect();
        let gone: Vec<String> = map.keys().filter(|uid| !live.contains_key(*uid)).cloned().collect();
        let mut stopping = Vec::new();
        for uid in gone {
            if let Some(w) = map.remove(&uid) {
                let _ = w.stop.send(true);
                stopping.push(Stopping { uid, task: w.task });
            }
        }
        for (uid, pod) in live {
            if map.contains_key(&uid) || pod["spec"]["containers"][0].is_null() {
                continue;
            }
            // Pods that already ran to completion (e.g. after a restart of the node) stay as they are.
            if matches!(pod["status"]["phase"].as_str(), Some("Succeeded") | Some("Failed")) {
                continue;
            }
            let Some(ip) = ips::allocate(&container_ports(pod)) else {
                tracing::warn!("no free pod IP left");
                continue;
            };
            let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
            let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let spec = PodSpec {
                log: self.log_dir.join(format!("{ns}_{name}.log")),
                namespace: ns,
                name,
                pod: (*pod).clone(),
                ip,
            };
            let (stop, stop_rx) = watch::channel(false);
            let (host, registry) = (host.clone(), self.registry.clone());
            let task = tokio::spawn(async move {
                pod::run(host, spec, registry, stop_rx).await;
                ips::release(ip);
            });
            map.insert(uid, Worker { stop, task, ip });
        }
        stopping
    }

    /// Whether a worker runs for `uid`.
    pub fn runs(&self, uid: &str) -> bool {
        self.workers.lock().unwrap_or_else(|e| e.into_inner()).contains_key(uid)
    }

    /// Process group ids of the running pod processes.
    pub fn pids(&self) -> Vec<i32> {
        self.registry.pids()
    }

    /// Where pod stdout/stderr go: `<namespace>_<pod>.log`.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Stops every pod (SIGTERM, SIGKILL after its grace period) and waits.
    pub async fn shutdown(&self) {
        let workers: Vec<Worker> = {
            let mut map = self.workers.lock().unwrap_or_else(|e| e.into_inner());
            map.drain().map(|(_, w)| w).collect()
        };
        for w in &workers {
            let _ = w.stop.send(true);
        }
        for w in workers {
            let _ = w.task.await;
            ips::release(w.ip);
        }
        self.registry.kill_all();
    }

    /// Kills every pod process at once (SIGKILL).
    pub fn kill_all(&self) {
        self.registry.kill_all();
    }
}

/// The sandbox's node: pods read from and status written into its store.
struct StoreHost {
    store: Arc<Store>,
    node: NodeInfo,
}

impl PodHost for StoreHost {
    fn node(&self) -> &NodeInfo {
        &self.node
    }

    async fn env_sources(&self, namespace: &str, refs: Vec<(&'static str, String)>) -> EnvSources {
        let mut out = EnvSources::new();
        for (plural, name) in refs {
            let Some(res) = self.store.resource("", "v1", plural) else {
                continue;
            };
            if let Ok(obj) = self.store.get(&res, namespace, &name) {
                out.insert((plural, name), obj);
            }
        }
        out
    }

    async fn report(&self, spec: &PodSpec, status: Value) {
        let Some(res) = self.store.resource("", "v1", "pods") else {
            return;
        };
        let uid = spec.pod["metadata"]["uid"].clone();
        let _ = self
            .store
            .modify(&res, &spec.namespace, &spec.name, true, "kubelet", |p| {
                // Never write a newer pod of the same name (a StatefulSet replacement).
                if p["metadata"]["uid"] == uid {
                    p["status"] = status;
                }
            });
    }
}

pub struct Kubelet {
    task: JoinHandle<()>,
    workers: Arc<PodWorkers>,
}

fn sync(host: &Arc<StoreHost>, workers: &PodWorkers) {
    let Some(res) = host.store.resource("", "v1", "pods") else {
        return;
    };
    let (_, pods) = host
        .store
        .list(&res, None, &LabelSelector::default(), &FieldSelector::default());
    let live: Vec<&Value> = pods
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    // The sandbox deletes pods at once: nothing waits for a worker to stop.
    drop(workers.sync(host, &live));
}

impl Kubelet {
    pub fn start(store: Arc<Store>) -> Kubelet {
        let workers = Arc::new(
            PodWorkers::new("sandbox-pods")
                .or_else(|_| PodWorkers::new("sandbox-pods-retry"))
                .unwrap_or_else(|e| panic!("no temporary directory for pod logs: {e}")),
        );
        let host = Arc::new(StoreHost {
            store,
            node: NodeInfo {
                name: "sandbox".into(),
                host_ip: "127.0.0.1".into(),
            },
        });
        let w = workers.clone();
        let task = tokio::spawn(async move {
            let mut events = host.store.subscribe();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                sync(&host, &w);
                tokio::select! {
                    _ = tick.tick() => {}
                    ev = events.recv() => {
                        if matches!(ev, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                            break;
                        }
                        while events.try_recv().is_ok() {}
                    }
                }
            }
        });
        Kubelet { task, workers }
    }

    /// Process group ids of the running pod processes.
    pub fn pids(&self) -> Vec<i32> {
        self.workers.pids()
    }

    /// Where pod stdout/stderr go: `<namespace>_<pod>.log`.
    pub fn log_dir(&self) -> PathBuf {
        self.workers.log_dir().to_path_buf()
    }

    /// Stops every pod (SIGTERM, SIGKILL after its grace period) and waits.
    pub async fn shutdown(self) {
        self.task.abort();
        self.workers.shutdown().await;
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
        self.workers.kill_all();
    }
}
