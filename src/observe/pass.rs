//! One pass's measurement of a policy's workloads, whatever the platform: the
//! database sample attributed to instances (or to workloads, for `User`
//! attribution), recorded in the policy's history, and handed to the decision core
//! as [`Workload`]s with their samples. The Kubernetes controller and the Fly
//! reconciler both describe what they see as [`Subject`]s and call [`observe`].

use std::{collections::BTreeSet, net::IpAddr};

use jiff::Timestamp;

use super::{
    aggregate::sum_claims,
    attribution::{PodKey, WorkloadKey, attribute_by_user},
    evidence,
    history::History,
    measure::per_pod,
    postgres::Snapshot,
};
use crate::{
    decide::{
        Workload,
        measure::{self, Limits, summarise},
    },
    observation::{Measured, PodConnections, PodSample, PoolClaims},
    policy::{Attribution, ResolvedPolicy, validate::APPLICATION_NAME_ENV},
};

/// A workload to measure: its decision-core form (instances listed, no samples yet)
/// and what attribution needs of it.
#[derive(Clone, Debug)]
pub struct Subject {
    pub workload: Workload,
    /// Per instance, in the order of `workload.instances`.
    pub instances: Vec<SubjectInstance>,
    /// The database role of the workload, for `User` attribution.
    pub database_user: String,
    /// The history key of the workload measured as a whole; never an instance name.
    pub key: String,
}

#[derive(Clone, Debug)]
pub struct SubjectInstance {
    pub ip: Option<IpAddr>,
    /// The instance reports its own name as `application_name` (its `PGAPPNAME` is
    /// set to it). Under `ApplicationName` attribution an instance that does not is
    /// unknown, not idle.
    pub names_itself: bool,
}

/// Records this pass's samples into `history` and returns the decision core's
/// workloads. `claims` holds the pool stats per instance (all subjects' instances,
/// in order, flattened) when the policy asks for them.
pub fn observe(
    policy: &ResolvedPolicy,
    subjects: Vec<Subject>,
    database: Result<&Snapshot, &str>,
    claims: Option<&[Measured<PoolClaims>]>,
    history: &mut History,
    now: Timestamp,
) -> Vec<Workload> {
    let at = database.map(|s| s.now).unwrap_or(now);
    let mut live: BTreeSet<String> = BTreeSet::new();
    let per_workload = policy.attribution == Attribution::User;
    if per_workload {
        let keys: Vec<WorkloadKey> = subjects
            .iter()
            .map(|s| WorkloadKey {
                name: s.key.clone(),
                user: s.database_user.clone(),
            })
            .collect();
        let measured: Vec<Measured<PodConnections>> = match database {
            Err(why) => vec![Measured::Unknown(why.to_owned()); keys.len()],
            Ok(snapshot) => {
                let limits = Limits::of(policy);
                attribute_by_user(&snapshot.backends, &keys)
                    .per_workload
                    .into_iter()
                    .zip(&subjects)
                    .map(|(m, s)| {
                        let pods = s.instances.len() as u32;
                        m.map(|bs| summarise(&limits, &bs, pods, snapshot.now, evidence::group))
                    })
                    .collect()
            }
        };
        let mut offset = 0;
        for ((s, key), m) in subjects.iter().zip(&keys).zip(measured) {
            let pool = claims.map(|c| sum_claims(&c[offset..offset + s.instances.len()]));
            offset += s.instances.len();
            history.record(&key.name, PodSample { at, database: m, pool });
            live.insert(key.name.clone());
        }
    } else {
        let keys: Vec<PodKey> = subjects
            .iter()
            .flat_map(|s| {
                s.workload.instances.iter().zip(&s.instances).map(|(i, si)| PodKey {
                    name: i.name.clone(),
                    ip: si.ip,
                })
            })
            .collect();
        let unnamed: Vec<bool> = subjects
            .iter()
            .flat_map(|s| s.instances.iter())
            .map(|si| policy.attribution == Attribution::ApplicationName && !si.names_itself)
            .collect();
        let per_instance: Vec<Measured<PodConnections>> = match database {
            Err(why) => vec![Measured::Unknown(why.to_owned()); keys.len()],
            Ok(snapshot) => {
                let limits = Limits::of(policy);
                per_pod(policy.attribution, snapshot, &keys, |bs| {
                    summarise(&limits, bs, 1, snapshot.now, evidence::group)
                })
                .per_pod
                .into_iter()
                .zip(&unnamed)
                .map(|(m, unnamed)| {
                    if *unnamed {
                        Measured::Unknown(format!(
                            "{APPLICATION_NAME_ENV} is not the instance's name yet: its connections cannot be told apart"
                        ))
                    } else {
                        Measured::Known(m)
                    }
                })
                .collect()
            }
        };
        for (i, (key, m)) in keys.iter().zip(per_instance).enumerate() {
            let pool = claims.map(|c| c[i].clone());
            history.record(&key.name, PodSample { at, database: m, pool });
            live.insert(key.name.clone());
        }
    }
    let keep = policy
        .discrepancy
        .as_ref()
        .map(|d| d.sustained_for.saturating_add(d.grace))
        .unwrap_or_default()
        .saturating_add(policy.interval.saturating_mul(3));
    let oldest = crate::timing::before(at, keep);
    let live: BTreeSet<&str> = live.iter().map(String::as_str).collect();
    match (&policy.discrepancy, per_workload) {
        (Some(_), false) => history.prune_keeping_run_start(&live, oldest),
        _ => history.prune(&live, oldest),
    }
    match (&policy.discrepancy, per_workload) {
        // Nothing is judged: only the newest sample is read (status, metrics).
        (None, _) => history.compact(|_| false),
        (Some(rule), false) => {
            history.compact(|s| matches!(measure::value(rule.measure, s), Measured::Known(v) if v > rule.max))
        }
        // A workload's limit moves with its ready pods: its history is kept whole.
        (Some(_), true) => {}
    }
    subjects
        .into_iter()
        .map(|s| {
            let mut w = s.workload;
            if per_workload {
                w.workload_samples = Some(history.samples(&s.key));
            } else {
                for i in &mut w.instances {
                    i.samples = history.samples(&i.name);
                }
            }
            w
        })
        .collect()
}
