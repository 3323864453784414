//! Rule 2 — the leak verdict of one instance: the policy's measure above `max` in
//! every sample for `sustainedFor`. An unknown sample or one at or below the limit
//! ends the run; an instance younger than `sustainedFor + grace` is not judged.
//!
//! A workload whose instances attribution cannot tell apart (`User`) is judged as a
//! whole by the same rule, against `max` × its ready instances.

use jiff::{SignedDuration, Timestamp};

use super::{
    input::{Instance, Workload},
    measure,
};
use crate::{
    observation::{Measured, PodSample},
    policy::validate::ResolvedDiscrepancy,
};

/// The verdict on one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No sample, or the newest sample is unknown: nothing can be said.
    Unknown(String),
    /// At or below the limit now.
    Within { value: u32 },
    /// Above the limit, but not yet for the whole window (or too young to judge).
    Exceeding {
        value: u32,
        since: Timestamp,
        values: Vec<u32>,
        reason: String,
    },
    /// Above the limit in every sample for the whole window.
    Leaking {
        value: u32,
        since: Timestamp,
        values: Vec<u32>,
    },
}

impl Verdict {
    pub fn value(&self) -> Option<u32> {
        match self {
            Verdict::Unknown(_) => None,
            Verdict::Within { value } | Verdict::Exceeding { value, .. } | Verdict::Leaking { value, .. } => {
                Some(*value)
            }
        }
    }
}

/// Judges one instance at `now`.
pub fn judge(instance: &Instance, rule: &ResolvedDiscrepancy, now: Timestamp) -> Verdict {
    let settled = if settled(instance.started_at, rule, now) {
        Ok(())
    } else {
        Err("younger than sustainedFor + grace: cannot be judged yet".to_owned())
    };
    judge_samples(&instance.samples, rule.max, settled, rule, now)
}

/// The limit a workload judged as a whole is held to: `max` per ready instance.
/// The count is the current one, applied to the whole window.
pub fn workload_limit(workload: &Workload, rule: &ResolvedDiscrepancy) -> u32 {
    let ready = workload.instances.iter().filter(|i| i.ready).count() as u32;
    rule.max.saturating_mul(ready)
}

/// Judges a workload as a whole at `now`, from its own samples. It can be leaking only
/// while it has a ready instance and every instance is older than
/// `sustainedFor + grace`: a limit of `max` per ready instance assumes each is past
/// its start.
pub fn judge_workload(
    workload: &Workload,
    samples: &[PodSample],
    rule: &ResolvedDiscrepancy,
    now: Timestamp,
) -> Verdict {
    let limit = workload_limit(workload, rule);
    let settled = if !workload.instances.iter().any(|i| i.ready) {
        Err("no ready pod, so no limit: cannot be judged".to_owned())
    } else if !workload.instances.iter().all(|i| settled(i.started_at, rule, now)) {
        Err("a pod is younger than sustainedFor + grace: cannot be judged yet".to_owned())
    } else {
        Ok(())
    };
    judge_samples(samples, limit, settled, rule, now)
}

/// Whether something started at `started` is old enough to be judged.
fn settled(started: Option<Timestamp>, rule: &ResolvedDiscrepancy, now: Timestamp) -> bool {
    let (sustained, grace) = window(rule);
    started.is_some_and(|started| now.duration_since(started) >= sustained.saturating_add(grace))
}

fn window(rule: &ResolvedDiscrepancy) -> (SignedDuration, SignedDuration) {
    (
        SignedDuration::try_from(rule.sustained_for).unwrap_or(SignedDuration::MAX),
        SignedDuration::try_from(rule.grace).unwrap_or(SignedDuration::ZERO),
    )
}

/// The verdict on a history against `limit`; `settled` says whether a run above the
/// limit may count as leaking, or why not yet.
fn judge_samples(
    samples: &[PodSample],
    limit: u32,
    settled: Result<(), String>,
    rule: &ResolvedDiscrepancy,
    now: Timestamp,
) -> Verdict {
    let in_time = || samples.iter().filter(|s| s.at <= now);
    let Some(newest) = in_time().max_by_key(|s| s.at) else {
        return Verdict::Unknown("no sample yet".to_owned());
    };
    let current = match measure::value(rule.measure, newest) {
        Measured::Known(v) => v,
        Measured::Unknown(why) => return Verdict::Unknown(why),
    };
    if current <= limit {
        return Verdict::Within { value: current };
    }
    // Only a history above the limit needs to be in order.
    let mut samples: Vec<&PodSample> = in_time().collect();
    if !samples.is_sorted_by_key(|s| s.at) {
        samples.sort_by_key(|s| s.at);
    }
    // Walk back from the newest sample while every sample is known and above the limit.
    let mut run: Vec<(Timestamp, u32)> = Vec::new();
    for sample in samples.iter().rev() {
        match measure::value(rule.measure, sample) {
            Measured::Known(v) if v > limit => run.push((sample.at, v)),
            _ => break,
        }
    }
    run.reverse();
    let since = run[0].0;
    let values: Vec<u32> = run.iter().map(|(_, v)| *v).collect();
    let (sustained, _) = window(rule);
    let covered = now.duration_since(since);
    if covered < sustained || run.len() < 2 {
        let reason = format!("above the limit for {} of {}", human(covered), human(sustained));
        return Verdict::Exceeding {
            value: current,
            since,
            values,
            reason,
        };
    }
    if let Err(reason) = settled {
        return Verdict::Exceeding {
            value: current,
            since,
            values,
            reason,
        };
    }
    Verdict::Leaking {
        value: current,
        since,
        values,
    }
}

fn human(d: jiff::SignedDuration) -> String {
    crate::policy::duration::render(std::time::Duration::from_secs(d.as_secs().max(0) as u64))
}
