//! Putting one database's [`Budget`] together from plain data: each policy's claims
//! (one per workload it governs), the backends no policy attributes, and the limits
//! the sample read. The platforms gather the figures; this only adds them up.

use std::collections::{BTreeMap, BTreeSet};

use super::{Budget, Claim, ClaimId, Limit, Load, Pods, Route, Scope};
use crate::{
    decide::{PlanInput, Workload},
    observation::{ConnLimits, Measured, PoolerLimits},
    policy::ResolvedPolicy,
};

/// Backends by (`datname`, `usename`), as counted in a sample.
pub type BackendCounts = BTreeMap<(Option<String>, Option<String>), u64>;

/// The claims of one policy's workloads: each with its pods, the policy's
/// `processesPerPod`, the `maxSize` it may run with, and where its connections land.
///
/// That `maxSize` is the larger of the policy's and the one the workload's env
/// carries: Auto may have raised it (up to `maxAllowed`), and counting the policy's
/// would leave room another workload could be given past a limit. One Auto lowered
/// counts the policy's, the safe side while a rollout still runs the old size.
pub fn claims(
    policy_key: &str,
    policy: &ResolvedPolicy,
    workloads: &[Workload],
    route: impl Fn(usize, &Workload) -> Route,
) -> Vec<Claim> {
    let processes_per_pod = policy.pool.processes_per_pod.unwrap_or(1).max(1);
    let running = crate::decide::sizing::step::RunningSize::of(policy);
    workloads
        .iter()
        .enumerate()
        .map(|(i, w)| Claim {
            id: ClaimId {
                policy: policy_key.to_owned(),
                workload: w.reference(),
            },
            pods: Pods {
                replicas: w.replicas,
                autoscaler_max: w.autoscaler_max,
                max_surge: w.max_surge,
                terminating: w.terminating,
            },
            processes_per_pod,
            max_size: policy.pool.max_size.max(running.max_size(policy, w).unwrap_or(0)),
            route: route(i, w),
        })
        .collect()
}

/// The server's own figures, as a sample read them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    pub max_connections: u32,
    pub reserved: u32,
    /// `None` when they were not read: a database's or role's limit is then unknown.
    pub conn_limits: Option<ConnLimits>,
}

/// The limits that apply to `claims`: the server's, each claimed database's and
/// role's that is set, and each pooler's (`None`: its settings were not shown).
pub fn limits(
    server: &Measured<ServerLimits>,
    poolers: &BTreeMap<String, Option<PoolerLimits>>,
    claims: &[Claim],
) -> Vec<Limit> {
    let server = match server {
        Measured::Known(s) => s,
        Measured::Unknown(why) => {
            return vec![Limit {
                scope: Scope::Server,
                allows: Measured::Unknown(why.clone()),
                says: "max_connections - reserved".to_owned(),
            }];
        }
    };
    let mut out = vec![Limit {
        scope: Scope::Server,
        allows: Measured::Known(u64::from(server.max_connections.saturating_sub(server.reserved))),
        says: format!(
            "max_connections {} - {} reserved",
            server.max_connections, server.reserved
        ),
    }];
    out.extend(database_and_role_limits(server.conn_limits.as_ref(), claims));
    out.extend(pooler_limits(poolers));
    out
}

/// The `datconnlimit` of each database and the `rolconnlimit` of each role the
/// direct claims connect to, where one is set; unknown when they were not read.
fn database_and_role_limits(read: Option<&ConnLimits>, claims: &[Claim]) -> Vec<Limit> {
    let direct = claims.iter().filter(|c| c.route.pooler.is_none());
    let databases: BTreeSet<&str> = direct.clone().map(|c| c.route.database.as_str()).collect();
    let roles: BTreeSet<&str> = direct.filter_map(|c| c.route.role.as_deref()).collect();
    let named = |scope: Scope, found: Option<Option<&u32>>, says: String| match found {
        None => Some(Limit {
            scope,
            allows: Measured::Unknown("pg_database and pg_roles not read".to_owned()),
            says,
        }),
        // Not set (-1): no limit.
        Some(None) => None,
        Some(Some(l)) => Some(Limit {
            scope,
            allows: Measured::Known(u64::from(*l)),
            says,
        }),
    };
    let dbs = databases.into_iter().filter_map(|d| {
        named(
            Scope::Database(d.to_owned()),
            read.map(|l| l.databases.get(d)),
            format!("datconnlimit of database {d:?}"),
        )
    });
    let rls = roles.into_iter().filter_map(|r| {
        named(
            Scope::Role(r.to_owned()),
            read.map(|l| l.roles.get(r)),
            format!("rolconnlimit of role {r:?}"),
        )
    });
    dbs.chain(rls).collect()
}

/// Each pooler's Σ `max_client_conn`; unknown when it did not show its settings.
fn pooler_limits(poolers: &BTreeMap<String, Option<PoolerLimits>>) -> Vec<Limit> {
    poolers
        .iter()
        .map(|(name, pooler)| Limit {
            scope: Scope::PoolerClients(name.clone()),
            allows: match pooler {
                Some(p) => Measured::Known(p.max_client_conn),
                None => Measured::Unknown("the pooler did not show its settings".to_owned()),
            },
            says: match pooler {
                Some(p) => format!("max_client_conn over {} instance(s)", p.instances),
                None => "max_client_conn".to_owned(),
            },
        })
        .collect()
}

/// The server pools of each pooler as loads on the database: PgBouncer may open
/// `default_pool_size` per pool and instance whatever its clients do.
pub fn pooler_loads(poolers: &BTreeMap<String, Option<PoolerLimits>>, database: &str) -> Vec<Load> {
    poolers
        .iter()
        .filter_map(|(name, p)| {
            p.map(|p| Load {
                what: format!("server pools of pooler {name} (default_pool_size × pools × instances)"),
                connections: p.server_connections,
                database: Some(database.to_owned()),
                role: None,
                pooler: None,
            })
        })
        .collect()
}

/// The backends seen that no policy attributes to a workload, by database and
/// role: every backend of the sample less each policy's attributed count (a
/// policy's sample may be a little older than this one, so it saturates at 0).
pub fn unattributed<'a>(seen: &BackendCounts, attributed: impl IntoIterator<Item = &'a BackendCounts>) -> Vec<Load> {
    let mut left = seen.clone();
    for counts in attributed {
        for (key, n) in counts {
            if let Some(l) = left.get_mut(key) {
                *l = l.saturating_sub(*n);
            }
        }
    }
    left.into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|((database, role), connections)| Load {
            what: "unattributed backends".to_owned(),
            connections,
            database,
            role,
            pooler: None,
        })
        .collect()
}

/// The budget of one policy's workloads alone, from what its plan input says (the
/// database's limits and pooler): for a decision made without the database-wide
/// budget (`PlanInput::budget` is `None`). Other policies and unattributed backends
/// are not in it.
pub fn of_policy(input: &PlanInput) -> Budget {
    const POOLER: &str = "PgBouncer";
    let pooler = input.database.known().and_then(|l| l.pooler);
    let database = "the policy's database";
    const POLICY: &str = "this policy";
    let claims = claims(POLICY, input.policy, input.workloads, |_, _| Route {
        database: database.to_owned(),
        role: None,
        pooler: pooler.map(|_| POOLER.to_owned()),
    });
    let poolers: BTreeMap<String, Option<PoolerLimits>> =
        pooler.map(|p| (POOLER.to_owned(), Some(p))).into_iter().collect();
    let server = input.database.clone().map(|l| ServerLimits {
        max_connections: l.max_connections,
        reserved: l.reserved,
        conn_limits: Some(ConnLimits::default()),
    });
    Budget {
        database: database.to_owned(),
        asked_by: POLICY.to_owned(),
        limits: limits(&server, &poolers, &claims),
        loads: pooler_loads(&poolers, database),
        claims,
    }
}
