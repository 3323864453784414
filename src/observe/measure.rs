//! From one database snapshot to one [`PodConnections`] per pod: attribution, then
//! the per-pod aggregates against the policy's limits. Pure.

use std::time::Duration;

use super::{
    aggregate::{EvidenceScope, Limits, aggregate},
    attribution::{PodKey, attribute},
    postgres::Snapshot,
};
use crate::{
    observation::PodConnections,
    policy::{Measure, ResolvedPolicy},
};

/// The limits the leak measures of a policy are computed against (grace added).
pub fn limits(policy: &ResolvedPolicy) -> Limits {
    let grace = policy.discrepancy.as_ref().map(|d| d.grace).unwrap_or(Duration::ZERO);
    Limits {
        lifetime: policy
            .pool
            .max_lifetime_seconds
            .map(|s| Duration::from_secs(s.into()).saturating_add(grace)),
        idle: policy
            .pool
            .max_idle_seconds
            .map(|s| Duration::from_secs(s.into()).saturating_add(grace)),
        min_size: policy.pool.min_size.unwrap_or(0),
        evidence: match policy.discrepancy.as_ref().map(|d| d.measure) {
            None => EvidenceScope::Off,
            Some(Measure::LifetimeOverrun) => EvidenceScope::Lifetime,
            Some(Measure::IdleOverrun) => EvidenceScope::Idle,
            Some(Measure::DatabaseMinusTracked | Measure::PoolMinusTracked) => EvidenceScope::All,
        },
    }
}

/// Per pod (same order as `pods`), and the backends that could not be placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measured {
    pub per_pod: Vec<PodConnections>,
    pub ambiguous: usize,
    pub unattributed: usize,
}

pub fn per_pod(policy: &ResolvedPolicy, snapshot: &Snapshot, pods: &[PodKey]) -> Measured {
    let attributed = attribute(policy.attribution, &snapshot.backends, pods);
    let limits = limits(policy);
    Measured {
        per_pod: attributed
            .per_pod
            .iter()
            .map(|backends| aggregate(backends, limits, snapshot.now))
            .collect(),
        ambiguous: attributed.ambiguous.len(),
        unattributed: attributed.unattributed.len(),
    }
}
