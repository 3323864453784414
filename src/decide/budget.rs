//! The connection budget of one database, across every policy and workload on it:
//! how many connections the pools may open at most (*need*) against how many the
//! database, its roles and its pooler let them open (*have*). Pure arithmetic over
//! plain data; the platforms gather the figures (`platform::budget`) and the
//! controller, `poolwarden check` and `plan` all read the same [`Assessment`].
//!
//! A limit applies to the connections in its scope only, so each one is compared
//! with its own need ([`Scope`]):
//! - `max_connections` minus the reserved slots counts every client backend of the
//!   server, whatever its database or role
//!   (<https://www.postgresql.org/docs/current/runtime-config-connection.html#GUC-MAX-CONNECTIONS>);
//! - a database's `datconnlimit` counts the connections to that database, a role's
//!   `rolconnlimit` those of that role; -1 means no limit, and neither is enforced
//!   against superusers (<https://www.postgresql.org/docs/current/catalog-pg-database.html>,
//!   <https://www.postgresql.org/docs/current/catalog-pg-authid.html>);
//! - behind a PgBouncer the apps' pools open client connections to it (its
//!   `max_client_conn`), and only its server pools reach PostgreSQL.
//!
//! When every claim shares one database, one role and no pooler, the check is the
//! plain "need against the lowest of the limits".

use std::fmt::Write as _;

use super::input::WorkloadRef;
use crate::observation::Measured;

/// A workload on the database, named by its policy (`namespace/name`, or
/// `fly:app/name`) and itself: two policies may each govern a `web`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClaimId {
    pub policy: String,
    pub workload: WorkloadRef,
}

impl std::fmt::Display for ClaimId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.workload, self.policy)
    }
}

/// How many of a workload's pods may hold connections at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pods {
    /// The replicas asked for now.
    pub replicas: u32,
    /// `maxReplicas` of a HorizontalPodAutoscaler that targets the workload: it may
    /// scale up to that at any time, so that is what the budget must hold.
    pub autoscaler_max: Option<u32>,
    /// Extra pods a rolling update may add (maxSurge).
    pub max_surge: u32,
    /// Pods being deleted that still run (a rollout's old pods in their grace
    /// period): their connections are open until they exit.
    pub terminating: u32,
}

impl Pods {
    /// The pods that may hold connections at once: the larger of the replicas and
    /// the autoscaler's maximum (a workload scaled above it by hand runs that many
    /// until the autoscaler acts), plus the surge and the terminating ones.
    pub fn at_most(&self) -> u64 {
        let steady = self.autoscaler_max.map_or(self.replicas, |max| max.max(self.replicas));
        u64::from(steady) + u64::from(self.max_surge) + u64::from(self.terminating)
    }

    /// The words for [`Pods::at_most`]: `20 (HPA maxReplicas) + 1 surge`.
    fn words(&self) -> String {
        let mut s = match self.autoscaler_max {
            Some(max) if max >= self.replicas => format!("{max} (HPA maxReplicas)"),
            _ => format!("{} replicas", self.replicas),
        };
        if self.max_surge > 0 {
            let _ = write!(s, " + {} surge", self.max_surge);
        }
        if self.terminating > 0 {
            let _ = write!(s, " + {} terminating", self.terminating);
        }
        // A sum is multiplied next: bracketed, so the words read as the arithmetic.
        if s.contains(" + ") { format!("({s})") } else { s }
    }
}

/// Where a workload's connections land, for the limits that count them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// The database (`datname`) the pools connect to.
    pub database: String,
    /// The role the pools connect as, when known (observed on its backends, or the
    /// role of `User` attribution); `None` leaves it out of every role's limit.
    pub role: Option<String>,
    /// The pooler the pools connect through, by name; `None` when they connect to
    /// PostgreSQL directly.
    pub pooler: Option<String>,
}

/// One workload's claim: pods × processes per pod × `maxSize`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub id: ClaimId,
    pub pods: Pods,
    /// Processes in each pod that each hold a pool (gunicorn workers...), at least 1.
    pub processes_per_pod: u32,
    pub max_size: u32,
    pub route: Route,
}

impl Claim {
    /// The connections one unit of `maxSize` costs: every process of every pod.
    pub fn per_max_size(&self) -> u64 {
        self.pods.at_most() * u64::from(self.processes_per_pod.max(1))
    }

    /// The connections the workload's pools may open at most.
    pub fn connections(&self) -> u64 {
        self.per_max_size() * u64::from(self.max_size)
    }
}

/// Connections no claim accounts for: backends seen that no policy attributes to a
/// workload, a pooler's server pools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Load {
    /// What they are, in words (`unattributed backends`).
    pub what: String,
    pub connections: u64,
    /// Their database and role, when known: a limit of that database or role counts them.
    pub database: Option<String>,
    pub role: Option<String>,
    /// Client connections of this pooler rather than backends of PostgreSQL.
    pub pooler: Option<String>,
}

/// Which connections a limit counts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Every client backend of the server (`max_connections`).
    Server,
    /// Backends of one database (`datconnlimit`).
    Database(String),
    /// Backends of one role (`rolconnlimit`).
    Role(String),
    /// Client connections of one pooler (`max_client_conn`, summed over its instances).
    PoolerClients(String),
}

impl Scope {
    fn counts(&self, route: &Route) -> bool {
        match self {
            Scope::PoolerClients(p) => route.pooler.as_deref() == Some(p.as_str()),
            _ if route.pooler.is_some() => false,
            Scope::Server => true,
            Scope::Database(d) => &route.database == d,
            Scope::Role(r) => route.role.as_deref() == Some(r.as_str()),
        }
    }

    fn counts_load(&self, load: &Load) -> bool {
        match self {
            Scope::PoolerClients(p) => load.pooler.as_deref() == Some(p.as_str()),
            _ if load.pooler.is_some() => false,
            Scope::Server => true,
            Scope::Database(d) => load.database.as_deref() == Some(d.as_str()),
            Scope::Role(r) => load.role.as_deref() == Some(r.as_str()),
        }
    }
}

/// One limit and what it allows; unknown is never taken for zero or for no limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    pub scope: Scope,
    pub allows: Measured<u64>,
    /// The limit in words (`max_connections 100 - 3 reserved`).
    pub says: String,
}

/// Everything on one database the budget counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// The database, as messages name it (`host:5432`).
    pub database: String,
    /// The policy whose pass put the budget together: its claims' [`ClaimId::policy`]
    /// (what [`Budget::claim_id`] names a workload of the plan with).
    pub asked_by: String,
    pub claims: Vec<Claim>,
    pub loads: Vec<Load>,
    /// The limits known to apply; the server's (`Scope::Server`) is always among
    /// them, unknown when the database could not be read.
    pub limits: Vec<Limit>,
}

/// One limit against the connections it counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub limit: Limit,
    pub need: u64,
}

impl Check {
    pub fn exceeded(&self) -> bool {
        matches!(self.limit.allows, Measured::Known(have) if self.need > have)
    }
}

/// The budget judged: every limit against its need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    pub checks: Vec<Check>,
}

impl Assessment {
    /// Some limit is known and exceeded.
    pub fn exceeded(&self) -> bool {
        self.checks.iter().any(Check::exceeded)
    }

    /// Some limit could not be read: the budget is not fully known.
    pub fn unknown(&self) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|c| matches!(c.limit.allows, Measured::Unknown(_)))
            .collect()
    }

    /// The check a message leads with: the most exceeded, else the one with the
    /// least room left.
    pub fn tightest(&self) -> Option<&Check> {
        self.checks
            .iter()
            .filter_map(|c| match c.limit.allows {
                Measured::Known(have) => Some((c, i128::from(have) - i128::from(c.need))),
                Measured::Unknown(_) => None,
            })
            .min_by_key(|(_, room)| *room)
            .map(|(c, _)| c)
    }
}

impl Budget {
    /// How this budget names `workload` of the policy whose plan it is for.
    pub fn claim_id(&self, workload: WorkloadRef) -> ClaimId {
        ClaimId {
            policy: self.asked_by.clone(),
            workload,
        }
    }

    /// The connections a limit's scope counts: its claims and its loads.
    pub fn need(&self, scope: &Scope) -> u64 {
        let claims: u64 = self
            .claims
            .iter()
            .filter(|c| scope.counts(&c.route))
            .map(Claim::connections)
            .sum();
        let loads: u64 = self
            .loads
            .iter()
            .filter(|l| scope.counts_load(l))
            .map(|l| l.connections)
            .sum();
        claims + loads
    }

    /// Every limit against its need.
    pub fn assess(&self) -> Assessment {
        Assessment {
            checks: self
                .limits
                .iter()
                .map(|l| Check {
                    limit: l.clone(),
                    need: self.need(&l.scope),
                })
                .collect(),
        }
    }
}

/// The largest `maxSize` workload `id` may have with every other claim and load on
/// the database as they are, such that no limit that counts its connections is
/// exceeded: for each such limit, (allows − the others' need) ÷ (pods × processes),
/// the lowest of them.
///
/// `None` when it cannot be computed: the workload is not in the budget, or a limit
/// that counts it is unknown, or no limit counts it. `Some(0)` also when the others
/// alone already exceed a limit (no `maxSize` fits). A workload with no pods may
/// have any size (`u32::MAX`).
pub fn max_size_cap(budget: &Budget, id: &ClaimId) -> Option<u32> {
    let claim = budget.claims.iter().find(|c| &c.id == id)?;
    let per = claim.per_max_size();
    let mut cap: Option<u64> = None;
    for limit in budget.limits.iter().filter(|l| l.scope.counts(&claim.route)) {
        let Measured::Known(have) = limit.allows else {
            return None;
        };
        let others = budget.need(&limit.scope).saturating_sub(claim.connections());
        let fits = match have.checked_sub(others) {
            // The others alone exceed it: no size fits.
            None => 0,
            Some(_) if per == 0 => u64::MAX,
            Some(room) => room / per,
        };
        cap = Some(cap.map_or(fits, |c| c.min(fits)));
    }
    cap.map(|c| u32::try_from(c).unwrap_or(u32::MAX))
}

/// Most claims a message names, the largest first.
const NAMED: usize = 3;
/// The longest message; a condition's message may hold 32 KiB, but a reader wants one line.
pub const MESSAGE_BYTES: usize = 1024;

/// The arithmetic in words, bounded: the tightest limit (or the exceeded ones), the
/// need it counts with its largest parts, and the limits that are unknown.
pub fn message(budget: &Budget, assessment: &Assessment) -> String {
    let mut out = String::new();
    let exceeded: Vec<&Check> = assessment.checks.iter().filter(|c| c.exceeded()).collect();
    // The exceeded limits; else the one with the least room; else (nothing known)
    // the first unknown one, so the need is always said.
    let lead: Vec<&Check> = if !exceeded.is_empty() {
        exceeded
    } else if let Some(tightest) = assessment.tightest() {
        vec![tightest]
    } else {
        assessment.checks.iter().take(1).collect()
    };
    for check in &lead {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(&check_words(budget, check));
    }
    let unknown: Vec<&Check> = assessment
        .unknown()
        .into_iter()
        .filter(|c| !lead.iter().any(|l| std::ptr::eq(*l, *c)))
        .collect();
    if !unknown.is_empty() {
        if !out.is_empty() {
            out.push_str("; ");
        }
        let words: Vec<String> = unknown
            .iter()
            .map(|c| match &c.limit.allows {
                Measured::Unknown(why) => format!("{} unknown ({why})", c.limit.says),
                Measured::Known(_) => String::new(),
            })
            .collect();
        out.push_str(&words.join("; "));
    }
    bounded(out)
}

/// One check in words: `pools on app@db:5432/app may open 250 connections
/// (web (prod/pools): 20 (HPA maxReplicas) + 1 surge × 2 processes × 10 = 420, ...),
/// max_connections 100 - 3 reserved allows 97`.
fn check_words(budget: &Budget, check: &Check) -> String {
    let scope = &check.limit.scope;
    let mut parts: Vec<(u64, String)> = budget
        .claims
        .iter()
        .filter(|c| scope.counts(&c.route))
        .map(|c| {
            let processes = if c.processes_per_pod > 1 {
                format!(" × {} processes", c.processes_per_pod)
            } else {
                String::new()
            };
            (
                c.connections(),
                format!(
                    "{}: {}{processes} × maxSize {} = {}",
                    c.id,
                    c.pods.words(),
                    c.max_size,
                    c.connections()
                ),
            )
        })
        .chain(
            budget
                .loads
                .iter()
                .filter(|l| scope.counts_load(l))
                .map(|l| (l.connections, format!("{} {}", l.what, l.connections))),
        )
        .collect();
    parts.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let more = parts.len().saturating_sub(NAMED);
    let mut named: Vec<String> = parts.into_iter().take(NAMED).map(|(_, w)| w).collect();
    if more > 0 {
        named.push(format!("{more} more"));
    }
    if named.is_empty() {
        named.push("no pools".to_owned());
    }
    let (verb, have) = match &check.limit.allows {
        Measured::Known(h) if check.exceeded() => ("exceeds", h.to_string()),
        Measured::Known(h) => ("within", h.to_string()),
        Measured::Unknown(why) => ("against", format!("unknown ({why})")),
    };
    format!(
        "{} on {} need {} connections ({}), {verb} {} = {have}",
        scope_words(scope),
        budget.database,
        check.need,
        named.join(", "),
        check.limit.says
    )
}

fn scope_words(scope: &Scope) -> String {
    match scope {
        Scope::Server => "pools".to_owned(),
        Scope::Database(d) => format!("pools of database {d:?}"),
        Scope::Role(r) => format!("pools of role {r:?}"),
        Scope::PoolerClients(p) => format!("pools through pooler {p}"),
    }
}

/// `s` cut to [`MESSAGE_BYTES`] at a character boundary, marked when cut.
fn bounded(mut s: String) -> String {
    if s.len() <= MESSAGE_BYTES {
        return s;
    }
    let mut end = MESSAGE_BYTES - "…".len();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

pub mod build;

#[cfg(test)]
mod tests;
