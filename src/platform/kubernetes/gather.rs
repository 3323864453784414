//! One pass's reading of the world for one policy: the selected workloads and their
//! pods from the caches, the database sample turned into per-pod samples (kept in
//! the policy's history), and the pool stats. Shared by the controller and
//! `poolwarden plan`.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::Pod,
};

use super::{
    selector,
    workloads::{PodView, WorkloadView, owner_of},
};
use crate::{
    decide::{EnvValue, Instance, Workload},
    observation::{Measured, PodConnections, PodSample, PoolClaims},
    observe::{
        aggregate::{aggregate, sum_claims},
        attribution::{PodKey, WorkloadKey, attribute_by_user},
        history::History,
        measure,
        postgres::Snapshot,
    },
    policy::{Attribution, ResolvedPolicy, WorkloadKind, validate::APPLICATION_NAME_ENV},
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
    deployments: &[Arc<Deployment>],
    statefulsets: &[Arc<StatefulSet>],
    pods: &[Arc<Pod>],
) -> Vec<Selected> {
    let in_ns = |ns: Option<&String>| ns.map(String::as_str) == Some(namespace);
    let empty = BTreeMap::new();
    // Labels first: views are built only for the workloads the policy selects.
    let picks = |kind: WorkloadKind, labels: Option<&BTreeMap<String, String>>| {
        policy.selector.kinds.contains(&kind)
            && selector::matches(
                &policy.selector.match_labels,
                &policy.selector.match_expressions,
                labels.unwrap_or(&empty),
            )
    };
    let mut views: Vec<WorkloadView> = deployments
        .iter()
        .filter(|d| in_ns(d.metadata.namespace.as_ref()) && picks(WorkloadKind::Deployment, d.metadata.labels.as_ref()))
        .map(|d| WorkloadView::from_deployment(d))
        .chain(
            statefulsets
                .iter()
                .filter(|s| {
                    in_ns(s.metadata.namespace.as_ref()) && picks(WorkloadKind::StatefulSet, s.metadata.labels.as_ref())
                })
                .map(|s| WorkloadView::from_statefulset(s)),
        )
        .collect();
    views.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    // Pods by owning workload, in one pass over the namespace's pods; a pod counts
    // when its owner is the workload and the workload's selector matches it.
    let wanted: BTreeSet<(WorkloadKind, &str)> = views.iter().map(|v| (v.kind, v.name.as_str())).collect();
    let mut owned: BTreeMap<(WorkloadKind, String), Vec<&Pod>> = BTreeMap::new();
    for p in pods.iter().filter(|p| in_ns(p.metadata.namespace.as_ref())) {
        if let Some((kind, name)) = owner_of(p)
            && wanted.contains(&(kind, name.as_str()))
        {
            owned.entry((kind, name)).or_default().push(p);
        }
    }
    views
        .into_iter()
        .map(|view| {
            let mut pods: Vec<PodView> = owned
                .get(&(view.kind, view.name.clone()))
                .into_iter()
                .flatten()
                .filter(|p| {
                    selector::selects_pod(view.pod_selector.as_ref(), p.metadata.labels.as_ref().unwrap_or(&empty))
                })
                .map(|p| PodView::from_pod(p))
                .filter(|p| !p.terminating)
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
    let pods: Vec<&PodView> = selected.iter().flat_map(|s| s.pods.iter()).collect();
    let at = database.map(|s| s.now).unwrap_or(now);
    let claim = |i: usize| claims.map(|c| c[i].clone());
    let mut live: BTreeSet<String> = BTreeSet::new();
    let per_workload = policy.attribution == Attribution::User;
    if per_workload {
        // One role per workload: the workload is measured as a whole.
        let keys: Vec<WorkloadKey> = selected
            .iter()
            .map(|s| WorkloadKey {
                name: workload_key(s),
                user: s.view.database_user.clone(),
            })
            .collect();
        let measured: Vec<Measured<PodConnections>> = match database {
            Err(why) => vec![Measured::Unknown(why.to_owned()); keys.len()],
            Ok(snapshot) => {
                let attributed = attribute_by_user(&snapshot.backends, &keys);
                let limits = measure::limits(policy);
                attributed
                    .per_workload
                    .into_iter()
                    .zip(selected)
                    .map(|(m, s)| m.map(|bs| aggregate(&bs, limits.for_workload(s.pods.len() as u32), snapshot.now)))
                    .collect()
            }
        };
        let mut offset = 0;
        for ((s, key), m) in selected.iter().zip(&keys).zip(measured) {
            let pool = claims.map(|c| sum_claims(&c[offset..offset + s.pods.len()]));
            offset += s.pods.len();
            history.record(&key.name, PodSample { at, database: m, pool });
            live.insert(key.name.clone());
        }
    } else {
        let keys: Vec<PodKey> = pods
            .iter()
            .map(|p| PodKey {
                name: p.name.clone(),
                ip: p.ip,
            })
            .collect();
        // By application name, a pod whose template does not set PGAPPNAME to the pod
        // name is invisible, not idle: its measure is unknown until the env is applied.
        let unnamed: Vec<bool> = selected
            .iter()
            .flat_map(|s| {
                let named = policy.attribution != Attribution::ApplicationName || names_itself(policy, &s.view);
                std::iter::repeat_n(!named, s.pods.len())
            })
            .collect();
        let per_pod: Vec<Measured<PodConnections>> = match database {
            Err(why) => vec![Measured::Unknown(why.to_owned()); keys.len()],
            Ok(snapshot) => measure::per_pod(policy, snapshot, &keys)
                .per_pod
                .into_iter()
                .zip(&unnamed)
                .map(|(m, unnamed)| {
                    if *unnamed {
                        Measured::Unknown(format!(
                            "{APPLICATION_NAME_ENV} is not the pod name on the template yet: its connections cannot be told apart"
                        ))
                    } else {
                        Measured::Known(m)
                    }
                })
                .collect(),
        };
        for (i, (key, m)) in keys.iter().zip(per_pod).enumerate() {
            history.record(
                &key.name,
                PodSample {
                    at,
                    database: m,
                    pool: claim(i),
                },
            );
            live.insert(key.name.clone());
        }
    }
    let keep = policy
        .discrepancy
        .as_ref()
        .map(|d| d.sustained_for + d.grace)
        .unwrap_or_default()
        + policy.interval * 3;
    let oldest = at - SignedDuration::try_from(keep).unwrap_or(SignedDuration::MAX);
    history.prune(&live.iter().map(String::as_str).collect(), oldest);
    selected
        .iter()
        .map(|s| {
            let instances = s
                .pods
                .iter()
                .map(|p| Instance {
                    name: p.name.clone(),
                    ready: p.ready,
                    started_at: p.started_at,
                    samples: if per_workload {
                        Vec::new()
                    } else {
                        history.samples(&p.name)
                    },
                })
                .collect();
            let mut w = s.view.to_workload(instances);
            if per_workload {
                w.workload_samples = Some(history.samples(&workload_key(s)));
            }
            w
        })
        .collect()
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
