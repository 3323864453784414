//! Pool sizing from measured use (`spec.sizing`, docs/sizing.md): per workload, the
//! peak per window of each pod's connections in use feeds a decaying histogram
//! ([`history`]), from which a maxSize (target, lower and upper bound) and a minSize
//! are recommended ([`recommend`]), and, in Auto mode, written ([`auto`]). Modelled
//! on the Vertical Pod Autoscaler's recommender; pure — the caller keeps the
//! histories and gives the time.

pub mod auto;
pub mod buckets;
pub mod checkpoint;
pub mod histogram;
pub mod history;
pub mod recommend;
pub mod step;
#[cfg(test)]
mod within_budget;

use std::time::Duration;

use jiff::Timestamp;

pub use auto::{AutoDecision, AutoInput};
pub use history::History;
pub use recommend::{Allowed, Recommendation};

use super::input::{Workload, WorkloadKey, WorkloadRef};
use crate::{
    observation::{Measured, PodSample},
    policy::{ResolvedPolicy, sizing::SizingMode},
};

/// Every workload's history, for one policy. A hash map looked up by the
/// workload's borrowed [`super::WorkloadKey`]: a pass clones no name and compares
/// no strings but on a hash match.
pub type Histories = hashbrown::HashMap<WorkloadRef, History>;

/// The peak window in production: one peak per pod and minute.
pub const WINDOW: Duration = Duration::from_secs(60);

/// What the sizing of one workload comes to in a pass, for the decision core.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkloadSizing {
    pub recommendation: Option<Recommendation>,
    /// When Auto last wrote a size for it.
    pub last_write: Option<Timestamp>,
    /// Why there is no recommendation, when there is none.
    pub missing: Option<String>,
}

/// Sizing's part of a plan's input.
#[derive(Clone, Copy, Debug)]
pub struct SizingInput<'a> {
    /// Per workload, in the order of the plan's workloads (empty with sizing Off).
    pub workloads: &'a [WorkloadSizing],
    /// The peak window the histories count in ([`WINDOW`] but in tests).
    pub window: Duration,
}

impl Default for SizingInput<'_> {
    fn default() -> Self {
        SizingInput {
            workloads: &[],
            window: WINDOW,
        }
    }
}

/// A pod's connections in use in one sample: the pool's checked-out count when the
/// policy reads the app's pool stats, else the backends active or idle in a
/// transaction (what a pool has lent out and not had back). `None` when the source
/// could not be read: missing is never zero.
pub fn in_use(sample: &PodSample, reads_pool_stats: bool) -> Option<u32> {
    if reads_pool_stats {
        return match &sample.pool {
            Some(Measured::Known(c)) => Some(c.checked_out),
            _ => None,
        };
    }
    match &sample.database {
        Measured::Known(c) => {
            let c = &c.counts;
            Some(c.active + c.idle_in_transaction + c.idle_in_transaction_aborted)
        }
        Measured::Unknown(_) => None,
    }
}

/// Feeds this pass's samples into the policy's histories and returns every
/// workload's sizing, in input order. With sizing Off the histories are dropped.
/// Histories of workloads no longer selected are kept for a day of windows (a
/// workload missing from one read keeps its history), then dropped.
pub fn observe(
    histories: &mut Histories,
    policy: &ResolvedPolicy,
    workloads: &[Workload],
    now: Timestamp,
    window: Duration,
) -> Vec<WorkloadSizing> {
    if policy.sizing.mode == SizingMode::Off {
        histories.clear();
        return Vec::new();
    }
    let reads_pool_stats = policy.pool_stats.is_some();
    let allowed = Allowed {
        min: policy.sizing.min_allowed,
        max: policy.sizing.max_allowed,
    };
    let sizing = workloads
        .iter()
        .map(|w| {
            let h = histories.entry_ref(&w.key()).or_default();
            let missing = feed(h, w, reads_pool_stats, now, window);
            let recommendation = h.recommendation(allowed);
            WorkloadSizing {
                missing: recommendation
                    .is_none()
                    .then(|| missing.unwrap_or_else(|| "no peak recorded yet".to_owned())),
                recommendation,
                last_write: h.last_write,
            }
        })
        .collect();
    let oldest = history::window_of(now, window) - history::WINDOWS_PER_DAY as i64;
    // Only when some history is a day old (or has no closed window yet) is the
    // pass's selection looked at, through a set: searching the workloads for each
    // would cost a pass n² in a workload's first minute.
    if histories.values().any(|h| h.last_window < oldest) {
        let selected: hashbrown::HashSet<WorkloadKey> = workloads.iter().map(Workload::key).collect();
        histories.retain(|k, h| {
            h.last_window >= oldest
                || selected.contains(&WorkloadKey {
                    kind: k.kind,
                    name: &k.name,
                })
        });
    }
    sizing
}

/// Feeds one workload's newest samples; why nothing could be fed, if so.
fn feed(h: &mut History, w: &Workload, reads_pool_stats: bool, now: Timestamp, window: Duration) -> Option<String> {
    if w.workload_samples.is_some() && !reads_pool_stats {
        // User attribution cannot tell the pods apart, and a pool size is per pod.
        return Some("attribution User cannot tell the pods apart: set poolStats to size pools".to_owned());
    }
    let mut fed = false;
    for i in &w.instances {
        // From the back: the platform keeps a pod's samples oldest first
        // (`observe::History`), so the first one at or before `now` is the newest and
        // the rest (a run of up to sustainedFor's length) is not read. Out of order,
        // it is still a real sample of the pod's, not a guess.
        let newest = i.samples.iter().rev().find(|s| s.at <= now);
        if let Some((s, v)) = newest.and_then(|s| in_use(s, reads_pool_stats).map(|v| (s, v))) {
            h.observe(&i.name, v, s.at, window);
            fed = true;
        }
    }
    h.close_before(now, window);
    (!fed).then(|| "no pod's connections in use are known".to_owned())
}
