//! The recurrence guard: a leak that comes back soon after every restart is not
//! fixed by restarting, so after `recurrence.count` restarts in a row poolwarden
//! stops restarting that workload and says so (LeakRecurring), until a new release
//! (the pod template changes) or a policy change (its generation) — a different
//! program, or different rules, may behave differently.
//!
//! The state lives in the remediation records (`template`, `generation`,
//! `returnedAfterSeconds`), which the status keeps (on Fly, the machines' metadata),
//! so a restarted controller remembers it. The newest record of a workload is never
//! pruned, and it alone carries the row.

use jiff::Timestamp;

use super::input::Workload;
use crate::policy::{RemediationRecord, validate::ResolvedRecurrence};

/// What the guard says about a leak found now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chain {
    /// Not a leak coming back after a restart of the same release and policy.
    Fresh,
    /// It came back; a restart is allowed and records these gaps (seconds, oldest first).
    Returned(Vec<u64>),
    /// It came back after `count` restarts in a row: no more restarts.
    Recurring {
        returned_after: Vec<u64>,
        restarts: Vec<String>,
    },
}

/// A leak found now, for the guard.
pub struct Leak<'a> {
    /// The leaking instance, or `None` for the workload judged as a whole.
    pub instance: Option<&'a str>,
    /// Start of its run above the limit.
    pub since: Timestamp,
    /// Whether a sample within the limit precedes the run, so `since` is when the leak
    /// came back. Without one (the history starts inside the run: a controller
    /// restart, a leak from the pod's first sample) the leak may have come back any
    /// time after the pod started, and is taken to have come back at the start: the
    /// guard never restarts on a guess.
    pub since_is_return: bool,
}

/// The guard's view of `leak` of `workload`. `last` is the workload's newest counting
/// record; `history` every record of the policy.
pub fn check(
    rule: &ResolvedRecurrence,
    workload: &Workload,
    leak: &Leak,
    last: Option<&RemediationRecord>,
    history: &[RemediationRecord],
    generation: i64,
) -> Chain {
    let Some(last) = last.filter(|r| same_release(r, workload, generation)) else {
        return Chain::Fresh;
    };
    let restarted = last.at;
    // The leak came back if pods started after the restart (its replacements) are the
    // ones leaking, and their run above the limit began within the window.
    let leaking = || {
        workload
            .instances
            .iter()
            .filter(|i| leak.instance.is_none_or(|name| i.name == name))
    };
    // Kubernetes reports a pod's start in whole seconds: a replacement that started
    // within the restart's second shows a start up to a second before it.
    let restart_second = Timestamp::from_second(restarted.as_second()).unwrap_or(restarted);
    let replacements = leaking().all(|i| i.started_at.is_some_and(|s| s >= restart_second));
    let came_back = if leak.since_is_return {
        leak.since
    } else {
        leaking().filter_map(|i| i.started_at).max().unwrap_or(restarted)
    };
    let gap = came_back.max(restarted).duration_since(restarted);
    let within = crate::timing::signed(rule.within);
    if !replacements || gap.is_negative() || gap > within {
        return Chain::Fresh;
    }
    let mut returned_after = last.returned_after_seconds.clone();
    returned_after.push(gap.as_secs().max(0) as u64);
    let restarts_in_row = last.returned_after_seconds.len() + 1;
    if restarts_in_row < rule.count as usize {
        return Chain::Returned(returned_after);
    }
    let mut times: Vec<Timestamp> = history
        .iter()
        .filter(|r| r.workload == workload.name && r.kind == workload.kind)
        .filter(|r| super::remediation::counts(r) && same_release(r, workload, generation))
        .map(|r| r.at)
        .collect();
    times.sort();
    let mut restarts: Vec<String> = times.iter().map(Timestamp::to_string).collect();
    let keep = restarts.len().saturating_sub(returned_after.len());
    restarts.drain(..keep);
    Chain::Recurring {
        returned_after,
        restarts,
    }
}

fn same_release(r: &RemediationRecord, workload: &Workload, generation: i64) -> bool {
    r.template == workload.template && r.generation == Some(generation)
}

/// "the leak came back 4 min, 6 min and 5 min after the last three restarts (at …)".
pub fn words(returned_after: &[u64], restarts: &[String]) -> String {
    let gaps: Vec<String> = returned_after.iter().map(|s| super::evidence::human(*s)).collect();
    let gaps = match gaps.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    };
    let n = returned_after.len();
    let which = if n == 1 {
        "the last restart".to_owned()
    } else {
        format!("each of the last {n} restarts")
    };
    let mut out = format!("restarting does not fix this: the leak came back {gaps} after {which}");
    if !restarts.is_empty() {
        out.push_str(&format!(" (restarted at {})", restarts.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::Instance;

    fn setup(pod_started: &str) -> (Workload, RemediationRecord) {
        let workload = Workload {
            kind: crate::decide::Kind::Deployment,
            name: "web".into(),
            template: Some("v1".into()),
            instances: vec![Instance {
                name: "web-b".into(),
                started_at: pod_started.parse().ok(),
                ..Instance::default()
            }],
            ..Workload::default()
        };
        let record = RemediationRecord {
            at: "2027-01-15T08:00:00.700Z".parse().unwrap(),
            kind: "Deployment".into(),
            workload: "web".into(),
            template: Some("v1".into()),
            generation: Some(1),
            ..RemediationRecord::default()
        };
        (workload, record)
    }

    /// Found end to end: a pod's start is reported in whole seconds, so the
    /// replacement of a restart at 08:00:00.7 shows 08:00:00.
    #[test]
    fn a_replacement_started_within_the_restarts_second_is_a_replacement() {
        let (workload, record) = setup("2027-01-15T08:00:00Z");
        let rule = ResolvedRecurrence {
            count: 3,
            within: std::time::Duration::from_secs(3600),
        };
        let leak = Leak {
            instance: Some("web-b"),
            since: "2027-01-15T08:00:05Z".parse().unwrap(),
            since_is_return: true,
        };
        let chain = check(&rule, &workload, &leak, Some(&record), std::slice::from_ref(&record), 1);
        assert_eq!(chain, Chain::Returned(vec![4]));
        let (older, record) = setup("2027-01-15T07:59:59Z");
        let chain = check(&rule, &older, &leak, Some(&record), std::slice::from_ref(&record), 1);
        assert_eq!(
            chain,
            Chain::Fresh,
            "a pod older than the restart is not its replacement"
        );
    }
}
