//! End to end, a leak fills the database. A PostgreSQL of its own (the major under
//! test: `.ci/test-postgres` points `POOLWARDEN_PG_BIN` at it) with `max_connections`
//! 20; a leaking pod opens connections until the server refuses the next one; then
//! the controller is restarted, so it needs a new session of a full database.
//!
//! - PostgreSQL 16+ with `reserved_connections` and a monitor role that has
//!   `pg_use_reserved_connections`: the new session takes a reserved slot, the
//!   controller samples, finds the leaking pod and restarts it within the usual window.
//! - Without that role, and on PostgreSQL 14 and 15 (which reserve slots for superusers
//!   only) whatever the grants: `DatabaseReachable=False` reason `DatabaseFull`, an
//!   Event and the metric, and nothing is restarted; once connections are freed by hand
//!   (`pg_terminate_backend`), poolwarden samples again and acts.
//!
//! docs/operations.md (When the database is full) and docs/decisions.md (rule 8) say so.

mod support;

use std::{collections::BTreeMap, process::Command, time::Duration};

use k8s_openapi::api::{core::v1::Pod, events::v1::Event};
use kube::{ResourceExt, api::ListParams};
use support::{
    e2e::{Cluster, app_get, eventually},
    throwaway_pg::{ThrowawayPg, major},
    waits::{log_lines_matching, scaled},
};
use tokio_postgres::{NoTls, error::SqlState};

const POLICY: &str = "
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {name: full}
spec:
  selector: {matchLabels: {team: odds}}
  interval: 1s
  database: {urlSecretRef: {name: pg, key: url}}
  pool: {minSize: 0, maxSize: 5, maxIdleSeconds: 2, maxLifetimeSeconds: 3}
  discrepancy: {measure: LifetimeOverrun, max: 1, sustainedFor: 3s, grace: 1s}
  remediation: {action: RestartPod, cooldown: 1h, maxRestartsPerHour: 2, minAvailableReplicas: 0}
";

/// A server with 20 connections, 2 kept for superusers and, from 16 on, 3 for
/// `pg_use_reserved_connections`; the app's role `leaky`; the monitor role `mon`
/// (`pg_monitor`, and `pg_use_reserved_connections` when `grant` and the major has it).
async fn database(grant: bool) -> (ThrowawayPg, tokio_postgres::Client) {
    let mut settings = vec!["max_connections=20", "superuser_reserved_connections=2"];
    if major() >= 16 {
        settings.push("reserved_connections=3");
    }
    let db = ThrowawayPg::start(&settings);
    // The test's own superuser session, held throughout: it watches and frees slots.
    let (admin, connection) = tokio_postgres::connect(&db.url(), NoTls).await.expect("superuser");
    tokio::spawn(connection);
    let mut sql = "CREATE ROLE leaky LOGIN; CREATE ROLE mon LOGIN; GRANT pg_monitor TO mon;".to_owned();
    if grant && major() >= 16 {
        sql.push_str("GRANT pg_use_reserved_connections TO mon;");
    }
    admin.batch_execute(&sql).await.expect("roles");
    (db, admin)
}

fn url_as(db: &ThrowawayPg, role: &str) -> String {
    format!("postgres://{role}@127.0.0.1:{}/postgres", db.port)
}

/// `poolwarden inspect` as the monitor role: its stderr.
fn inspect_stderr(db: &ThrowawayPg) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_poolwarden"))
        .args(["inspect", "--database-url", &url_as(db, "mon")])
        .output()
        .expect("poolwarden inspect");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The leaking pod opens connections until the server refuses the next one; returns
/// how many it holds. Then the app's role, and the monitor role unless it may take a
/// reserved slot, are refused with 53300.
async fn fill(db: &ThrowawayPg, pod: &Pod) -> usize {
    let mut held = 0;
    while held < 40 && app_get(pod, "/untracked?n=1").await.is_some() {
        held += 1;
    }
    let refused = tokio_postgres::connect(&url_as(db, "leaky"), NoTls).await.err();
    assert_eq!(
        refused.as_ref().and_then(|e| e.code()),
        Some(&SqlState::TOO_MANY_CONNECTIONS),
        "the database is full after {held} leaked connections: {refused:?}"
    );
    held
}

struct Story {
    db: ThrowawayPg,
    admin: tokio_postgres::Client,
    cluster: Cluster,
    pod: Pod,
}

/// The database, the cluster, one pod of `odds` on the app's role, the policy; a first
/// controller samples the database while it has room and stops. Then the pod fills it.
async fn filled(grant: bool, prefix: &str) -> Story {
    let (db, admin) = database(grant).await;
    // `inspect` warns, on stderr, exactly when the role could not take a slot of a
    // full database.
    let stderr = inspect_stderr(&db);
    let may_take_a_slot = grant && major() >= 16;
    assert_eq!(stderr.contains("warning:"), !may_take_a_slot, "{stderr}");
    let cluster = Cluster::start(prefix).await;
    cluster.database_secret("pg", &url_as(&db, "mon")).await;
    let app_url = url_as(&db, "leaky");
    let env = [
        ("DATABASE_URL", app_url.as_str()),
        ("PGAPPNAME", "fieldRef:metadata.name"),
        ("DB_POOL_MIN", "0"),
        ("DB_POOL_MAX", "5"),
        ("DB_POOL_MAX_IDLE", "2"),
        ("DB_POOL_MAX_LIFETIME", "3"),
    ];
    cluster
        .create_deployment("odds", &BTreeMap::from([("team", "odds")]), 1, &env)
        .await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            cluster.ready_pods("odds").await.len() == 1
        })
        .await,
        "odds runs"
    );
    cluster.create_policy(POLICY).await;
    let first = cluster.controller("first", false);
    assert!(
        eventually(Duration::from_secs(30), || reachable(&cluster, "True")).await,
        "the first controller samples the database while it has room"
    );
    first.stop().await;
    // Its session goes with it: the slot is free before the pod fills the database.
    let gone = eventually(Duration::from_secs(20), || async {
        admin
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE usename = 'mon'", &[])
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) == 0)
    })
    .await;
    assert!(gone, "the stopped controller's session ended");
    let pod = cluster.ready_pods("odds").await.remove(0);
    let held = fill(&db, &pod).await;
    assert!(held >= 10, "the leak holds most of the database: {held}");
    Story {
        db,
        admin,
        cluster,
        pod,
    }
}

async fn reachable(cluster: &Cluster, want: &str) -> bool {
    cluster
        .condition("full", "DatabaseReachable")
        .await
        .is_some_and(|c| c.0 == want)
}

async fn evicted(cluster: &Cluster, pod: &Pod) -> bool {
    let name = pod.name_any();
    eventually(Duration::from_secs(60), || async {
        cluster.api::<Pod>().get_opt(&name).await.ok().flatten().is_none()
    })
    .await
}

/// Lines of the controller's log about this test's database that say its role could
/// not take a slot of a full database.
fn slot_warnings(db: &ThrowawayPg) -> Vec<String> {
    let port = format!(":{}/", db.port);
    log_lines_matching(
        |l| l.contains(&port) && (l.contains("reserved connection slots") || l.contains("superusers only")),
        20,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pg_use_reserved_connections_a_full_database_is_sampled_and_the_leak_restarted() {
    let reserved = major() >= 16;
    let story = filled(true, "full-reserved").await;
    if !reserved {
        // PostgreSQL 14 and 15: the documented behaviour, as without the role.
        return reported_and_left_alone(story).await;
    }
    assert!(slot_warnings(&story.db).is_empty(), "{:?}", slot_warnings(&story.db));
    let controller = story.cluster.controller("restarted", false);
    assert!(
        evicted(&story.cluster, &story.pod).await,
        "the restarted controller took a reserved slot, sampled the full database and restarted the leaking pod"
    );
    let status = story.cluster.policy("full").await.status.unwrap();
    assert_eq!(status.remediations.len(), 1, "{:?}", status.remediations);
    assert_eq!(
        status.remediations[0].pod.as_deref(),
        Some(story.pod.name_any().as_str())
    );
    assert!(reachable(&story.cluster, "True").await);
    controller.stop().await;
    finish(story).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_reserved_slot_a_full_database_is_reported_and_nothing_is_restarted() {
    let story = filled(false, "full-plain").await;
    reported_and_left_alone(story).await;
}

/// The restarted controller cannot connect: `DatabaseFull`, an Event, the metric, and
/// no restart; connections freed by hand, it samples again and restarts the pod.
async fn reported_and_left_alone(story: Story) {
    let Story {
        db,
        admin,
        cluster,
        pod,
    } = story;
    // The first controller said, once, that its role could not take a reserved slot;
    // `inspect` says it too.
    let warnings = slot_warnings(&db);
    assert_eq!(warnings.len(), 1, "once per database and change: {warnings:?}");
    let free = tokio_postgres::connect(&url_as(&db, "leaky"), NoTls).await.is_ok();
    assert!(!free, "still full");
    let controller = cluster.controller("restarted", false);
    let full = eventually(Duration::from_secs(30), || async {
        cluster
            .condition("full", "DatabaseReachable")
            .await
            .is_some_and(|(status, reason, _)| status == "False" && reason == "DatabaseFull")
    })
    .await;
    assert!(full, "DatabaseReachable=False, reason DatabaseFull");
    let (_, _, message) = cluster.condition("full", "DatabaseReachable").await.unwrap();
    assert!(
        message.contains("53300") && message.contains("not sampled since poolwarden started"),
        "{message}"
    );
    assert_eq!(
        cluster.condition("full", "Degraded").await.map(|c| c.1),
        Some("DatabaseFull".into())
    );
    let series = format!(
        "poolwarden_policy_database_full{{namespace=\"{}\",policy=\"full\"}}",
        cluster.namespace
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            controller.metric(&series).await == Some(1.0)
        })
        .await,
        "{series} is 1"
    );
    let events = cluster.api::<Event>().list(&ListParams::default()).await.unwrap().items;
    let on_policy: Vec<&Event> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("DatabaseFull"))
        .collect();
    assert_eq!(on_policy.len(), 1, "{events:?}");
    assert_eq!(on_policy[0].type_.as_deref(), Some("Warning"));

    // Longer than maxLifetime + grace + sustainedFor, at a pass a second: nothing is
    // restarted on data it could not see.
    tokio::time::sleep(scaled(Duration::from_secs(3))).await;
    assert!(cluster.api::<Pod>().get_opt(&pod.name_any()).await.unwrap().is_some());
    assert!(cluster.policy("full").await.status.unwrap().remediations.is_empty());

    // Room made by hand: poolwarden samples again and the leak is acted on.
    let freed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM (SELECT pid FROM pg_stat_activity \
             WHERE application_name = $1 LIMIT 4) AS leaked",
            &[&pod.name_any()],
        )
        .await
        .expect("pg_terminate_backend")
        .get(0);
    assert_eq!(freed, 4);
    assert!(
        eventually(Duration::from_secs(60), || reachable(&cluster, "True")).await,
        "sampled again once there is room"
    );
    assert!(evicted(&cluster, &pod).await, "the leak is acted on once it is seen");
    assert!(
        eventually(Duration::from_secs(20), || async {
            controller.metric(&series).await == Some(0.0)
        })
        .await,
        "{series} is 0 again"
    );
    controller.stop().await;
    finish(Story {
        db,
        admin,
        cluster,
        pod,
    })
    .await;
}

async fn finish(story: Story) {
    if let Some(s) = story.cluster.sandbox {
        s.shutdown().await;
    }
    drop(story.admin);
    drop(story.db);
}
