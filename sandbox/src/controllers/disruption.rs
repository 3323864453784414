//! The disruption controller: keeps every PodDisruptionBudget's status current
//! from the readiness of the pods it selects.

use crate::apiserver::disruption::pdb_status;
use crate::apiserver::store::Store;

use super::workload::{MANAGER, list_all, meta, resource};

pub fn reconcile_all(store: &Store) {
    let (Some(pods_res), Some(pdbs_res)) = (
        resource(store, "", "v1", "pods"),
        resource(store, "policy", "v1", "poddisruptionbudgets"),
    ) else {
        return;
    };
    let pdbs = list_all(store, &pdbs_res);
    if pdbs.is_empty() {
        return;
    }
    let pods = list_all(store, &pods_res);
    let pod_refs: Vec<&serde_json::Value> = pods.iter().collect();
    for pdb in &pdbs {
        let status = pdb_status(pdb, &pod_refs);
        let _ = store.modify(
            &pdbs_res,
            meta(pdb, "namespace"),
            meta(pdb, "name"),
            true,
            MANAGER,
            |p| {
                p["status"] = status;
            },
        );
    }
}
