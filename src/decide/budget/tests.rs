use proptest::prelude::*;

use super::*;
use crate::decide::input::Kind;

fn id(policy: &str, name: &str) -> ClaimId {
    ClaimId {
        policy: policy.to_owned(),
        workload: WorkloadRef {
            kind: Kind::Deployment,
            name: name.to_owned(),
        },
    }
}

fn claim(policy: &str, name: &str, replicas: u32, max_size: u32) -> Claim {
    Claim {
        id: id(policy, name),
        pods: Pods {
            replicas,
            ..Pods::default()
        },
        processes_per_pod: 1,
        max_size,
        route: Route {
            database: "app".to_owned(),
            role: Some("app".to_owned()),
            pooler: None,
        },
    }
}

fn server(allows: u64) -> Limit {
    Limit {
        scope: Scope::Server,
        allows: Measured::Known(allows),
        says: format!("max_connections {} - 3 reserved", allows + 3),
    }
}

fn budget(claims: Vec<Claim>, limits: Vec<Limit>) -> Budget {
    Budget {
        database: "127.0.0.1:5432/app".to_owned(),
        asked_by: "prod/a".to_owned(),
        claims,
        loads: Vec::new(),
        limits,
    }
}

#[test]
fn an_autoscalers_max_replicas_counts_instead_of_the_replicas_running_now() {
    let mut web = claim("prod/pools", "web", 2, 10);
    let b = budget(vec![web.clone()], vec![server(97)]);
    assert!(!b.assess().exceeded(), "2 × 10 = 20 of 97");
    web.pods.autoscaler_max = Some(20);
    let b = budget(vec![web], vec![server(97)]);
    let a = b.assess();
    assert!(a.exceeded(), "20 × 10 = 200 of 97");
    assert_eq!(a.checks[0].need, 200);
    assert_eq!(
        message(&b, &a),
        "pools on 127.0.0.1:5432/app need 200 connections (Deployment/web (prod/pools): 20 (HPA maxReplicas) × \
         maxSize 10 = 200), exceeds max_connections 100 - 3 reserved = 97"
    );
}

#[test]
fn surge_terminating_pods_and_processes_multiply_into_the_need() {
    let mut web = claim("prod/pools", "web", 3, 5);
    web.pods.max_surge = 1;
    web.pods.terminating = 2;
    web.processes_per_pod = 4;
    assert_eq!(web.connections(), (3 + 1 + 2) * 4 * 5);
}

#[test]
fn two_policies_on_one_database_are_summed() {
    let b = budget(
        vec![claim("prod/a", "web", 5, 10), claim("prod/b", "worker", 5, 10)],
        vec![server(97)],
    );
    let a = b.assess();
    assert_eq!(a.checks[0].need, 100);
    assert!(a.exceeded());
    let m = message(&b, &a);
    assert!(
        m.contains("Deployment/web (prod/a)") && m.contains("Deployment/worker (prod/b)"),
        "{m}"
    );
}

#[test]
fn unattributed_backends_count_against_the_server_and_their_own_database_only() {
    let mut b = budget(
        vec![claim("prod/a", "web", 1, 10)],
        vec![
            server(97),
            Limit {
                scope: Scope::Database("app".to_owned()),
                allows: Measured::Known(15),
                says: "datconnlimit of \"app\"".to_owned(),
            },
        ],
    );
    b.loads.push(Load {
        what: "unattributed backends".to_owned(),
        connections: 50,
        database: Some("reports".to_owned()),
        role: Some("analyst".to_owned()),
        pooler: None,
    });
    let a = b.assess();
    assert_eq!(a.checks[0].need, 60, "the server counts every database");
    assert_eq!(a.checks[1].need, 10, "the database limit counts only its own");
    assert!(!a.exceeded());
    assert_eq!(
        max_size_cap(&b, &id("prod/a", "web")),
        Some(15),
        "datconnlimit 15 is the tighter"
    );
}

#[test]
fn a_role_limit_counts_only_that_roles_pools() {
    let mut other = claim("prod/b", "batch", 1, 30);
    other.route.role = Some("batch".to_owned());
    let b = budget(
        vec![claim("prod/a", "web", 2, 10), other],
        vec![
            server(97),
            Limit {
                scope: Scope::Role("app".to_owned()),
                allows: Measured::Known(25),
                says: "rolconnlimit of \"app\"".to_owned(),
            },
        ],
    );
    let a = b.assess();
    assert_eq!(a.checks[1].need, 20);
    assert!(!a.exceeded());
    assert_eq!(max_size_cap(&b, &id("prod/a", "web")), Some(12), "25 / 2 pods");
    assert_eq!(max_size_cap(&b, &id("prod/b", "batch")), Some(77), "97 - 20, one pod");
}

#[test]
fn pools_behind_a_pooler_count_against_its_clients_not_the_server() {
    let mut web = claim("prod/a", "web", 10, 50);
    web.route.pooler = Some("pgbouncer".to_owned());
    let mut b = budget(
        vec![web],
        vec![
            server(97),
            Limit {
                scope: Scope::PoolerClients("pgbouncer".to_owned()),
                allows: Measured::Known(1000),
                says: "max_client_conn over 2 instances".to_owned(),
            },
        ],
    );
    b.loads.push(Load {
        what: "pooler pgbouncer server pools".to_owned(),
        connections: 40,
        database: Some("app".to_owned()),
        role: None,
        pooler: None,
    });
    let a = b.assess();
    assert_eq!(a.checks[0].need, 40);
    assert_eq!(a.checks[1].need, 500);
    assert!(!a.exceeded());
    assert_eq!(max_size_cap(&b, &id("prod/a", "web")), Some(100));
}

#[test]
fn an_unknown_limit_is_never_read_as_zero_or_as_no_limit() {
    let b = budget(
        vec![claim("prod/a", "web", 2, 10)],
        vec![Limit {
            scope: Scope::Server,
            allows: Measured::Unknown("database not sampled".to_owned()),
            says: "max_connections - reserved".to_owned(),
        }],
    );
    let a = b.assess();
    assert!(!a.exceeded());
    assert_eq!(a.unknown().len(), 1);
    assert_eq!(max_size_cap(&b, &id("prod/a", "web")), None);
    assert!(
        message(&b, &a).contains("unknown (database not sampled)"),
        "{}",
        message(&b, &a)
    );
}

#[test]
fn the_cap_is_none_for_a_workload_not_in_the_budget_and_zero_when_the_others_fill_it() {
    let b = budget(
        vec![claim("prod/a", "web", 1, 10), claim("prod/b", "hog", 1, 200)],
        vec![server(97)],
    );
    assert_eq!(max_size_cap(&b, &id("prod/a", "nope")), None);
    assert_eq!(max_size_cap(&b, &id("prod/a", "web")), Some(0));
}

#[test]
fn the_message_is_bounded_and_names_the_largest_claims() {
    let claims: Vec<Claim> = (0..500)
        .map(|i| claim("prod/a", &format!("w{i:03}"), 1, 1 + i))
        .collect();
    let b = budget(claims, vec![server(97)]);
    let m = message(&b, &b.assess());
    assert!(m.len() <= MESSAGE_BYTES, "{}", m.len());
    assert!(m.contains("w499") && m.contains("497 more"), "{m}");
}

fn arb_claim() -> impl Strategy<Value = Claim> {
    (
        0u32..50,
        proptest::option::of(0u32..50),
        0u32..5,
        0u32..5,
        1u32..6,
        0u32..100,
        0usize..2,
    )
        .prop_map(|(replicas, hpa, surge, terminating, processes, max_size, role)| Claim {
            id: id("p", "w"),
            pods: Pods {
                replicas,
                autoscaler_max: hpa,
                max_surge: surge,
                terminating,
            },
            processes_per_pod: processes,
            max_size,
            route: Route {
                database: "app".to_owned(),
                role: Some(["app", "batch"][role].to_owned()),
                pooler: None,
            },
        })
}

fn arb_budget() -> impl Strategy<Value = Budget> {
    (
        proptest::collection::vec(arb_claim(), 1..6),
        0u64..5000,
        proptest::option::of(0u64..2000),
        0u64..200,
    )
        .prop_map(|(mut claims, have, role_limit, unattributed)| {
            for (i, c) in claims.iter_mut().enumerate() {
                c.id = id("p", &format!("w{i}"));
            }
            let mut limits = vec![server(have)];
            if let Some(r) = role_limit {
                limits.push(Limit {
                    scope: Scope::Role("app".to_owned()),
                    allows: Measured::Known(r),
                    says: "rolconnlimit".to_owned(),
                });
            }
            Budget {
                database: "db".to_owned(),
                asked_by: "p".to_owned(),
                claims,
                loads: vec![Load {
                    what: "unattributed backends".to_owned(),
                    connections: unattributed,
                    database: Some("app".to_owned()),
                    role: None,
                    pooler: None,
                }],
                limits,
            }
        })
}

proptest! {
    #[test]
    fn need_is_monotone_in_replicas_max_size_and_processes(b in arb_budget(), which in 0usize..6, by in 1u32..10) {
        let i = which % b.claims.len();
        let before = b.need(&Scope::Server);
        for grow in 0..3 {
            let mut more = b.clone();
            let c = &mut more.claims[i];
            match grow {
                0 => c.pods.replicas += by,
                1 => c.max_size += by,
                _ => c.processes_per_pod += by,
            }
            prop_assert!(more.need(&Scope::Server) >= before);
            prop_assert!(more.need(&Scope::Role("app".to_owned())) >= b.need(&Scope::Role("app".to_owned())));
        }
    }

    #[test]
    fn the_cap_never_lets_need_exceed_have(b in arb_budget(), which in 0usize..6) {
        let i = which % b.claims.len();
        let id = b.claims[i].id.clone();
        let route = b.claims[i].route.clone();
        let Some(cap) = max_size_cap(&b, &id) else {
            return Err(TestCaseError::fail("every limit is known"));
        };
        // Whether a limit that counts this workload is exceeded with it at `size`.
        let over = |size: u32| {
            let mut with = b.clone();
            with.claims[i].max_size = size;
            with.assess().checks.iter().any(|c| c.limit.scope.counts(&route) && c.exceeded())
        };
        if !over(0) {
            prop_assert!(!over(cap), "cap {cap} exceeds a limit");
            // And it is the largest: one more exceeds a limit (unless unbounded).
            if cap < u32::MAX {
                prop_assert!(over(cap + 1), "cap {cap} is not the largest");
            }
        } else {
            prop_assert_eq!(cap, 0, "the others alone exceed a limit");
        }
    }
}

/// A workload whose env carries a larger maxSize than the policy's (Auto wrote it
/// from a recommendation up to maxAllowed) claims what it runs with: counting the
/// policy's would leave room another workload's Auto could take past the limit.
#[test]
fn a_claim_counts_the_max_size_the_workload_runs_with_when_auto_raised_it() {
    let policy = crate::policy::validate(
        &serde_json::from_value(serde_json::json!({
            "selector": {"matchLabels": {"app": "x"}},
            "database": {"urlSecretRef": {"name": "pg", "key": "url"}},
            "pool": {"minSize": 1, "maxSize": 10},
            "sizing": {"mode": "Auto", "maxAllowed": 40},
        }))
        .unwrap(),
    )
    .unwrap();
    let env: crate::decide::Env = crate::decide::env::desired_env(&policy).into_iter().collect();
    let with_max = |max: &str| {
        let mut env = env.clone();
        env.insert(
            "DB_POOL_MAX".to_owned(),
            crate::decide::EnvValue::Literal(max.to_owned()),
        );
        crate::decide::Workload {
            kind: Kind::Deployment,
            name: format!("web-{max}"),
            replicas: 2,
            containers: vec![crate::decide::Container {
                name: "app".into(),
                env,
            }],
            ..Default::default()
        }
    };
    let route = |_: usize, _: &crate::decide::Workload| Route {
        database: "app".to_owned(),
        role: None,
        pooler: None,
    };
    let claims = build::claims("p", &policy, &[with_max("30"), with_max("4")], route);
    assert_eq!(
        claims.iter().map(|c| c.max_size).collect::<Vec<_>>(),
        [30, 10],
        "raised by Auto: what it runs with; lowered: the policy's, the safe side while a rollout still runs the old size"
    );
}
