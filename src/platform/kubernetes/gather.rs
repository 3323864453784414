//! One pass's reading of the world for one policy: the selected workloads and their
//! pods (chosen by [`super::index::SelectionIndex::select`]), the database sample turned into per-pod samples (kept in
//! the policy's history), and the pool stats. Shared by the controller and
//! `poolwarden plan`.

use jiff::Timestamp;

use super::workloads::{PodView, WorkloadView};
use crate::{
    decide::{EnvValue, Instance, Workload},
    observation::{Measured, PoolClaims},
    observe::{
        history::History,
        pass::{self, Subject, SubjectInstance},
        postgres::Snapshot,
    },
    policy::{ResolvedPolicy, validate::APPLICATION_NAME_ENV},
};

/// A selected workload and its running pods.
#[derive(Clone, Debug)]
pub struct Selected {
    pub view: WorkloadView,
    pub pods: Vec<PodView>,
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
