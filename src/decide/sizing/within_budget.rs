//! Property: whatever Auto writes never pushes the database's connection budget
//! over a limit that counts the workload (when the others alone fit), with the cap
//! from `decide::budget::max_size_cap`, the database-wide budget's own arithmetic.

use std::time::Duration;

use jiff::Timestamp;
use proptest::prelude::*;

use super::{
    auto::{AutoDecision, AutoInput, decide},
    recommend::Recommendation,
};
use crate::{
    decide::{
        budget::{Budget, Claim, ClaimId, Limit, Pods, Route, Scope, max_size_cap},
        input::{Kind, WorkloadRef},
    },
    observation::Measured,
};

fn claim(name: &str, replicas: u32, surge: u32, processes: u32, max_size: u32) -> Claim {
    Claim {
        id: ClaimId {
            policy: "prod/pools".to_owned(),
            workload: WorkloadRef {
                kind: Kind::Deployment,
                name: name.to_owned(),
            },
        },
        pods: Pods {
            replicas,
            max_surge: surge,
            ..Pods::default()
        },
        processes_per_pod: processes,
        max_size,
        route: Route {
            database: "app".to_owned(),
            role: Some("app".to_owned()),
            pooler: None,
        },
    }
}

fn budget(claims: Vec<Claim>, server: u64, role: Option<u64>) -> Budget {
    let mut limits = vec![Limit {
        scope: Scope::Server,
        allows: Measured::Known(server),
        says: "max_connections - reserved".to_owned(),
    }];
    if let Some(r) = role {
        limits.push(Limit {
            scope: Scope::Role("app".to_owned()),
            allows: Measured::Known(r),
            says: "rolconnlimit".to_owned(),
        });
    }
    Budget {
        database: "127.0.0.1:5432/app".to_owned(),
        asked_by: "prod/pools".to_owned(),
        claims,
        loads: Vec::new(),
        limits,
    }
}

proptest! {
    #[test]
    fn auto_never_pushes_the_database_budget_over_a_limit(
        others in prop::collection::vec((1u32..5, 0u32..2, 1u32..4, 1u32..30), 0..4),
        (replicas, surge, processes) in (1u32..6, 0u32..2, 1u32..4),
        current in 1u32..60,
        (lower, t, u) in (1u32..20, 0u32..20, 0u32..40),
        server in 0u64..1500,
        role in proptest::option::of(0u64..800),
    ) {
        let mut claims: Vec<Claim> = others
            .iter()
            .enumerate()
            .map(|(i, (r, s, p, m))| claim(&format!("other-{i}"), *r, *s, *p, *m))
            .collect();
        claims.push(claim("web", replicas, surge, processes, current));
        let b = budget(claims, server, role);
        let web = b.claim_id(WorkloadRef { kind: Kind::Deployment, name: "web".to_owned() });
        let i = b.claims.iter().position(|c| c.id == web).unwrap_or_default();
        let r = Recommendation { target: lower + t, lower, upper: lower + t + u, min_size: lower, confidence: 3.0, samples: 9000 };
        let decision = decide(&AutoInput {
            recommendation: Some(&r),
            current: Some(current),
            last_write: None,
            update_interval: Duration::from_secs(3600),
            min_confidence: 1.0,
            cap: max_size_cap(&b, &web),
            now: Timestamp::from_second(1_800_000_000).unwrap(),
        });
        let over = |size: u32| {
            let mut with = b.clone();
            with.claims[i].max_size = size;
            with.assess().exceeded()
        };
        match decision {
            AutoDecision::Set { max_size, .. } if !over(0) => {
                prop_assert!(!over(max_size), "Auto set {max_size} and the budget is exceeded: {r:?}");
            }
            AutoDecision::Refuse(_) => prop_assert!(over(r.lower), "refused though the lower bound {} fits", r.lower),
            _ => {}
        }
    }
}
