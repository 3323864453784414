//! `poolwarden inspect`: the seeds' "identify the connections" step as one command —
//! live backends grouped by application name, client address, user or database, with
//! counts by state, oldest ages and overruns against the limits given.

use std::time::Duration;

use serde::Serialize;

use crate::{
    decide::{
        keeping::Keeping,
        measure::{BackendLimit, EvidenceScope, Limits, summarise},
    },
    observe::{backend::Backend, evidence::group, postgres::Snapshot},
    policy::{ConnectionCounts, PodEvidence, PoolLibrary, QueryEvidence},
};

/// How backends are grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    ApplicationName,
    ClientAddress,
    User,
    Database,
}

/// One group's figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub group: String,
    #[serde(flatten)]
    pub counts: ConnectionCounts,
    pub oldest_seconds: Option<u64>,
    pub oldest_idle_seconds: Option<u64>,
    pub lifetime_overrun: u32,
    pub idle_overrun: u32,
    /// With `--evidence`: the group's backends (the overrunning ones when a limit is
    /// given) by state and normalised last statement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<PodEvidence>,
}

/// The grouped view of one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    pub target: String,
    pub at: String,
    /// `at`, for the ages in the evidence's words.
    #[serde(skip)]
    pub now: Option<jiff::Timestamp>,
    pub rows: Vec<Row>,
    /// Backends with no value to group by (e.g. no application_name).
    pub unattributed: Option<Row>,
    pub total: Row,
}

/// The value of a backend's group, or `None` when it has none.
fn key(backend: &Backend, by: GroupBy) -> Option<String> {
    match by {
        GroupBy::ApplicationName => Some(backend.application_name.clone()).filter(|s| !s.is_empty()),
        GroupBy::ClientAddress => backend.client_addr.map(|a| a.to_string()),
        GroupBy::User => backend.user.clone(),
        GroupBy::Database => backend.database.clone(),
    }
}

/// What `inspect` holds each group (a pod, when grouped by application name) to: the
/// limits given, plus the grace, for a pool of the given library keeping `min_size`
/// connections — the policy's measures, tried on a live database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trial {
    pub max_lifetime: Option<Duration>,
    pub max_idle: Option<Duration>,
    pub library: PoolLibrary,
    pub grace: Duration,
    /// `None`: the library's default (Generic: none kept).
    pub min_size: Option<u32>,
    /// The pool's maxSize, which psycopg_pool's idle shrinking and HikariCP's default
    /// minimumIdle depend on; `None`: unbounded.
    pub max_size: Option<u32>,
}

impl Trial {
    /// The limits given, exactly as written: no library, no grace, no minSize.
    pub fn limits(max_lifetime: Option<Duration>, max_idle: Option<Duration>) -> Trial {
        Trial {
            max_lifetime,
            max_idle,
            library: PoolLibrary::Generic,
            grace: Duration::ZERO,
            min_size: None,
            max_size: None,
        }
    }
}

/// The trial's limits, as the lifetime and the idle measure hold backends to them (the
/// decision core's own, [`BackendLimit::kept_by`]). The evidence is of the backends
/// overrunning the limit given (the lifetime first), or of all of them without one.
#[derive(Clone, Copy)]
struct Given {
    lifetime: Limits,
    idle: Limits,
}

impl Given {
    fn new(trial: &Trial, evidence: bool) -> Given {
        let (lifetime_scope, idle_scope) = match (evidence, trial.max_lifetime, trial.max_idle) {
            (false, _, _) => (EvidenceScope::Off, EvidenceScope::Off),
            (true, Some(_), _) => (EvidenceScope::Overrunning, EvidenceScope::Off),
            (true, None, Some(_)) => (EvidenceScope::Off, EvidenceScope::Overrunning),
            (true, None, None) => (EvidenceScope::All, EvidenceScope::Off),
        };
        let max_size = trial.max_size.unwrap_or(u32::MAX);
        let keeping = Keeping::for_library(trial.library, trial.max_idle, max_size, trial.grace);
        let min = trial.library.facts().min_size_or_default(trial.min_size, max_size);
        let with_grace = |d: Duration| d.saturating_add(trial.grace);
        Given {
            lifetime: Limits {
                measure: Some(crate::policy::Measure::LifetimeOverrun),
                backend: trial
                    .max_lifetime
                    .map(|max| BackendLimit::lifetime(with_grace(max)).kept_by(keeping, min)),
                evidence: lifetime_scope,
            },
            idle: Limits {
                measure: Some(crate::policy::Measure::IdleOverrun),
                backend: trial
                    .max_idle
                    .map(|max| BackendLimit::idle(with_grace(max), min).kept_by(keeping, min)),
                evidence: idle_scope,
            },
        }
    }
}

fn row(name: String, backends: &[&Backend], given: Given, evidence: Option<QueryEvidence>, snapshot: &Snapshot) -> Row {
    let c = summarise(&given.lifetime, backends, 1, snapshot.now, group);
    let idle = summarise(&given.idle, backends, 1, snapshot.now, group);
    // At most one of the two gathered evidence (see `Given`).
    let groups = if c.evidence.is_empty() {
        &idle.evidence
    } else {
        &c.evidence
    };
    Row {
        evidence: evidence
            .filter(|_| !groups.is_empty())
            .map(|queries| crate::decide::evidence::of_groups(&name, groups, None, queries)),
        group: name,
        counts: c.counts,
        oldest_seconds: c.oldest_backend_age.map(|d| d.as_secs()),
        oldest_idle_seconds: c.oldest_idle_age.map(|d| d.as_secs()),
        lifetime_overrun: c.overrun,
        idle_overrun: idle.overrun,
    }
}

/// Groups a snapshot; rows sorted by total, largest first.
pub fn report(
    target: &str,
    snapshot: &Snapshot,
    by: GroupBy,
    trial: &Trial,
    evidence: Option<QueryEvidence>,
) -> Inspection {
    let limits = Given::new(trial, evidence.is_some());
    let mut groups: std::collections::BTreeMap<String, Vec<&Backend>> = Default::default();
    let mut none = Vec::new();
    for b in &snapshot.backends {
        match key(b, by) {
            Some(k) => groups.entry(k).or_default().push(b),
            None => none.push(b),
        }
    }
    let mut rows: Vec<Row> = groups
        .into_iter()
        .map(|(k, bs)| row(k, &bs, limits, evidence, snapshot))
        .collect();
    rows.sort_by(|a, b| b.counts.total.cmp(&a.counts.total).then(a.group.cmp(&b.group)));
    let all: Vec<&Backend> = snapshot.backends.iter().collect();
    Inspection {
        target: target.to_owned(),
        at: snapshot.now.to_string(),
        now: Some(snapshot.now),
        rows,
        unattributed: (!none.is_empty()).then(|| row("(unattributed)".into(), &none, limits, evidence, snapshot)),
        total: row("TOTAL".into(), &all, limits, None, snapshot),
    }
}

/// A fixed-width table; overruns are marked with `!`.
pub fn render_table(report: &Inspection) -> String {
    let mut out = format!("{} at {}\n", report.target, report.at);
    out.push_str(&format!(
        "{:<40} {:>5} {:>6} {:>5} {:>7} {:>9} {:>5} {:>8} {:>9} {:>9} {:>9}\n",
        "GROUP",
        "TOTAL",
        "ACTIVE",
        "IDLE",
        "IDLE_TX",
        "TX_ABORT",
        "OTHER",
        "OLDEST",
        "OLDEST_IDLE",
        "LIFE_OVER",
        "IDLE_OVER"
    ));
    let secs = |s: Option<u64>| s.map(|s| format!("{s}s")).unwrap_or_else(|| "-".into());
    let flag = |n: u32| if n > 0 { format!("{n}!") } else { n.to_string() };
    for r in report
        .rows
        .iter()
        .chain(&report.unattributed)
        .chain(std::iter::once(&report.total))
    {
        out.push_str(&format!(
            "{:<40} {:>5} {:>6} {:>5} {:>7} {:>9} {:>5} {:>8} {:>9} {:>9} {:>9}\n",
            r.group,
            r.counts.total,
            r.counts.active,
            r.counts.idle,
            r.counts.idle_in_transaction,
            r.counts.idle_in_transaction_aborted,
            r.counts.other,
            secs(r.oldest_seconds),
            secs(r.oldest_idle_seconds),
            flag(r.lifetime_overrun),
            flag(r.idle_overrun)
        ));
        if let Some(e) = &r.evidence {
            out.push_str(&format!(
                "  evidence: {}\n",
                crate::decide::evidence::words(e, report.now)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use jiff::{SignedDuration, Timestamp};

    use super::*;

    /// A quiet pod whose pool keeps five connections idle since long before their
    /// lifetime ended (SQLAlchemy's pool_size 5 after a night without traffic).
    fn quiet_pod() -> Snapshot {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let backend = |pid| Backend {
            pid,
            application_name: "web-1".into(),
            backend_start: Some(now - SignedDuration::from_secs(3600)),
            state: Some("idle".into()),
            state_change: Some(now - SignedDuration::from_secs(3590)),
            ..Backend::default()
        };
        Snapshot {
            now,
            max_connections: 100,
            reserved: 3,
            backends: (1..=5).map(backend).collect(),
            pooler: None,
            slots: Default::default(),
            conn_limits: None,
        }
    }

    #[test]
    fn the_library_the_grace_and_min_size_make_inspect_judge_as_the_policy_would() {
        let lifetime = Some(Duration::from_secs(30));
        let exact = report(
            "db",
            &quiet_pod(),
            GroupBy::ApplicationName,
            &Trial::limits(lifetime, None),
            None,
        );
        assert_eq!(exact.rows[0].lifetime_overrun, 5, "every backend is past 30 s");
        let sqlalchemy = |min_size| Trial {
            library: PoolLibrary::SQLAlchemy,
            grace: Duration::from_secs(60),
            min_size: Some(min_size),
            max_size: Some(10),
            ..Trial::limits(lifetime, None)
        };
        let kept = report("db", &quiet_pod(), GroupBy::ApplicationName, &sqlalchemy(5), None);
        assert_eq!(kept.rows[0].lifetime_overrun, 0, "pool_size 5 rests in the queue");
        let beyond = report("db", &quiet_pod(), GroupBy::ApplicationName, &sqlalchemy(3), None);
        assert_eq!(beyond.rows[0].lifetime_overrun, 2, "two more idle than pool_size 3");
    }
}
