//! Sizing's part of a plan: per workload, the pool settings its env must carry
//! (Auto mode: its own; otherwise the policy's), its status row's recommendation,
//! and whether Auto refused for want of budget.

use std::time::Duration;

use super::{
    WorkloadSizing,
    auto::{self, AutoDecision, AutoInput},
};
use crate::{
    decide::{
        conditions::Wanted,
        env::selected_containers,
        input::{EnvValue, PlanInput, Workload},
    },
    policy::{
        PoolSettings, ResolvedPolicy,
        condition::{reason, type_},
        library::pool_env,
        sizing::{SizingMode, SizingStatus},
    },
};

/// Sizing's decisions for every workload, in input order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SizingStep {
    /// Per workload: the pool settings to write in place of the policy's (Auto).
    pub pools: Vec<Option<PoolSettings>>,
    /// Per workload: its row's recommendation.
    pub rows: Vec<Option<SizingStatus>>,
    /// Per workload: Auto writes new sizes now.
    pub writes: Vec<bool>,
    /// `kind/name: why` of every workload Auto refused for want of budget.
    pub refused: Vec<String>,
}

/// A workload the input has no sizing for.
const UNSIZED: WorkloadSizing = WorkloadSizing {
    recommendation: None,
    last_write: None,
    missing: None,
};

/// Decides sizing for every workload of the plan.
pub fn step(input: &PlanInput) -> SizingStep {
    let policy = input.policy;
    let mut step = SizingStep::default();
    if policy.sizing.mode == SizingMode::Off {
        return step;
    }
    let days = |d: Duration| d.as_secs_f64() / (input.sizing.window.as_secs_f64() * super::history::WINDOWS_PER_DAY);
    // The variables' names, once for every workload (rendering them allocates).
    let names = Names::of(policy);
    for (i, w) in input.workloads.iter().enumerate() {
        let s = input.sizing.workloads.get(i).unwrap_or(&UNSIZED);
        let current = current_value(policy, w, names.max.as_deref());
        let decision = (policy.sizing.mode == SizingMode::Auto).then(|| {
            auto::decide(&AutoInput {
                recommendation: s.recommendation.as_ref(),
                current,
                last_write: s.last_write,
                update_interval: policy.sizing.update_interval,
                min_confidence: days(policy.sizing.min_confidence),
                // The database budget's room for this workload (`decide::budget`).
                cap: input
                    .budget
                    .and_then(|b| crate::decide::budget::max_size_cap(b, &b.claim_id(w.reference()))),
                now: input.now,
            })
        });
        let (pool, message) = match &decision {
            Some(AutoDecision::Set { max_size, min_size }) => (
                Some(sized(&policy.pool, *max_size, *min_size)),
                Some(format!("Auto set maxSize {max_size}, minSize {min_size}")),
            ),
            Some(AutoDecision::Hold(why)) => (held(policy, w, current, &names), Some(why.clone())),
            Some(AutoDecision::Refuse(why)) => {
                step.refused.push(format!("{}/{}: {why}", w.kind, w.name));
                (held(policy, w, current, &names), Some(why.clone()))
            }
            None => (None, None),
        };
        step.writes.push(matches!(decision, Some(AutoDecision::Set { .. })));
        step.pools.push(pool);
        step.rows.push(row(s, current, message));
    }
    step
}

/// The row's recommendation, or why there is none.
fn row(s: &WorkloadSizing, current: Option<u32>, message: Option<String>) -> Option<SizingStatus> {
    let r = s.recommendation.as_ref()?;
    Some(SizingStatus {
        target: r.target,
        lower_bound: r.lower,
        upper_bound: r.upper,
        min_size: r.min_size,
        current,
        confidence_hours: (r.confidence * 24.0).floor() as u32,
        message: message.or_else(|| s.missing.clone()),
    })
}

/// The policy's pool settings with Auto's sizes.
fn sized(pool: &PoolSettings, max_size: u32, min_size: u32) -> PoolSettings {
    PoolSettings {
        max_size,
        min_size: pool.min_size.map(|_| min_size).or((min_size > 0).then_some(min_size)),
        ..pool.clone()
    }
}

/// What Auto holds a workload at when it writes nothing new: the sizes its env
/// carries now (another Auto write, which the policy's own sizes must not undo),
/// or, when they cannot be read, the policy's.
fn held(policy: &ResolvedPolicy, w: &Workload, current: Option<u32>, names: &Names) -> Option<PoolSettings> {
    let max_size = current?;
    let min_size = current_value(policy, w, names.min.as_deref()).map(|m| m.min(max_size));
    Some(PoolSettings {
        max_size,
        min_size: min_size.or(policy.pool.min_size.map(|m| m.min(max_size))),
        ..policy.pool.clone()
    })
}

/// The maxSize a workload's env carries, read as the plan reads it (for the
/// database budget's claims: `decide::budget::build::claims`).
pub struct RunningSize(Names);

impl RunningSize {
    pub fn of(policy: &ResolvedPolicy) -> Self {
        RunningSize(Names::of(policy))
    }

    /// The largest literal maxSize its selected containers carry; `None` when none
    /// can be read (or the library has no such setting).
    pub fn max_size(&self, policy: &ResolvedPolicy, w: &Workload) -> Option<u32> {
        current_value(policy, w, self.0.max.as_deref())
    }
}

/// The variables that carry maxSize and minSize for the policy's library.
struct Names {
    max: Option<String>,
    min: Option<String>,
}

impl Names {
    fn of(policy: &ResolvedPolicy) -> Names {
        let env = pool_env(&policy.pool);
        let name = |field: &str| env.iter().find(|e| e.field == field).and_then(|e| e.name.clone());
        Names {
            max: name("maxSize"),
            min: name("minSize"),
        }
    }
}

/// What the workload's selected containers run with under variable `name`: the
/// largest literal count; `None` when none can be read.
fn current_value(policy: &ResolvedPolicy, w: &Workload, name: Option<&str>) -> Option<u32> {
    let name = name?;
    selected_containers(policy, &w.containers)
        .filter_map(|c| match c.env.get(name) {
            Some(EnvValue::Literal(v)) => v.trim().parse::<u32>().ok(),
            _ => None,
        })
        .max()
}

/// `SizingRefused`, in Auto mode only: True while Auto cannot fit some workload's
/// recommendation within the database budget above its lower bound.
pub fn condition(policy: &ResolvedPolicy, refused: &[String]) -> Option<Wanted> {
    if policy.sizing.mode != SizingMode::Auto {
        return None;
    }
    Some(Wanted {
        type_: type_::SIZING_REFUSED,
        status: !refused.is_empty(),
        reason: if refused.is_empty() {
            reason::SIZES_FIT
        } else {
            reason::BUDGET_BELOW_LOWER_BOUND
        },
        message: crate::decide::summary::join_bounded(refused),
    })
}
