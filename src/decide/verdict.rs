//! Rule 2 — the leak verdict of one instance: the policy's measure above `max` in
//! every sample for `sustainedFor`. An unknown sample or one at or below the limit
//! ends the run; an instance younger than `sustainedFor + grace` is not judged.

use jiff::Timestamp;

use super::input::Instance;
use crate::{
    observation::{Measured, PodSample},
    policy::{Measure, validate::ResolvedDiscrepancy},
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

/// The measure's value in one sample, or why it is unknown.
pub fn measure_value(measure: Measure, sample: &PodSample) -> Measured<u32> {
    let database = || match &sample.database {
        Measured::Known(c) => Ok(c),
        Measured::Unknown(why) => Err(format!("database: {why}")),
    };
    let pool = || match &sample.pool {
        Some(Measured::Known(p)) => Ok(p),
        Some(Measured::Unknown(why)) => Err(format!("pool stats: {why}")),
        None => Err("pool stats: not configured".to_owned()),
    };
    let value = match measure {
        Measure::LifetimeOverrun => database().map(|c| c.lifetime_overrun),
        Measure::IdleOverrun => database().map(|c| c.idle_overrun),
        Measure::DatabaseMinusTracked => {
            database().and_then(|c| pool().map(|p| c.counts.total.saturating_sub(p.tracked_active)))
        }
        Measure::PoolMinusTracked => pool().map(|p| p.checked_out.saturating_sub(p.tracked_active)),
    };
    match value {
        Ok(v) => Measured::Known(v),
        Err(why) => Measured::Unknown(why),
    }
}

/// Judges one instance at `now`.
pub fn judge(instance: &Instance, rule: &ResolvedDiscrepancy, now: Timestamp) -> Verdict {
    let in_time = || instance.samples.iter().filter(|s| s.at <= now);
    let Some(newest) = in_time().max_by_key(|s| s.at) else {
        return Verdict::Unknown("no sample yet".to_owned());
    };
    let current = match measure_value(rule.measure, newest) {
        Measured::Known(v) => v,
        Measured::Unknown(why) => return Verdict::Unknown(why),
    };
    if current <= rule.max {
        return Verdict::Within { value: current };
    }
    // Only an instance above the limit needs its history in order.
    let mut samples: Vec<&PodSample> = in_time().collect();
    if !samples.is_sorted_by_key(|s| s.at) {
        samples.sort_by_key(|s| s.at);
    }
    // Walk back from the newest sample while every sample is known and above the limit.
    let mut run: Vec<(Timestamp, u32)> = Vec::new();
    for sample in samples.iter().rev() {
        match measure_value(rule.measure, sample) {
            Measured::Known(v) if v > rule.max => run.push((sample.at, v)),
            _ => break,
        }
    }
    run.reverse();
    let since = run[0].0;
    let values: Vec<u32> = run.iter().map(|(_, v)| *v).collect();
    let sustained = jiff::SignedDuration::try_from(rule.sustained_for).unwrap_or(jiff::SignedDuration::MAX);
    let grace = jiff::SignedDuration::try_from(rule.grace).unwrap_or(jiff::SignedDuration::ZERO);
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
    let old_enough = instance
        .started_at
        .is_some_and(|started| now.duration_since(started) >= sustained + grace);
    if !old_enough {
        let reason = "younger than sustainedFor + grace: cannot be judged yet".to_owned();
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
