//! A policy whose passes keep failing says so: after [`REPORT_AFTER`] failed passes in
//! a row, a Warning Event `PassesFailing` on the policy and the condition
//! `Stalled=True` (reason `PassesFailing`, the error in its message), again at 10×
//! and 100× as many; `poolwarden_reconcile_errors_total` counts every failure and the
//! shipped alert `PoolwardenReconcileStalled` fires on them. Liveness is not this:
//! `/healthz` answers for the process, which cannot fix a write the cluster refuses
//! by being restarted.

use std::{collections::HashMap, sync::Mutex};

use jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{events::EventType, reflector::ObjectRef},
};
use serde_json::json;
use tracing::warn;

use crate::{
    decide::summary,
    policy::{
        PoolPolicy,
        condition::{Condition, status, type_},
    },
};

/// Failed passes in a row before the policy reports them.
pub const REPORT_AFTER: u32 = 3;

/// The condition reason of a policy whose passes keep failing.
pub const REASON: &str = "PassesFailing";

/// Failed passes in a row, per policy.
#[derive(Default)]
pub struct Streaks(Mutex<HashMap<ObjectRef<PoolPolicy>, u32>>);

impl Streaks {
    /// Counts one pass's outcome; returns the failures in a row (0 after a success).
    pub fn record(&self, policy: &ObjectRef<PoolPolicy>, failed: bool) -> u32 {
        let mut streaks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !failed {
            streaks.remove(policy);
            return 0;
        }
        let n = streaks.entry(policy.clone()).or_default();
        *n = n.saturating_add(1);
        *n
    }
}

/// Whether the `n`th failure in a row is reported: the third, the thirtieth, the
/// three-hundredth… so that a policy failing for days does not write every pass.
pub fn reported(n: u32) -> bool {
    let mut at = REPORT_AFTER;
    loop {
        if n == at {
            return true;
        }
        if n < at {
            return false;
        }
        at = match at.checked_mul(10) {
            Some(next) => next,
            None => return false,
        };
    }
}

/// The conditions with `Stalled` set True for failing passes (the others as they were:
/// the next pass that succeeds writes them all again).
pub fn stalled(
    conditions: &[Condition],
    failures: u32,
    error: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let message = summary::cut(format!(
        "{failures} passes in a row failed; the last: {error}; the rest of the status is from the last pass that succeeded"
    ));
    let since = conditions
        .iter()
        .find(|c| c.type_ == type_::STALLED && c.status == status::TRUE)
        .map_or(now, |c| c.last_transition_time);
    let stalled = Condition {
        type_: type_::STALLED.to_owned(),
        status: status::TRUE.to_owned(),
        reason: REASON.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    };
    let mut out: Vec<Condition> = conditions
        .iter()
        .filter(|c| c.type_ != type_::STALLED)
        .cloned()
        .collect();
    out.push(stalled);
    out
}

/// Reports the failing passes: the condition by a merge patch of the conditions
/// alone (small, so it may pass where the pass's write did not; never the remediation
/// records, which only a pass that read them fresh writes), and the Event.
pub async fn report(ctx: &super::reconcile::Context, policy: &PoolPolicy, failures: u32, error: &str) {
    warn!(failures, %error, "passes keep failing");
    let current = policy
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let conditions = stalled(current, failures, error, policy.metadata.generation, Timestamp::now());
    let api: Api<PoolPolicy> = Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    let body = json!({"status": {"conditions": conditions}});
    if let Err(e) = api
        .patch_status(&policy.name_any(), &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        warn!(error = %e, "could not set Stalled on a policy whose passes keep failing");
    }
    let note = format!("{failures} passes in a row failed; the last: {error}");
    super::reconcile::publish(ctx, policy, None, EventType::Warning, REASON, &note).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::condition::reason;

    #[test]
    fn the_third_thirtieth_and_three_hundredth_failures_are_reported() {
        let at: Vec<u32> = (0..=3000).filter(|n| reported(*n)).collect();
        assert_eq!(at, [3, 30, 300, 3000]);
    }

    #[test]
    fn a_streak_ends_with_a_success() {
        let s = Streaks::default();
        let p = ObjectRef::<PoolPolicy>::new("p").within("ns");
        assert_eq!((s.record(&p, true), s.record(&p, true)), (1, 2));
        assert_eq!(s.record(&p, false), 0);
        assert_eq!(s.record(&p, true), 1);
    }

    #[test]
    fn stalled_replaces_only_the_stalled_condition_and_keeps_its_transition_while_true() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let ready = Condition {
            type_: type_::READY.into(),
            status: status::TRUE.into(),
            reason: reason::RECONCILED.into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: t0,
        };
        let not_stalled = Condition {
            type_: type_::STALLED.into(),
            status: status::FALSE.into(),
            reason: reason::NOT_STALLED.into(),
            ..ready.clone()
        };
        let t1 = Timestamp::from_second(1_800_000_100).unwrap();
        let first = stalled(
            &[ready.clone(), not_stalled],
            3,
            "writing status: too large",
            Some(1),
            t1,
        );
        assert_eq!(first[0], ready);
        assert_eq!(first.len(), 2);
        let s = &first[1];
        assert_eq!((s.status.as_str(), s.reason.as_str()), ("True", REASON));
        assert_eq!(s.last_transition_time, t1);
        assert!(
            s.message
                .starts_with("3 passes in a row failed; the last: writing status: too large")
        );
        let later = stalled(
            &first,
            30,
            "again",
            Some(1),
            Timestamp::from_second(1_800_000_900).unwrap(),
        );
        assert_eq!(later[1].last_transition_time, t1, "kept while it stays True");
    }
}
