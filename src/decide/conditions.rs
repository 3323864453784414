//! Rule 6 — conditions with Kubernetes semantics: `observedGeneration` on each, and
//! `lastTransitionTime` kept from the previous status unless the status flips, so an
//! unchanged world yields an identical status and nothing to write.

use crate::policy::condition::{Condition, status};
use jiff::Timestamp;

/// A condition before its transition time is settled.
pub struct Wanted {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Builds the conditions, keeping each `lastTransitionTime` when the status did not flip.
pub fn settle(wanted: Vec<Wanted>, previous: &[Condition], generation: i64, now: Timestamp) -> Vec<Condition> {
    wanted
        .into_iter()
        .map(|w| {
            let status = if w.status { status::TRUE } else { status::FALSE }.to_owned();
            let since = previous
                .iter()
                .find(|p| p.type_ == w.type_ && p.status == status)
                .map(|p| p.last_transition_time)
                .unwrap_or(now);
            Condition {
                type_: w.type_.to_owned(),
                status,
                reason: w.reason.to_owned(),
                message: w.message,
                observed_generation: Some(generation),
                last_transition_time: since,
            }
        })
        .collect()
}
