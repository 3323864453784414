//! One pass's reading of the world for one policy: the selected workloads and their
//! pods from the caches, the database sample turned into per-pod samples (kept in
//! the policy's history), and the pool stats. Shared by the controller and
//! `poolwarden plan`.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};

use super::{
    cache::{CachedPod, CachedWorkload},
    workloads::{PodView, WorkloadView},
};
use crate::{
    decide::{EnvValue, Instance, Workload},
    observation::{Measured, PoolClaims},
    observe::{
        history::History,
        pass::{self, Subject, SubjectInstance},
        postgres::Snapshot,
    },
    policy::{ResolvedPolicy, WorkloadKind, validate::APPLICATION_NAME_ENV},
};

/// A selected workload and its running pods.
#[derive(Clone, Debug)]
pub struct Selected {
    pub view: WorkloadView,
    pub pods: Vec<PodView>,
}

/// The workloads of `namespace` the policy selects, sorted by kind and name, each with
/// its pods that are not terminating.
pub fn select(
    policy: &ResolvedPolicy,
    namespace: &str,
    deployments: &[Arc<CachedWorkload<Deployment>>],
    statefulsets: &[Arc<CachedWorkload<StatefulSet>>],
    pods: &[Arc<CachedPod>],
) -> Vec<Selected> {
    let in_ns = |ns: Option<&String>| ns.map(String::as_str) == Some(namespace);
    let mut views: Vec<WorkloadView> = deployments
        .iter()
        .map(|d| &d.view)
        .chain(statefulsets.iter().map(|s| &s.view))
        .filter(|v| v.namespace == namespace && v.selected_by(policy))
        .cloned()
        .collect();
    views.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    // Pods by owning workload, in one pass over the namespace's pods.
    let wanted: BTreeSet<(WorkloadKind, &str)> = views.iter().map(|v| (v.kind, v.name.as_str())).collect();
    let mut owned: BTreeMap<(WorkloadKind, String), Vec<&CachedPod>> = BTreeMap::new();
    for p in pods.iter().filter(|p| in_ns(p.metadata.namespace.as_ref())) {
        if let Some((kind, name)) = &p.owner
            && wanted.contains(&(*kind, name.as_str()))
        {
            owned.entry((*kind, name.clone())).or_default().push(p);
        }
    }
    views
        .into_iter()
        .map(|view| {
            let mut pods: Vec<PodView> = owned
                .get(&(view.kind, view.name.clone()))
                .into_iter()
                .flatten()
                .filter(|p| !p.terminating)
                .map(|p| p.view())
                .collect();
            pods.sort_by(|a, b| a.name.cmp(&b.name));
            Selected { view, pods }
        })
        .collect()
}

/// Records this pass's samples into `history` and returns the decision core's
/// workloads. `claims` holds the pool stats per pod (the pods of all selected
/// workloads, in order, flattened) when the policy asks for them.
pub fn observe(
    policy: &ResolvedPolicy,
    selected: &[Selected],
    database: Result<&Snapshot, &str>,
    claims: Option<&[Measured<PoolClaims>]>,
    history: &mut History,
    now: Timestamp,
) -> Vec<Workload> {
    let subjects = selected
        .iter()
        .map(|s| {
            let names_itself = names_itself(policy, &s.view);
            let instances = s
                .pods
                .iter()
                .map(|p| Instance {
                    name: p.name.clone(),
                    ready: p.ready,
                    started_at: p.started_at,
                    samples: Vec::new(),
                })
                .collect();
            Subject {
                workload: s.view.to_workload(instances),
                instances: s
                    .pods
                    .iter()
                    .map(|p| SubjectInstance { ip: p.ip, names_itself })
                    .collect(),
                database_user: s.view.database_user.clone(),
                key: workload_key(s),
            }
        })
        .collect();
    pass::observe(policy, subjects, database, claims, history, now)
}

/// Whether every selected container sets PGAPPNAME to the pod name.
fn names_itself(policy: &ResolvedPolicy, view: &super::workloads::WorkloadView) -> bool {
    let name = EnvValue::FieldRef("metadata.name".to_owned());
    crate::decide::env::selected_containers(policy, &view.containers)
        .all(|c| c.env.get(APPLICATION_NAME_ENV) == Some(&name))
}

/// The history key of a workload measured as a whole; `/` never occurs in a pod name.
fn workload_key(s: &Selected) -> String {
    format!("{}/{}", super::workloads::kind_name(s.view.kind), s.view.name)
}
