//! A pass's part in its database's connection budget: the policy's share (its
//! workloads' claims, the backends it attributed, its pooler) published in the
//! [`Ledger`], and the database-wide budget read back for the decision.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{Scope, observe::Attributed};
use crate::{
    decide::{
        Workload,
        budget::{Budget, Route, build},
    },
    observe::{conninfo::ConnInfo, postgres::Snapshot},
    platform::budget::{Ledger, Seen, Share, server_of},
    policy::{ResolvedPolicy, validate::UrlSource},
};

/// A sample, or why it could not be taken.
type Sampled = Result<Arc<Snapshot>, String>;

/// How long a share counts after its pass: three of its policy's intervals, so a
/// pass that is a little late does not drop it, and a deleted policy's goes soon.
fn keep(policy: &ResolvedPolicy) -> Duration {
    policy.interval.saturating_mul(3)
}

/// The database-wide budget, with this pass's share published; `None` when the
/// policy's database URL cannot be read (the decision then counts the policy's own
/// workloads against an unknown database).
pub fn database_budget(
    ledger: &Ledger,
    (scope, policy): (&Scope, &ResolvedPolicy),
    (workloads, attributed): (&[Workload], Attributed),
    (url, server, view): (Option<&str>, &Sampled, &Sampled),
) -> Option<Budget> {
    let info = ConnInfo::parse(url?).ok()?;
    let (server_key, database) = server_of(&info.identity);
    let pooler = policy.pooler.as_ref().map(|p| {
        let limits = view.as_ref().ok().and_then(|v| v.pooler);
        (pooler_name(scope, &p.admin_url), limits)
    });
    let roles = &attributed.roles;
    let claims = build::claims(&scope.key(), policy, workloads, |i, _| Route {
        database: database.clone(),
        // The role its backends use, when they use one (a workload seen with
        // several roles, or none yet, counts against no role's limit).
        role: roles.get(i).filter(|r| r.len() == 1).and_then(|r| r.first().cloned()),
        pooler: pooler.as_ref().map(|(name, _)| name.clone()),
    });
    let share = Share {
        database,
        claims,
        attributed: attributed.counts,
        pooler,
    };
    let seen = Seen {
        server: server.as_deref().map_err(String::as_str),
        pooler_clients: policy.pooler.as_ref().and_then(|_| view.as_deref().ok()),
    };
    Some(ledger.publish(
        (&server_key, &server_key),
        &scope.key(),
        share,
        &seen,
        (Instant::now(), keep(policy)),
    ))
}

/// A pooler as the budget names it: by where its admin URL comes from, which is the
/// same for every policy of a namespace that uses it.
fn pooler_name(scope: &Scope, admin: &UrlSource) -> String {
    match admin {
        UrlSource::Secret(s) => format!("{}/{}", scope.namespace, s.name),
        UrlSource::Env(var) => format!("{}/${var}", scope.namespace),
    }
}
