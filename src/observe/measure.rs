//! From one database snapshot to one [`PodConnections`] per pod: attribution, then
//! each pod's backends summarised by the caller (against the policy's measure, which
//! the decision core owns: `decide::measure::summarise`). Pure.

use super::{
    attribution::{PodKey, attribute},
    backend::Backend,
    postgres::Snapshot,
};
use crate::{observation::PodConnections, policy::Attribution};

/// Per pod (same order as `pods`), and the backends that could not be placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerPodConnections {
    pub per_pod: Vec<PodConnections>,
    pub ambiguous: usize,
    pub unattributed: usize,
}

/// Attributes the snapshot's backends to `pods` and summarises each pod's with
/// `summarise`; the backend lists are dropped here, only the summaries are kept.
pub fn per_pod(
    attribution: Attribution,
    snapshot: &Snapshot,
    pods: &[PodKey],
    mut summarise: impl FnMut(&[&Backend]) -> PodConnections,
) -> PerPodConnections {
    let attributed = attribute(attribution, &snapshot.backends, pods);
    PerPodConnections {
        per_pod: attributed.per_pod.iter().map(|backends| summarise(backends)).collect(),
        ambiguous: attributed.ambiguous.len(),
        unattributed: attributed.unattributed.len(),
    }
}
