//! The sandbox "kubelet": one node that runs every pod as a local process.
//! It starts a worker for each pod that appears in the store and stops it when
//! the pod is deleted (or marked for deletion).

pub mod env;
pub mod ips;
pub mod pod;
pub mod process;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::apiserver::selector::{FieldSelector, LabelSelector};
use crate::apiserver::store::Store;
use process::ProcessRegistry;

struct Worker {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    ip: Ipv4Addr,
}

#[derive(Default)]
struct Workers(Mutex<HashMap<String, Worker>>);

pub struct Kubelet {
    task: JoinHandle<()>,
    workers: Arc<Workers>,
    registry: ProcessRegistry,
    log_dir: Arc<tempfile::TempDir>,
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

fn sync(store: &Arc<Store>, workers: &Workers, registry: &ProcessRegistry, log_dir: &std::path::Path) {
    let Some(res) = store.resource("", "v1", "pods") else {
        return;
    };
    let (_, pods) = store.list(&res, None, &LabelSelector::default(), &FieldSelector::default());
    let mut map = workers.0.lock().unwrap_or_else(|e| e.into_inner());
    let live: HashMap<String, &Value> = pods
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| Some((p["metadata"]["uid"].as_str()?.to_string(), p)))
        .collect();
    map.retain(|uid, w| {
        if live.contains_key(uid) {
            return true;
        }
        let _ = w.stop.send(true);
        false
    });
    for (uid, pod) in live {
        if map.contains_key(&uid) || pod["spec"]["containers"][0].is_null() {
            continue;
        }
        // Pods that already ran to completion (e.g. after a sandbox restart) stay as they are.
        if matches!(pod["status"]["phase"].as_str(), Some("Succeeded") | Some("Failed")) {
            continue;
        }
        let Some(ip) = ips::allocate(&container_ports(pod)) else {
            tracing::warn!("no free pod IP left");
            continue;
        };
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let spec = pod::PodSpec {
            log: log_dir.join(format!("{ns}_{name}.log")),
            namespace: ns,
            name,
            pod: pod.clone(),
            ip,
        };
        let (stop, stop_rx) = watch::channel(false);
        let store = store.clone();
        let registry = registry.clone();
        let task = tokio::spawn(async move {
            pod::run(store, spec, registry, stop_rx).await;
            ips::release(ip);
        });
        map.insert(uid, Worker { stop, task, ip });
    }
    map.retain(|_, w| !w.task.is_finished());
}

impl Kubelet {
    pub fn start(store: Arc<Store>) -> Kubelet {
        let workers = Arc::new(Workers::default());
        let registry = ProcessRegistry::default();
        let log_dir = Arc::new(
            tempfile::Builder::new()
                .prefix("sandbox-pods")
                .tempdir()
                .unwrap_or_else(|_| {
                    // Fall back to a fixed directory; logging must not stop pods from running.
                    tempfile::TempDir::new_in(std::env::temp_dir()).unwrap_or_else(|_| panic!("no temporary directory"))
                }),
        );
        let (w, r, l) = (workers.clone(), registry.clone(), log_dir.clone());
        let task = tokio::spawn(async move {
            let mut events = store.subscribe();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                sync(&store, &w, &r, l.path());
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
        Kubelet {
            task,
            workers,
            registry,
            log_dir,
        }
    }

    /// Process group ids of the running pod processes.
    pub fn pids(&self) -> Vec<i32> {
        self.registry.pids()
    }

    /// Where pod stdout/stderr go: `<namespace>_<pod>.log`.
    pub fn log_dir(&self) -> PathBuf {
        self.log_dir.path().to_path_buf()
    }

    /// Stops every pod (SIGTERM, SIGKILL after its grace period) and waits.
    pub async fn shutdown(self) {
        self.task.abort();
        let workers: Vec<Worker> = {
            let mut map = self.workers.0.lock().unwrap_or_else(|e| e.into_inner());
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
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
        self.registry.kill_all();
    }
}
