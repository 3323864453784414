//! The database-wide connection budget across passes. Each pass is one policy's, but
//! a database's budget is every policy's: each pass publishes its policy's share
//! (its workloads' claims and the backends it attributed) under the database server
//! it samples, and reads back the budget of everything published there. A share
//! expires three of its policy's intervals after it was published (a deleted policy,
//! one that moved to another database), so the sum follows the policies the
//! controller runs within one interval.
//!
//! The server is the key, not the database name: `max_connections` counts the
//! backends of every database on it; `datconnlimit` (the database name in each
//! claim's route) counts its own ([`crate::decide::budget`]).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{
    decide::budget::{
        Budget, Claim, Load,
        build::{self, BackendCounts, ServerLimits},
    },
    observation::{Measured, PoolerLimits},
    observe::postgres::Snapshot,
};

/// One policy's part of a database's budget.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Share {
    /// The database name its pools connect to.
    pub database: String,
    pub claims: Vec<Claim>,
    /// The backends (or, behind a pooler, the pooler's clients) it attributed to
    /// its workloads, by database and role.
    pub attributed: BackendCounts,
    /// The pooler its pools connect through, by name, with its settings when shown.
    pub pooler: Option<(String, Option<PoolerLimits>)>,
}

struct Published {
    share: Share,
    expires: Instant,
}

#[derive(Default)]
struct Server {
    shares: HashMap<String, Published>,
    /// The newest count of every client backend of the server, by database and role.
    seen: Option<BackendCounts>,
    /// The newest count of each pooler's clients.
    seen_by_pooler: BTreeMap<String, BackendCounts>,
}

/// Every database server's published shares.
#[derive(Default)]
pub struct Ledger {
    servers: Mutex<HashMap<String, Server>>,
}

/// What one pass saw of the server: its own sample (`Err`: why it could not be
/// taken), and, behind a pooler, the pooler's clients.
pub struct Seen<'a> {
    pub server: Result<&'a Snapshot, &'a str>,
    pub pooler_clients: Option<&'a Snapshot>,
}

/// The server a connection string names (its hosts and ports, without database,
/// role or TLS: every database and role on it shares `max_connections`), and its
/// database name.
pub fn server_of(identity: &crate::observe::conninfo::DatabaseIdentity) -> (String, String) {
    let hosts: Vec<String> = identity
        .endpoints
        .iter()
        .map(|e| {
            let host = match (&e.host, e.hostaddr) {
                (_, Some(a)) => a.to_string(),
                (Some(h), None) => h.clone(),
                (None, None) => String::new(),
            };
            format!("{host}:{}", e.port)
        })
        .collect();
    (hosts.join(","), identity.dbname.clone())
}

/// The backends of a sample by database and role.
pub fn counts(snapshot: &Snapshot) -> BackendCounts {
    let mut out = BackendCounts::new();
    for b in &snapshot.backends {
        *out.entry((b.database.clone(), b.user.clone())).or_default() += 1;
    }
    out
}

impl Ledger {
    /// Publishes `policy`'s share on `server` (kept for `keep`), and answers the
    /// server's budget with every share published there that has not expired.
    pub fn publish(
        &self,
        (server, label): (&str, &str),
        policy: &str,
        share: Share,
        seen: &Seen,
        (now, keep): (Instant, Duration),
    ) -> Budget {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        // Shares of every server expire, so a server nobody samples any more goes too.
        servers.retain(|_, s| {
            s.shares.retain(|_, p| p.expires > now);
            !s.shares.is_empty()
        });
        let entry = servers.entry(server.to_owned()).or_default();
        if let Ok(s) = seen.server {
            entry.seen = Some(counts(s));
        }
        if let (Some((name, _)), Some(clients)) = (&share.pooler, seen.pooler_clients) {
            entry.seen_by_pooler.insert(name.clone(), counts(clients));
        }
        entry.shares.insert(
            policy.to_owned(),
            Published {
                share,
                expires: now + keep,
            },
        );
        let mut budget = budget(label, entry, seen.server);
        budget.asked_by = policy.to_owned();
        budget
    }
}

/// The budget of one server from its shares.
fn budget(label: &str, server: &Server, sampled: Result<&Snapshot, &str>) -> Budget {
    let mut shares: Vec<&Share> = server.shares.values().map(|p| &p.share).collect();
    // The same budget whichever pass asks: shares in a stable order.
    shares.sort_by(|a, b| a.claims.first().map(|c| &c.id).cmp(&b.claims.first().map(|c| &c.id)));
    let claims: Vec<Claim> = shares.iter().flat_map(|s| s.claims.iter().cloned()).collect();
    let mut poolers: BTreeMap<String, Option<PoolerLimits>> = BTreeMap::new();
    for s in &shares {
        if let Some((name, limits)) = &s.pooler {
            poolers.insert(name.clone(), *limits);
        }
    }
    let mut loads: Vec<Load> = Vec::new();
    if let Some(seen) = &server.seen {
        loads.extend(build::unattributed(
            seen,
            shares.iter().filter(|s| s.pooler.is_none()).map(|s| &s.attributed),
        ));
    }
    for (name, seen) in &server.seen_by_pooler {
        let attributed = shares
            .iter()
            .filter(|s| s.pooler.as_ref().is_some_and(|(p, _)| p == name))
            .map(|s| &s.attributed);
        loads.extend(build::unattributed(seen, attributed).into_iter().map(|mut l| {
            l.what = format!("unattributed clients of pooler {name}");
            l.pooler = Some(name.clone());
            l
        }));
    }
    for s in &shares {
        if let Some((name, limits)) = &s.pooler {
            let one: BTreeMap<String, Option<PoolerLimits>> = [(name.clone(), *limits)].into_iter().collect();
            for load in build::pooler_loads(&one, &s.database) {
                if !loads.iter().any(|l| l.what == load.what) {
                    loads.push(load);
                }
            }
        }
    }
    let limits_read = match sampled {
        Ok(s) => Measured::Known(ServerLimits {
            max_connections: s.max_connections,
            reserved: s.reserved,
            conn_limits: s.conn_limits.clone(),
        }),
        Err(why) => Measured::Unknown(why.to_owned()),
    };
    Budget {
        database: label.to_owned(),
        asked_by: String::new(),
        limits: build::limits(&limits_read, &poolers, &claims),
        claims,
        loads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{
        Kind, WorkloadRef,
        budget::{ClaimId, Pods, Route},
    };
    use crate::observation::Backend;

    fn share(policy: &str, replicas: u32, attributed: u64) -> Share {
        Share {
            database: "app".to_owned(),
            claims: vec![Claim {
                id: ClaimId {
                    policy: policy.to_owned(),
                    workload: WorkloadRef {
                        kind: Kind::Deployment,
                        name: "web".to_owned(),
                    },
                },
                pods: Pods {
                    replicas,
                    ..Pods::default()
                },
                processes_per_pod: 1,
                max_size: 10,
                route: Route {
                    database: "app".to_owned(),
                    role: Some("app".to_owned()),
                    pooler: None,
                },
            }],
            attributed: [((Some("app".to_owned()), Some("app".to_owned())), attributed)]
                .into_iter()
                .collect(),
            pooler: None,
        }
    }

    fn snapshot(backends: usize) -> Snapshot {
        Snapshot {
            now: jiff::Timestamp::UNIX_EPOCH,
            max_connections: 100,
            reserved: 3,
            backends: (0..backends)
                .map(|i| Backend {
                    pid: i as i32,
                    database: Some("app".to_owned()),
                    user: Some("app".to_owned()),
                    ..Backend::default()
                })
                .collect(),
            pooler: None,
            slots: Default::default(),
            conn_limits: Some(Default::default()),
        }
    }

    #[test]
    fn two_policies_on_one_server_are_summed_and_a_share_expires() {
        let ledger = Ledger::default();
        let s = snapshot(12);
        let seen = Seen {
            server: Ok(&s),
            pooler_clients: None,
        };
        let t0 = Instant::now();
        let keep = Duration::from_secs(90);
        ledger.publish(
            ("db:5432", "db:5432"),
            "prod/a",
            share("prod/a", 5, 4),
            &seen,
            (t0, keep),
        );
        let b = ledger.publish(
            ("db:5432", "db:5432"),
            "prod/b",
            share("prod/b", 5, 6),
            &seen,
            (t0, keep),
        );
        assert_eq!(b.claims.len(), 2);
        // 2 × 50 claimed + 12 seen − 10 attributed.
        assert_eq!(b.need(&crate::decide::budget::Scope::Server), 102);
        assert!(b.assess().exceeded(), "102 > 97");
        // prod/a stops publishing: after its keep, only prod/b is left.
        let later = t0 + keep + Duration::from_secs(1);
        let b = ledger.publish(
            ("db:5432", "db:5432"),
            "prod/b",
            share("prod/b", 5, 6),
            &seen,
            (later, keep),
        );
        assert_eq!(b.claims.len(), 1);
        assert_eq!(b.need(&crate::decide::budget::Scope::Server), 56);
    }

    #[test]
    fn an_unsampled_server_makes_the_budget_unknown_not_empty() {
        let ledger = Ledger::default();
        let seen = Seen {
            server: Err("cannot connect"),
            pooler_clients: None,
        };
        let b = ledger.publish(
            ("db:5432", "db:5432"),
            "prod/a",
            share("prod/a", 5, 0),
            &seen,
            (Instant::now(), Duration::from_secs(90)),
        );
        let a = b.assess();
        assert!(!a.exceeded());
        assert_eq!(a.unknown().len(), 1);
    }
}
