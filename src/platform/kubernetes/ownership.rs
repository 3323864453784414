//! One owner per workload: when several policies select one workload, exactly one
//! governs it — the oldest (`metadata.creationTimestamp`), then the first by name —
//! and the others write nothing to it. The rule needs nothing but the policies
//! themselves, so every replica and every pass agrees on it; a new policy never
//! takes a workload from one that already governs it.

use std::sync::Arc;

use kube::ResourceExt;

use super::{gather::Selected, validated::ValidatedPolicies, workloads::kind_name};
use crate::{
    decide::GovernedElsewhere,
    policy::{PoolPolicy, RemediationRecord, ResolvedPolicy},
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
/// Kubernetes policies of its namespace in `all` (the cache; `policy` itself is the
/// fresh copy, and wins over its cached one), each validated once per version.
pub fn partition(
    policy: &PoolPolicy,
    selected: Vec<Selected>,
    all: &[Arc<PoolPolicy>],
    validated: &ValidatedPolicies,
) -> Ownership {
    validated.forget_deleted(all);
    let namespace = policy.namespace();
    let me = policy.name_any();
    let others: Vec<(&PoolPolicy, Arc<ResolvedPolicy>)> = all
        .iter()
        .filter(|p| p.namespace() == namespace && p.name_any() != me)
        .filter_map(|p| validated.resolved(p).map(|r| (p.as_ref(), r)))
        .collect();
    let mine = precedence(policy);
    let mut out = Ownership {
        governed: Vec::new(),
        elsewhere: Vec::new(),
        other_remediations: Vec::new(),
    };
    for s in selected {
        let kind = kind_name(s.view.kind);
        let governor = others
            .iter()
            .filter(|(_, r)| s.view.selected_by(r))
            .map(|(p, _)| *p)
            .filter(|p| precedence(p) < mine)
            .min_by_key(|p| precedence(p));
        match governor {
            Some(g) => out.elsewhere.push(GovernedElsewhere {
                kind: s.view.kind.into(),
                workload: s.view.name.clone(),
                policy: g.name_any(),
            }),
            None => {
                out.other_remediations.extend(
                    others
                        .iter()
                        .filter_map(|(p, _)| p.status.as_ref())
                        .flat_map(|st| &st.remediations)
                        .filter(|r| r.kind == kind && r.workload == s.view.name)
                        .cloned(),
                );
                out.governed.push(s);
            }
        }
    }
    out
}
