//! Each leak measure of [`Measure`], in one place: the limit it holds a backend to,
//! the backends its evidence is made of, and its value in a sample — one
//! [`definition`] per measure, so a new measure is a `Measure` variant and one arm.
//!
//! Observation hands over facts that do not depend on the policy (each pod's
//! backends); [`summarise`] turns them into the [`PodConnections`] history keeps, so
//! history holds a few numbers per sample, never the backends. Pure; `now` is the
//! database's own `now()` from the same query, so the operator's clock skew cannot
//! fake an overrun.

use std::time::Duration;

use jiff::Timestamp;

use super::keeping::{Judgement, Keeping};
use crate::{
    observation::{Backend, BackendGroup, Measured, PodConnections, PodSample},
    policy::{ConnectionCounts, Measure, PoolSettings, ResolvedPolicy},
};

/// What a measure holds one backend to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendLimit {
    /// Which age of the backend is measured.
    pub age: Age,
    /// A backend whose age is above this overruns (the policy's limit, grace added).
    pub max: Duration,
    /// Idle backends past the limit a pod's pool may keep (minSize).
    pub allowed_per_pod: u32,
    /// Which backends past the limit the policy's library keeps itself.
    pub keeping: Keeping,
}

/// An age of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Age {
    /// Since it connected (`now - backend_start`).
    Connected,
    /// How long it has been in this `pg_stat_activity.state` (`now - state_change`).
    InState(&'static str),
}

impl BackendLimit {
    /// Older than `max` since it connected, for a pool that recycles its
    /// connections at their lifetime.
    pub fn lifetime(max: Duration) -> BackendLimit {
        BackendLimit {
            age: Age::Connected,
            max,
            allowed_per_pod: 0,
            keeping: Keeping::AT_LIMITS,
        }
    }

    /// Idle for longer than `max`, beyond the `allowed_per_pod` idle connections a pool
    /// may keep forever (minSize).
    pub fn idle(max: Duration, allowed_per_pod: u32) -> BackendLimit {
        BackendLimit {
            // https://www.postgresql.org/docs/current/monitoring-stats.html#MONITORING-PG-STAT-ACTIVITY-VIEW
            age: Age::InState("idle"),
            max,
            allowed_per_pod,
            keeping: Keeping::AT_LIMITS,
        }
    }

    /// The same limit for a pool that keeps what `keeping` says, and `min_size` idle
    /// connections per pod.
    pub fn kept_by(self, keeping: Keeping, min_size: u32) -> BackendLimit {
        BackendLimit {
            keeping,
            allowed_per_pod: min_size,
            ..self
        }
    }

    fn judge(&self, b: &Backend, now: Timestamp) -> Judgement {
        match self.age {
            Age::Connected => match b.backend_start {
                Some(start) if age(Some(start), now).is_some_and(|a| a > self.max) => {
                    let deadline = crate::timing::after(start, self.max);
                    self.keeping.past_lifetime(b, deadline, now)
                }
                _ => Judgement::Within,
            },
            Age::InState(state) if b.state.as_deref() == Some(state) => {
                if age(b.state_change, now).is_some_and(|a| a > self.max) {
                    Judgement::Kept
                } else {
                    Judgement::Within
                }
            }
            Age::InState(_) => Judgement::Within,
        }
    }
}

/// The backends a leak is made of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EvidenceScope {
    /// No leak is judged: no evidence is gathered.
    #[default]
    Off,
    /// The backends over the measure's [`BackendLimit`].
    Overrunning,
    /// Every backend: a measure that compares counts (DatabaseMinusTracked,
    /// PoolMinusTracked) cannot tell a leaked backend from a tracked one.
    All,
}

/// What a summary counts and gathers; made once per pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// The measure `overrun` is counted for; `None` when no leak is judged.
    pub measure: Option<Measure>,
    /// `None` counts no backend as overrunning.
    pub backend: Option<BackendLimit>,
    pub evidence: EvidenceScope,
}

impl Limits {
    /// The limits of the policy's measure.
    pub fn of(policy: &ResolvedPolicy) -> Limits {
        let Some(rule) = &policy.discrepancy else {
            return Limits::default();
        };
        Limits {
            measure: Some(rule.measure),
            backend: backend_limit(rule.measure, &policy.pool, rule.grace),
            evidence: evidence_scope(rule.measure),
        }
    }
}

/// What one measure is: the limit it holds each backend to, the backends its
/// evidence is made of, and its value in a sample.
struct Definition {
    /// From the pool settings poolwarden enforces and the grace; `None` for a measure
    /// that compares counts, or when the policy sets no such limit.
    backend_limit: fn(&PoolSettings, Duration) -> Option<BackendLimit>,
    evidence: EvidenceScope,
    /// From the sample's database summary and pool claims (each read lazily, with
    /// why it is unknown).
    value: fn(Measure, &Facts) -> Result<u32, String>,
}

/// The parts of a sample a measure's value is read from.
struct Facts<'a> {
    sample: &'a PodSample,
}

impl Facts<'_> {
    fn database(&self) -> Result<&PodConnections, String> {
        match &self.sample.database {
            Measured::Known(c) => Ok(c),
            Measured::Unknown(why) => Err(format!("database: {why}")),
        }
    }

    fn pool(&self) -> Result<&crate::observation::PoolClaims, String> {
        match &self.sample.pool {
            Some(Measured::Known(p)) => Ok(p),
            Some(Measured::Unknown(why)) => Err(format!("pool stats: {why}")),
            None => Err("pool stats: not configured".to_owned()),
        }
    }
}

/// Every measure, one arm each: adding a measure is a [`Measure`] variant and an arm here.
fn definition(measure: Measure) -> Definition {
    fn plus(secs: u32, grace: Duration) -> Duration {
        Duration::from_secs(secs.into()).saturating_add(grace)
    }
    match measure {
        Measure::LifetimeOverrun => Definition {
            backend_limit: |pool, grace| {
                let (keeping, min) = (Keeping::of(pool, grace), pool.library.facts().min_size(pool));
                pool.max_lifetime_seconds
                    .map(|s| BackendLimit::lifetime(plus(s, grace)).kept_by(keeping, min))
            },
            evidence: EvidenceScope::Overrunning,
            value: |m, f| f.database().and_then(|c| overrun(c, m)),
        },
        Measure::IdleOverrun => Definition {
            backend_limit: |pool, grace| {
                let (keeping, min) = (Keeping::of(pool, grace), pool.library.facts().min_size(pool));
                pool.max_idle_seconds
                    .map(|s| BackendLimit::idle(plus(s, grace), min).kept_by(keeping, min))
            },
            evidence: EvidenceScope::Overrunning,
            value: |m, f| f.database().and_then(|c| overrun(c, m)),
        },
        Measure::DatabaseMinusTracked => Definition {
            backend_limit: |_, _| None,
            evidence: EvidenceScope::All,
            value: |_, f| {
                let total = f.database()?.counts.total;
                Ok(total.saturating_sub(f.pool()?.tracked_active))
            },
        },
        Measure::PoolMinusTracked => Definition {
            backend_limit: |_, _| None,
            evidence: EvidenceScope::All,
            value: |_, f| f.pool().map(|p| p.checked_out.saturating_sub(p.tracked_active)),
        },
    }
}

/// The limit a measure holds each backend to, from the pool settings poolwarden
/// enforces (grace added); `None` for a measure that compares counts, or when the
/// policy sets no such limit.
pub fn backend_limit(measure: Measure, pool: &PoolSettings, grace: Duration) -> Option<BackendLimit> {
    (definition(measure).backend_limit)(pool, grace)
}

/// The backends a leak of `measure` is made of.
pub fn evidence_scope(measure: Measure) -> EvidenceScope {
    definition(measure).evidence
}

/// The measure's value in one sample, or why it is unknown.
pub fn value(measure: Measure, sample: &PodSample) -> Measured<u32> {
    (definition(measure).value)(measure, &Facts { sample }).into()
}

/// The overrun a summary counted for `measure`.
fn overrun(c: &PodConnections, measure: Measure) -> Result<u32, String> {
    match c.measure {
        Some(m) if m == measure => Ok(c.overrun),
        // The policy's measure was edited: the sample counted another one.
        _ => Err(format!("database: sampled before the measure became {measure:?}")),
    }
}

/// Summarises one pod's backends (or, with `User` attribution, one workload's of
/// `pods` pods, which may keep `pods` times the allowed overruns; ages are per
/// connection and stay as they are). `group` groups the evidence's backends (observe
/// normalises their statements); it is called with no backend when there is none.
pub fn summarise(
    limits: &Limits,
    backends: &[&Backend],
    pods: u32,
    now: Timestamp,
    group: impl FnOnce(&[&Backend]) -> Vec<BackendGroup>,
) -> PodConnections {
    let mut out = PodConnections {
        measure: limits.measure,
        ..PodConnections::default()
    };
    let mut over: Vec<&Backend> = Vec::new();
    let mut kept: Vec<(Duration, &Backend)> = Vec::new();
    let mut idle_ages: Vec<Duration> = Vec::new();
    for b in backends {
        count(&mut out.counts, b.state.as_deref());
        out.oldest_backend_age = out.oldest_backend_age.max(age(b.backend_start, now));
        let idle_age = age(b.state_change, now);
        if b.state.as_deref() == Some("idle") {
            out.oldest_idle_age = out.oldest_idle_age.max(idle_age);
            idle_ages.extend(idle_age);
        }
        match limits.backend.map(|l| l.judge(b, now)) {
            Some(Judgement::Over) => over.push(b),
            Some(Judgement::Kept) => kept.push((idle_age.unwrap_or_default(), b)),
            Some(Judgement::Within) | None => {}
        }
    }
    let excess = match limits.backend {
        Some(l) => l.keeping.excess(
            kept,
            &idle_ages,
            backends.len(),
            l.allowed_per_pod.saturating_mul(pods),
            pods,
        ),
        None => Vec::new(),
    };
    out.overrun = u32::try_from(over.len() + excess.len()).unwrap_or(u32::MAX);
    let evidence: Vec<&Backend> = match limits.evidence {
        EvidenceScope::Off => Vec::new(),
        EvidenceScope::Overrunning => over.into_iter().chain(excess).collect(),
        EvidenceScope::All => backends.to_vec(),
    };
    out.evidence = group(&evidence);
    out
}

/// `now - t`; a backend that started after `now` (it cannot, on one clock) counts as
/// age zero.
fn age(t: Option<Timestamp>, now: Timestamp) -> Option<Duration> {
    t.map(|t| Duration::try_from(now.duration_since(t)).unwrap_or(Duration::ZERO))
}

fn count(counts: &mut ConnectionCounts, state: Option<&str>) {
    counts.total += 1;
    // https://www.postgresql.org/docs/current/monitoring-stats.html#MONITORING-PG-STAT-ACTIVITY-VIEW
    match state {
        Some("active") => counts.active += 1,
        Some("idle") => counts.idle += 1,
        Some("idle in transaction") => counts.idle_in_transaction += 1,
        Some("idle in transaction (aborted)") => counts.idle_in_transaction_aborted += 1,
        _ => counts.other += 1,
    }
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

    fn limits(measure: Measure, backend: BackendLimit) -> Limits {
        Limits {
            measure: Some(measure),
            backend: Some(backend),
            evidence: EvidenceScope::Off,
        }
    }

    fn no_groups(_: &[&Backend]) -> Vec<BackendGroup> {
        Vec::new()
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
        let lifetime = limits(
            Measure::LifetimeOverrun,
            BackendLimit::lifetime(Duration::from_secs(660)),
        );
        let idle = limits(Measure::IdleOverrun, BackendLimit::idle(Duration::from_secs(60), 1));
        let c = summarise(&lifetime, &refs, 1, now, no_groups);
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
        assert_eq!(c.overrun, 2);
        assert_eq!(
            summarise(&idle, &refs, 1, now, no_groups).overrun,
            1,
            "two idle past 60 s, one of them allowed by minSize"
        );
        assert_eq!(c.oldest_backend_age, Some(Duration::from_secs(800)));
        assert_eq!(c.oldest_idle_age, Some(Duration::from_secs(100)));
    }

    #[test]
    fn a_workload_may_keep_min_size_idle_connections_per_pod() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let bs: Vec<Backend> = (0..5).map(|_| backend("idle", 500, 300, now)).collect();
        let idle = limits(Measure::IdleOverrun, BackendLimit::idle(Duration::from_secs(60), 2));
        let refs: Vec<&Backend> = bs.iter().collect();
        assert_eq!(summarise(&idle, &refs, 1, now, no_groups).overrun, 3);
        assert_eq!(summarise(&idle, &refs, 2, now, no_groups).overrun, 1);
    }

    #[test]
    fn no_limits_means_no_overruns() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let bs = [backend("idle", 10_000, 10_000, now)];
        let c = summarise(&Limits::default(), &bs.iter().collect::<Vec<_>>(), 1, now, no_groups);
        assert_eq!((c.overrun, c.measure), (0, None));
    }

    #[test]
    fn the_evidence_is_of_the_backends_in_the_measures_scope() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let bs = [backend("idle", 700, 90, now), backend("active", 30, 1, now)];
        let refs: Vec<&Backend> = bs.iter().collect();
        let pids = |scope| {
            let limits = Limits {
                evidence: scope,
                ..limits(
                    Measure::LifetimeOverrun,
                    BackendLimit::lifetime(Duration::from_secs(600)),
                )
            };
            let mut seen = 0;
            summarise(&limits, &refs, 1, now, |bs| {
                seen = bs.len();
                Vec::new()
            });
            seen
        };
        assert_eq!(
            (
                pids(EvidenceScope::Off),
                pids(EvidenceScope::Overrunning),
                pids(EvidenceScope::All)
            ),
            (0, 1, 2)
        );
    }

    #[test]
    fn a_sample_counted_for_another_measure_is_unknown_to_this_one() {
        let sample = |measure| PodSample {
            at: Timestamp::from_second(1_800_000_000).unwrap(),
            database: Measured::Known(PodConnections {
                overrun: 4,
                measure,
                ..PodConnections::default()
            }),
            pool: None,
        };
        assert_eq!(
            value(Measure::LifetimeOverrun, &sample(Some(Measure::LifetimeOverrun))),
            Measured::Known(4)
        );
        assert!(matches!(
            value(Measure::IdleOverrun, &sample(Some(Measure::LifetimeOverrun))),
            Measured::Unknown(_)
        ));
    }

    #[test]
    fn the_policys_measure_picks_its_limit_and_scope() {
        let pool: PoolSettings = serde_json::from_value(serde_json::json!(
            {"minSize": 2, "maxSize": 20, "maxIdleSeconds": 60, "maxLifetimeSeconds": 600}
        ))
        .unwrap();
        let grace = Duration::from_secs(30);
        assert_eq!(
            backend_limit(Measure::LifetimeOverrun, &pool, grace),
            Some(BackendLimit {
                allowed_per_pod: 2,
                keeping: Keeping {
                    grace,
                    ..Keeping::AT_LIMITS
                },
                ..BackendLimit::lifetime(Duration::from_secs(630))
            })
        );
        assert_eq!(
            backend_limit(Measure::IdleOverrun, &pool, grace),
            Some(BackendLimit {
                keeping: Keeping {
                    grace,
                    ..Keeping::AT_LIMITS
                },
                ..BackendLimit::idle(Duration::from_secs(90), 2)
            })
        );
        assert_eq!(backend_limit(Measure::DatabaseMinusTracked, &pool, grace), None);
        assert_eq!(evidence_scope(Measure::PoolMinusTracked), EvidenceScope::All);
        assert_eq!(evidence_scope(Measure::IdleOverrun), EvidenceScope::Overrunning);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;
        use crate::policy::PoolLibrary;

        /// A backend: seconds since it connected, its state, seconds in that state,
        /// and seconds since its transaction began.
        fn backend() -> impl Strategy<Value = (i64, u8, i64, i64)> {
            (0i64..4000, 0u8..4, 0i64..4000, 0i64..4000)
        }

        fn build(now: Timestamp, (started, state, changed, xact): (i64, u8, i64, i64)) -> Backend {
            let state = ["idle", "active", "idle in transaction", "idle in transaction (aborted)"][usize::from(state)];
            let changed = changed.min(started);
            Backend {
                backend_start: Some(now - SignedDuration::from_secs(started)),
                state: Some(state.into()),
                state_change: Some(now - SignedDuration::from_secs(changed)),
                xact_start: (state != "idle").then(|| now - SignedDuration::from_secs(xact.clamp(changed, started))),
                ..Backend::default()
            }
        }

        fn policy(library: PoolLibrary, min: u32) -> PoolSettings {
            serde_json::from_value(serde_json::json!({
                "library": library, "minSize": min, "maxSize": min + 8,
                "maxIdleSeconds": 60, "maxLifetimeSeconds": 600
            }))
            .unwrap()
        }

        proptest! {
            /// Generic keeps the rule poolwarden always had: every backend older than
            /// lifetime + grace, and idle ones past idle + grace beyond minSize.
            #[test]
            fn the_generic_rule_is_unchanged(bs in prop::collection::vec(backend(), 0..30), min in 0u32..5) {
                let now = Timestamp::from_second(1_800_000_000).unwrap();
                let bs: Vec<Backend> = bs.into_iter().map(|b| build(now, b)).collect();
                let refs: Vec<&Backend> = bs.iter().collect();
                let pool = policy(PoolLibrary::Generic, min);
                let grace = Duration::from_secs(60);
                let count = |measure| {
                    let limits = Limits {
                        measure: Some(measure),
                        backend: backend_limit(measure, &pool, grace),
                        evidence: EvidenceScope::Overrunning,
                    };
                    let mut evidence = 0;
                    let c = summarise(&limits, &refs, 1, now, |e| { evidence = e.len(); Vec::new() });
                    (c.overrun, evidence)
                };
                let old = |b: &&Backend| age(b.backend_start, now).is_some_and(|a| a > Duration::from_secs(660));
                let lifetime = u32::try_from(bs.iter().filter(old).count()).unwrap();
                prop_assert_eq!(count(Measure::LifetimeOverrun), (lifetime, lifetime as usize));
                let idle = |b: &&Backend| b.state.as_deref() == Some("idle")
                    && age(b.state_change, now).is_some_and(|a| a > Duration::from_secs(120));
                let idle = u32::try_from(bs.iter().filter(idle).count()).unwrap().saturating_sub(min);
                prop_assert_eq!(count(Measure::IdleOverrun).0, idle);
            }

            /// A library's rule only ever takes backends out of the lifetime count:
            /// what it counts, the Generic rule counts too.
            #[test]
            fn no_library_counts_a_lifetime_overrun_the_generic_rule_would_not(
                bs in prop::collection::vec(backend(), 0..30),
                min in 0u32..5,
                library in prop::sample::select(PoolLibrary::ALL.to_vec()),
            ) {
                let now = Timestamp::from_second(1_800_000_000).unwrap();
                let bs: Vec<Backend> = bs.into_iter().map(|b| build(now, b)).collect();
                let refs: Vec<&Backend> = bs.iter().collect();
                let grace = Duration::from_secs(60);
                let count = |library| {
                    let limits = Limits {
                        measure: Some(Measure::LifetimeOverrun),
                        backend: backend_limit(Measure::LifetimeOverrun, &policy(library, min.max(1)), grace),
                        evidence: EvidenceScope::Off,
                    };
                    summarise(&limits, &refs, 1, now, |_| Vec::new()).overrun
                };
                prop_assert!(count(library) <= count(PoolLibrary::Generic));
            }
        }
    }
}
