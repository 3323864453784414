//! One pass's reading of the world for one policy: the selected workloads and their
//! pods from the caches, the database sample turned into per-pod samples (kept in
//! the policy's history), and the pool stats. Shared by the controller and
//! `poolwarden plan`.

use std::{collections::BTreeSet, sync::Arc};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::Pod,
};

use super::{
    selector,
    workloads::{PodView, WorkloadView},
};
use crate::{
    decide::{Instance, Workload},
    observation::{Measured, PodSample, PoolClaims},
    observe::{attribution::PodKey, history::History, measure, postgres::Snapshot},
    policy::{Attribution, ResolvedPolicy},
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
    let mut views: Vec<WorkloadView> = deployments
        .iter()
        .filter(|d| in_ns(d.metadata.namespace.as_ref()))
        .map(|d| WorkloadView::from_deployment(d))
        .chain(
            statefulsets
                .iter()
                .filter(|s| in_ns(s.metadata.namespace.as_ref()))
                .map(|s| WorkloadView::from_statefulset(s)),
        )
        .filter(|v| v.selected_by(policy))
        .collect();
    views.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    let empty = Default::default();
    views
        .into_iter()
        .map(|view| {
            let mut pods: Vec<PodView> = pods
                .iter()
                .filter(|p| in_ns(p.metadata.namespace.as_ref()))
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
/// workloads. `claims` holds the pool stats per pod (same order as the pods of all
/// selected workloads, flattened) when the policy asks for them.
pub fn observe(
    policy: &ResolvedPolicy,
    selected: &[Selected],
    database: Result<&Snapshot, &str>,
    claims: Option<&[Measured<PoolClaims>]>,
    history: &mut History,
    now: Timestamp,
) -> Vec<Workload> {
    let keys: Vec<PodKey> = selected
        .iter()
        .flat_map(|s| s.pods.iter())
        .map(|p| PodKey {
            name: p.name.clone(),
            ip: p.ip,
        })
        .collect();
    let per_pod: Vec<Measured<crate::observation::PodConnections>> = match database {
        Err(why) => vec![Measured::Unknown(why.to_owned()); keys.len()],
        Ok(_) if policy.attribution == Attribution::User => {
            vec![Measured::Unknown("User attribution is per workload, not per pod".to_owned()); keys.len()]
        }
        Ok(snapshot) => measure::per_pod(policy, snapshot, &keys)
            .per_pod
            .into_iter()
            .map(Measured::Known)
            .collect(),
    };
    let at = database.map(|s| s.now).unwrap_or(now);
    for (i, key) in keys.iter().enumerate() {
        history.record(
            &key.name,
            PodSample {
                at,
                database: per_pod[i].clone(),
                pool: claims.map(|c| c[i].clone()),
            },
        );
    }
    let keep = policy
        .discrepancy
        .as_ref()
        .map(|d| d.sustained_for + d.grace)
        .unwrap_or_default()
        + policy.interval * 3;
    let oldest = at - SignedDuration::try_from(keep).unwrap_or(SignedDuration::MAX);
    history.prune(&keys.iter().map(|k| k.name.as_str()).collect::<BTreeSet<_>>(), oldest);
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
                    samples: history.samples(&p.name),
                })
                .collect();
            s.view.to_workload(instances)
        })
        .collect()
}
