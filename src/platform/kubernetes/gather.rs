//! The selected workloads and their pods (chosen by
//! [`super::index::SelectionIndex::select`]) as a pass measures them: the
//! decision core's workloads and what attribution needs of each pod.

use super::workloads::{PodView, WorkloadView};
use crate::{
    decide::{EnvValue, Instance},
    platform::pass::{Subject, SubjectInstance},
    policy::{ResolvedPolicy, validate::APPLICATION_NAME_ENV},
};

/// A selected workload and its running pods.
#[derive(Clone, Debug)]
pub struct Selected {
    pub view: WorkloadView,
    /// Its pods that are not terminating.
    pub pods: Vec<PodView>,
    /// Its pods being deleted that still run (for the connection budget).
    pub terminating: u32,
    /// `maxReplicas` of a HorizontalPodAutoscaler targeting it (the largest, if several).
    pub autoscaler_max: Option<u32>,
}

/// The selected workloads as the pass measures them.
pub fn subjects(policy: &ResolvedPolicy, selected: &[Selected]) -> Vec<Subject> {
    selected
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
            let mut workload = s.view.to_workload(instances);
            workload.terminating = s.terminating;
            workload.autoscaler_max = s.autoscaler_max;
            Subject {
                workload,
                instances: s
                    .pods
                    .iter()
                    .map(|p| SubjectInstance {
                        ip: p.ip,
                        names_itself,
                        pool: None,
                    })
                    .collect(),
                database_user: s.view.database_user.clone(),
                key: workload_key(s),
            }
        })
        .collect()
}

/// Whether every selected container sets PGAPPNAME to the pod name (and, for a
/// driver that ignores PGAPPNAME, carries its library's binding of it).
fn names_itself(policy: &ResolvedPolicy, view: &super::workloads::WorkloadView) -> bool {
    let binding = policy.pool.library.facts().application_name_binding;
    crate::decide::env::selected_containers(policy, &view.containers).all(|c| {
        c.env.get(APPLICATION_NAME_ENV) == Some(&EnvValue::InstanceName)
            && binding.is_none_or(|b| c.env.get(b.name) == Some(&EnvValue::Literal(b.value.to_owned())))
    })
}

/// The history key of a workload measured as a whole; `/` never occurs in a pod name.
fn workload_key(s: &Selected) -> String {
    format!("{}/{}", crate::decide::Kind::from(s.view.kind), s.view.name)
}
