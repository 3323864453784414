//! The parts of kube-controller-manager the sandbox needs, as in-process loops
//! over the store: Deployments and StatefulSets get pods, PodDisruptionBudgets
//! get status, pods whose owner is gone are garbage-collected.

pub mod deployment;
pub mod disruption;
pub mod statefulset;
mod workload;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::apiserver::store::Store;

pub struct Controllers {
    task: JoinHandle<()>,
}

/// One pass of every controller. Each write that changes nothing is a no-op in
/// the store, so the loop settles once everything is converged.
pub fn reconcile_all(store: &Store) {
    deployment::reconcile_all(store);
    statefulset::reconcile_all(store);
    disruption::reconcile_all(store);
    workload::collect_orphans(store);
}

impl Controllers {
    pub fn start(store: Arc<Store>) -> Controllers {
        let task = tokio::spawn(async move {
            let mut events = store.subscribe();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                reconcile_all(&store);
                tokio::select! {
                    _ = tick.tick() => {}
                    ev = events.recv() => {
                        if matches!(ev, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                            break;
                        }
                        // Let a burst of events settle into one pass.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        while events.try_recv().is_ok() {}
                    }
                }
            }
        });
        Controllers { task }
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        self.task.abort();
    }
}
