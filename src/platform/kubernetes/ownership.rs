//! One owner per workload: when several policies select one workload, exactly one
//! governs it — the oldest (`metadata.creationTimestamp`), then the first by name —
//! and the others write nothing to it. The rule needs nothing but the policies
//! themselves, so every replica and every pass agrees on it; a new policy never
//! takes a workload from one that already governs it.

use std::collections::HashSet;

use kube::ResourceExt;

use super::{gather::Selected, validated::ValidatedPolicies, workloads::kind_name};
use crate::{
    decide::GovernedElsewhere,
    policy::{PoolPolicy, RemediationRecord},
};

/// The order of precedence: older first, then by name.
fn precedence(p: &PoolPolicy) -> (bool, Option<jiff::Timestamp>, String) {
    let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (created.is_none(), created, p.name_any())
}

/// This pass's partition of the selected workloads.
pub struct Ownership {
    /// The workloads this policy governs.
    pub governed: Vec<Selected>,
    /// The ones another policy governs.
    pub elsewhere: Vec<GovernedElsewhere>,
    /// What the other policies recorded about the governed workloads.
    pub other_remediations: Vec<RemediationRecord>,
}

/// Splits `selected` (what `policy` selects) between `policy` and the other valid
/// Kubernetes policies of its namespace (`policy` itself is the fresh copy, and wins
/// over its cached one).
pub fn partition(policy: &PoolPolicy, selected: Vec<Selected>, validated: &ValidatedPolicies) -> Ownership {
    let namespace = policy.namespace().unwrap_or_default();
    let me = policy.name_any();
    let mine = precedence(policy);
    let mut out = Ownership {
        governed: Vec::new(),
        elsewhere: Vec::new(),
        other_remediations: Vec::new(),
    };
    for s in selected {
        let governor = validated
            .selecting(&s.view)
            .into_iter()
            .filter(|v| v.policy.name_any() != me)
            .map(|v| (precedence(&v.policy), v.policy))
            .filter(|(p, _)| *p < mine)
            .min_by(|a, b| a.0.cmp(&b.0));
        match governor {
            Some((_, g)) => out.elsewhere.push(GovernedElsewhere {
                kind: s.view.kind.into(),
                workload: s.view.name.clone(),
                policy: g.name_any(),
            }),
            None => out.governed.push(s),
        }
    }
    let governed: HashSet<(&str, &str)> = out
        .governed
        .iter()
        .map(|s| (kind_name(s.view.kind), s.view.name.as_str()))
        .collect();
    out.other_remediations = validated.records_of_others(&namespace, &me, |r| {
        governed.contains(&(r.kind.as_str(), r.workload.as_str()))
    });
    out
}
