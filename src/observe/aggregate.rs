//! Per-pod (or, with `User` attribution, per-workload) aggregates for the decision
//! core: counts by state, oldest ages, and the leak measures of DESIGN.md. Pure; `now` is the database's own `now()` from the
//! same query, so the operator's clock skew cannot fake an overrun.

use std::time::Duration;

use jiff::Timestamp;

use super::backend::Backend;
use crate::{
    observation::{Measured, PodConnections, PoolClaims},
    policy::ConnectionCounts,
};

/// The pool limits the measures are computed against (grace already added).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// maxLifetimeSeconds + grace; `None` when the policy sets no lifetime.
    pub lifetime: Option<Duration>,
    /// maxIdleSeconds + grace; `None` when the policy sets no idle limit.
    pub idle: Option<Duration>,
    /// minSize: idle connections the pool may keep, not counted as idle overrun.
    pub min_size: u32,
    /// Which backends are grouped into [`PodConnections::evidence`].
    pub evidence: EvidenceScope,
}

/// The backends a leak is made of, for the policy's measure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EvidenceScope {
    /// No leak is judged: no evidence is gathered.
    #[default]
    Off,
    /// Backends older than the lifetime limit (LifetimeOverrun).
    Lifetime,
    /// Idle backends idle longer than the idle limit (IdleOverrun).
    Idle,
    /// Every backend: a measure that compares counts (DatabaseMinusTracked,
    /// PoolMinusTracked) cannot tell a leaked backend from a tracked one.
    All,
}

impl Limits {
    /// The limits for a whole workload of `pods` pods (`User` attribution): each pod's
    /// pool may keep minSize idle connections, so the workload may keep `pods` times as
    /// many. Ages are per connection and stay as they are.
    pub fn for_workload(self, pods: u32) -> Limits {
        Limits {
            min_size: self.min_size.saturating_mul(pods),
            ..self
        }
    }
}

/// The pool claims of a whole workload (`User` attribution): the sum over its pods,
/// unknown when any pod's is — a missing pod is never counted as zero.
pub fn sum_claims<'a>(pods: impl IntoIterator<Item = &'a Measured<PoolClaims>>) -> Measured<PoolClaims> {
    let mut sum = PoolClaims::default();
    for claims in pods {
        match claims {
            Measured::Known(c) => {
                sum.checked_out += c.checked_out;
                sum.tracked_active += c.tracked_active;
            }
            Measured::Unknown(why) => return Measured::Unknown(why.clone()),
        }
    }
    Measured::Known(sum)
}

/// Aggregates one pod's backends (or one workload's, with [`Limits::for_workload`]).
pub fn aggregate(backends: &[&Backend], limits: Limits, now: Timestamp) -> PodConnections {
    // A backend that started after `now` (it cannot, on one clock) counts as age zero.
    let age = |t: Option<Timestamp>| t.map(|t| Duration::try_from(now.duration_since(t)).unwrap_or(Duration::ZERO));
    let mut counts = ConnectionCounts::default();
    let mut out = PodConnections::default();
    let mut idle_over = 0u32;
    let mut overrunning: Vec<&Backend> = Vec::new();
    for b in backends {
        counts.total += 1;
        // https://www.postgresql.org/docs/current/monitoring-stats.html#MONITORING-PG-STAT-ACTIVITY-VIEW
        match b.state.as_deref() {
            Some("active") => counts.active += 1,
            Some("idle") => counts.idle += 1,
            Some("idle in transaction") => counts.idle_in_transaction += 1,
            Some("idle in transaction (aborted)") => counts.idle_in_transaction_aborted += 1,
            _ => counts.other += 1,
        }
        let backend_age = age(b.backend_start);
        out.oldest_backend_age = out.oldest_backend_age.max(backend_age);
        let over_lifetime = limits
            .lifetime
            .is_some_and(|limit| backend_age.is_some_and(|a| a > limit));
        if over_lifetime {
            out.lifetime_overrun += 1;
        }
        let mut over_idle = false;
        if b.state.as_deref() == Some("idle") {
            let idle_for = age(b.state_change);
            out.oldest_idle_age = out.oldest_idle_age.max(idle_for);
            over_idle = limits.idle.is_some_and(|limit| idle_for.is_some_and(|a| a > limit));
            if over_idle {
                idle_over += 1;
            }
        }
        let in_evidence = match limits.evidence {
            EvidenceScope::Off => false,
            EvidenceScope::Lifetime => over_lifetime,
            EvidenceScope::Idle => over_idle,
            EvidenceScope::All => true,
        };
        if in_evidence {
            overrunning.push(b);
        }
    }
    out.evidence = super::evidence::group(&overrunning);
    // A pool may keep minSize idle connections forever; only the ones beyond are overruns.
    out.idle_overrun = idle_over.saturating_sub(limits.min_size);
    out.counts = counts;
    out
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use super::*;

    fn backend(state: &str, started_secs_ago: i64, changed_secs_ago: i64, now: Timestamp) -> Backend {
        Backend {
            pid: 1,
            database: None,
            user: None,
            application_name: "web-1".into(),
            client_addr: None,
            backend_start: Some(now - SignedDuration::from_secs(started_secs_ago)),
            state: Some(state.into()),
            state_change: Some(now - SignedDuration::from_secs(changed_secs_ago)),
            xact_start: None,
            ..Backend::default()
        }
    }

    #[test]
    fn counts_states_and_overruns_against_the_limits() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let bs = [
            backend("active", 30, 1, now),
            backend("idle", 700, 90, now),
            backend("idle", 800, 100, now),
            backend("idle", 20, 5, now),
            backend("idle in transaction", 50, 40, now),
            backend("idle in transaction (aborted)", 50, 40, now),
        ];
        let refs: Vec<&Backend> = bs.iter().collect();
        let limits = Limits {
            lifetime: Some(Duration::from_secs(660)),
            idle: Some(Duration::from_secs(60)),
            min_size: 1,
            ..Limits::default()
        };
        let c = aggregate(&refs, limits, now);
        assert_eq!(
            c.counts,
            ConnectionCounts {
                total: 6,
                active: 1,
                idle: 3,
                idle_in_transaction: 1,
                idle_in_transaction_aborted: 1,
                other: 0
            }
        );
        assert_eq!(c.lifetime_overrun, 2);
        assert_eq!(c.idle_overrun, 1, "two idle past 60 s, one of them allowed by minSize");
        assert_eq!(c.oldest_backend_age, Some(Duration::from_secs(800)));
        assert_eq!(c.oldest_idle_age, Some(Duration::from_secs(100)));
    }

    #[test]
    fn a_workload_may_keep_min_size_idle_connections_per_pod() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let bs: Vec<Backend> = (0..5).map(|_| backend("idle", 500, 300, now)).collect();
        let limits = Limits {
            idle: Some(Duration::from_secs(60)),
            min_size: 2,
            ..Limits::default()
        };
        let refs: Vec<&Backend> = bs.iter().collect();
        assert_eq!(aggregate(&refs, limits, now).idle_overrun, 3);
        assert_eq!(aggregate(&refs, limits.for_workload(2), now).idle_overrun, 1);
        assert_eq!(limits.for_workload(2).idle, limits.idle);
    }

    #[test]
    fn a_workload_claims_the_sum_of_its_pods_or_unknown() {
        let pod = |checked_out, tracked_active| {
            Measured::Known(PoolClaims {
                checked_out,
                tracked_active,
            })
        };
        assert_eq!(
            sum_claims(&[pod(5, 3), pod(7, 7)]),
            Measured::Known(PoolClaims {
                checked_out: 12,
                tracked_active: 10
            })
        );
        assert_eq!(
            sum_claims(&[pod(5, 3), Measured::Unknown("timeout".into())]),
            Measured::Unknown("timeout".into())
        );
    }

    #[test]
    fn no_limits_means_no_overruns() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let bs = [backend("idle", 10_000, 10_000, now)];
        let c = aggregate(&bs.iter().collect::<Vec<_>>(), Limits::default(), now);
        assert_eq!((c.lifetime_overrun, c.idle_overrun), (0, 0));
    }
}
