//! A pass's measurement of a policy's workloads, whatever the platform: the
//! database sample attributed to instances (or to workloads, for `User`
//! attribution), recorded in the policy's history, and handed to the decision core
//! as [`Workload`]s with their samples. The Kubernetes controller and the Fly
//! reconciler both describe what they see as [`Subject`]s.

use std::{collections::BTreeSet, net::IpAddr};

use jiff::Timestamp;

use crate::{
    decide::{
        Workload,
        budget::build::BackendCounts,
        measure::{self, Limits, summarise},
    },
    observation::{Backend, Measured, PodConnections, PodSample, PoolClaims},
    observe::{
        aggregate::sum_claims,
        attribution::{PodKey, WorkloadKey, attribute_by_user},
        evidence,
        history::History,
        measure::per_pod,
        postgres::Snapshot,
    },
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

#[derive(Clone, Debug, Default)]
pub struct SubjectInstance {
    pub ip: Option<IpAddr>,
    /// The instance reports its own name as `application_name` (its `PGAPPNAME` is
    /// set to it). Under `ApplicationName` attribution an instance that does not is
    /// unknown, not idle.
    pub names_itself: bool,
    /// What its pool stats endpoint said, when the policy asks for them.
    pub pool: Option<Measured<PoolClaims>>,
}

/// What the database budget learns from attribution: the backends the policy's
/// workloads hold, by database and role, and the roles each workload's pools use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributed {
    pub counts: BackendCounts,
    /// Per subject, in order: the roles seen on its backends.
    pub roles: Vec<BTreeSet<String>>,
}

impl Attributed {
    fn with_subjects(n: usize) -> Self {
        Attributed {
            counts: BackendCounts::new(),
            roles: vec![BTreeSet::new(); n],
        }
    }

    fn add(&mut self, subject: usize, backends: &[&Backend]) {
        for b in backends {
            *self.counts.entry((b.database.clone(), b.user.clone())).or_default() += 1;
            if let (Some(user), Some(roles)) = (&b.user, self.roles.get_mut(subject)) {
                roles.insert(user.clone());
            }
        }
    }
}

/// Records this pass's samples into `history` and returns the decision core's
/// workloads, with what was attributed to them.
pub fn observe(
    policy: &ResolvedPolicy,
    subjects: Vec<Subject>,
    database: Result<&Snapshot, &str>,
    history: &mut History,
    now: Timestamp,
) -> (Vec<Workload>, Attributed) {
    let at = database.map(|s| s.now).unwrap_or(now);
    let per_workload = policy.attribution == Attribution::User;
    let mut attributed = Attributed::with_subjects(subjects.len());
    let live = if per_workload {
        record_per_workload(policy, &subjects, database, history, at, &mut attributed)
    } else {
        record_per_instance(policy, &subjects, database, history, at, &mut attributed)
    };
    trim(policy, history, &live, at, per_workload);
    let workloads = subjects
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
        .collect();
    (workloads, attributed)
}

/// `User` attribution: one sample per workload; returns the keys recorded.
fn record_per_workload(
    policy: &ResolvedPolicy,
    subjects: &[Subject],
    database: Result<&Snapshot, &str>,
    history: &mut History,
    at: Timestamp,
    attributed: &mut Attributed,
) -> BTreeSet<String> {
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
                .zip(subjects)
                .enumerate()
                .map(|(i, (m, s))| {
                    let pods = s.instances.len() as u32;
                    m.map(|bs| {
                        attributed.add(i, &bs);
                        summarise(&limits, &bs, pods, snapshot.now, evidence::group)
                    })
                })
                .collect()
        }
    };
    let mut live = BTreeSet::new();
    for ((s, key), m) in subjects.iter().zip(keys).zip(measured) {
        let pool = policy.pool_stats.is_some().then(|| {
            let claims: Vec<Measured<PoolClaims>> = s.instances.iter().map(claims_of).collect();
            sum_claims(&claims)
        });
        history.record(&key.name, PodSample { at, database: m, pool });
        live.insert(key.name);
    }
    live
}

/// One sample per instance; returns the names recorded.
fn record_per_instance(
    policy: &ResolvedPolicy,
    subjects: &[Subject],
    database: Result<&Snapshot, &str>,
    history: &mut History,
    at: Timestamp,
    attributed: &mut Attributed,
) -> BTreeSet<String> {
    let instances: Vec<(&str, &SubjectInstance)> = subjects
        .iter()
        .flat_map(|s| s.workload.instances.iter().map(|i| i.name.as_str()).zip(&s.instances))
        .collect();
    // The subject of each instance, in the same order.
    let owners: Vec<usize> = subjects
        .iter()
        .enumerate()
        .flat_map(|(i, s)| std::iter::repeat_n(i, s.workload.instances.len().min(s.instances.len())))
        .collect();
    let keys: Vec<PodKey> = instances
        .iter()
        .map(|(name, si)| PodKey {
            name: (*name).to_owned(),
            ip: si.ip,
        })
        .collect();
    let measured: Vec<Measured<PodConnections>> = match database {
        Err(why) => vec![Measured::Unknown(why.to_owned()); keys.len()],
        Ok(snapshot) => {
            let limits = Limits::of(policy);
            let mut pod = 0;
            per_pod(policy.attribution, snapshot, &keys, |bs| {
                attributed.add(owners.get(pod).copied().unwrap_or(usize::MAX), bs);
                pod += 1;
                summarise(&limits, bs, 1, snapshot.now, evidence::group)
            })
            .per_pod
            .into_iter()
            .zip(&instances)
            .map(|(m, (_, si))| named_or_unknown(policy, si, m))
            .collect()
        }
    };
    let mut live = BTreeSet::new();
    for ((name, si), m) in instances.into_iter().zip(measured) {
        let pool = si.pool.clone();
        history.record(name, PodSample { at, database: m, pool });
        live.insert(name.to_owned());
    }
    live
}

/// Under `ApplicationName` attribution an instance that does not report its own
/// name cannot be told apart: its connections are unknown, not none.
fn named_or_unknown(policy: &ResolvedPolicy, si: &SubjectInstance, m: PodConnections) -> Measured<PodConnections> {
    if policy.attribution == Attribution::ApplicationName && !si.names_itself {
        Measured::Unknown(format!(
            "{APPLICATION_NAME_ENV} is not the instance's name yet: its connections cannot be told apart"
        ))
    } else {
        Measured::Known(m)
    }
}

/// An instance's pool claims; unknown when they were not scraped.
fn claims_of(si: &SubjectInstance) -> Measured<PoolClaims> {
    si.pool
        .clone()
        .unwrap_or_else(|| Measured::Unknown("pool stats: not scraped".to_owned()))
}

/// Drops what no judgement needs any more: gone instances, samples older than the
/// rule's window, and runs of samples within the limit.
fn trim(policy: &ResolvedPolicy, history: &mut History, live: &BTreeSet<String>, at: Timestamp, per_workload: bool) {
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
}
