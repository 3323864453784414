//! `spec.sizing.mode: Auto`: whether to write a new pool size for one workload now,
//! and which. Like VPA's updater, it leaves a workload alone while its maxSize is
//! not above the recommendation's upper bound (so a steady load rolls it once, not
//! every update) and writes the target when it is; unlike VPA's, it also raises a
//! maxSize below the target, not only below the lower bound: a pool's count in use
//! can never exceed its maxSize, so a saturated pool's median never falls below it
//! and VPA's rule would never raise it. It waits for a minimum confidence and an
//! `updateInterval` since its last write, and never goes above the database
//! budget's cap for the workload.

use std::time::Duration;

use jiff::Timestamp;

use super::recommend::Recommendation;

/// What Auto knows of one workload.
#[derive(Clone, Copy, Debug)]
pub struct AutoInput<'a> {
    pub recommendation: Option<&'a Recommendation>,
    /// The maxSize the workload runs with now (its env), if it can be read.
    pub current: Option<u32>,
    /// When Auto last wrote a size for it, if it has.
    pub last_write: Option<Timestamp>,
    pub update_interval: Duration,
    /// The confidence (days of history) below which Auto writes nothing.
    pub min_confidence: f64,
    /// The largest maxSize the database budget leaves this workload; `None` when
    /// the budget cannot be computed (Auto then never raises).
    pub cap: Option<u32>,
    pub now: Timestamp,
}

/// Auto's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AutoDecision {
    /// Write these sizes.
    Set { max_size: u32, min_size: u32 },
    /// Write nothing now, and why.
    Hold(String),
    /// Write nothing: the budget cannot fit even the lower bound (a condition says so).
    Refuse(String),
}

/// Decides for one workload.
pub fn decide(input: &AutoInput) -> AutoDecision {
    let Some(r) = input.recommendation else {
        return AutoDecision::Hold("no history yet".to_owned());
    };
    if r.confidence < input.min_confidence {
        return AutoDecision::Hold(format!(
            "confidence {:.3} days, below the {:.3} Auto needs",
            r.confidence, input.min_confidence
        ));
    }
    if let Some(current) = input.current
        && (r.target..=r.upper).contains(&current)
    {
        return AutoDecision::Hold(format!(
            "maxSize {current} is within the recommended {}..{}",
            r.target, r.upper
        ));
    }
    if let Some(last) = input.last_write {
        let next = crate::timing::after(last, input.update_interval);
        if input.now < next {
            return AutoDecision::Hold(format!("next update at {next} (updateInterval)"));
        }
    }
    let max_size = match (input.cap, input.current) {
        (Some(cap), _) if cap < r.lower => {
            return AutoDecision::Refuse(format!(
                "the database budget leaves this workload a maxSize of {cap}, below the recommended lower bound {}",
                r.lower
            ));
        }
        (Some(cap), _) => r.target.min(cap),
        (None, Some(current)) if r.target > current => {
            return AutoDecision::Hold(format!(
                "the database budget is unknown: not raising maxSize {current} to {}",
                r.target
            ));
        }
        (None, _) if input.current.is_none() => {
            return AutoDecision::Hold("the database budget is unknown and the current maxSize unread".to_owned());
        }
        (None, _) => r.target,
    };
    if input.current == Some(max_size) {
        return AutoDecision::Hold(format!("maxSize is already {max_size}"));
    }
    AutoDecision::Set {
        max_size,
        min_size: r.min_size.min(max_size),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn rec(lower: u32, target: u32, upper: u32) -> Recommendation {
        Recommendation {
            target,
            lower,
            upper,
            min_size: lower,
            confidence: 2.0,
            samples: 5000,
        }
    }

    fn input(r: &Recommendation, current: Option<u32>, cap: Option<u32>) -> AutoInput<'_> {
        AutoInput {
            recommendation: Some(r),
            current,
            last_write: None,
            update_interval: Duration::from_secs(3600),
            min_confidence: 1.0,
            cap,
            now: Timestamp::from_second(100_000).unwrap(),
        }
    }

    #[test]
    fn a_max_below_the_target_or_above_the_upper_bound_is_set_to_the_target_and_one_between_is_left_alone() {
        let r = rec(4, 6, 12);
        let set = |max_size, min_size| AutoDecision::Set { max_size, min_size };
        assert_eq!(decide(&input(&r, Some(2), Some(100))), set(6, 4));
        assert_eq!(decide(&input(&r, Some(40), Some(100))), set(6, 4));
        assert!(matches!(decide(&input(&r, Some(6), Some(100))), AutoDecision::Hold(_)));
        assert!(matches!(decide(&input(&r, Some(12), Some(100))), AutoDecision::Hold(_)));
        assert_eq!(
            decide(&input(&r, Some(5), Some(100))),
            set(6, 4),
            "a saturated pool (5 in use of 5) is raised, though above the lower bound"
        );
    }

    #[test]
    fn auto_waits_for_confidence_and_the_update_interval() {
        let mut r = rec(4, 6, 12);
        r.confidence = 0.5;
        assert!(matches!(decide(&input(&r, Some(2), Some(100))), AutoDecision::Hold(m) if m.contains("confidence")));
        r.confidence = 1.0;
        let mut i = input(&r, Some(2), Some(100));
        i.last_write = Some(Timestamp::from_second(100_000 - 1800).unwrap());
        assert!(matches!(decide(&i), AutoDecision::Hold(m) if m.contains("updateInterval")));
        i.last_write = Some(Timestamp::from_second(100_000 - 3600).unwrap());
        assert!(matches!(decide(&i), AutoDecision::Set { max_size: 6, .. }));
    }

    #[test]
    fn the_budget_scales_the_target_down_refuses_below_the_lower_bound_and_unknown_never_raises() {
        let r = rec(4, 6, 12);
        assert!(matches!(
            decide(&input(&r, Some(2), Some(5))),
            AutoDecision::Set {
                max_size: 5,
                min_size: 4
            }
        ));
        assert!(matches!(decide(&input(&r, Some(2), Some(3))), AutoDecision::Refuse(_)));
        assert!(matches!(decide(&input(&r, Some(2), None)), AutoDecision::Hold(m) if m.contains("unknown")));
        assert!(matches!(
            decide(&input(&r, Some(40), None)),
            AutoDecision::Set { max_size: 6, .. }
        ));
        assert!(matches!(decide(&input(&r, None, None)), AutoDecision::Hold(_)));
    }

    proptest! {
        #[test]
        fn auto_never_writes_above_the_cap_nor_outside_the_recommendation(
            lower in 0u32..100, t in 0u32..100, u in 0u32..100,
            current in proptest::option::of(0u32..300),
            cap in proptest::option::of(0u32..300),
        ) {
            let r = rec(lower, lower + t, lower + t + u);
            if let AutoDecision::Set { max_size, min_size } = decide(&input(&r, current, cap)) {
                prop_assert!(max_size >= r.lower && max_size <= r.target, "{max_size} {r:?}");
                prop_assert!(min_size <= max_size);
                if let Some(cap) = cap {
                    prop_assert!(max_size <= cap);
                } else {
                    prop_assert!(current.is_some_and(|c| max_size < c), "unknown budget: only lower");
                }
            }
        }
    }
}
