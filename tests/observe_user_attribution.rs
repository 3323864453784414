//! `User` attribution against the real PostgreSQL at `DATABASE_URL`: two throwaway
//! roles stand for two workloads; each workload gets exactly its role's backends, a
//! role two workloads share is ambiguous, and `inspect --group-by user` shows the same.

use std::{collections::BTreeSet, time::Duration};

use poolwarden::{
    decide::measure::{Limits, summarise},
    observation::Measured,
    observe::{
        attribution::{WorkloadKey, attribute_by_user},
        evidence::group,
        postgres::Sampler,
    },
};
use tokio_postgres::{Client, NoTls};

fn url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Connects as `user` (trust auth: no password) and returns the client with its backend pid.
async fn connect_as_user(user: &str) -> (Client, i32) {
    let mut config: tokio_postgres::Config = url().parse().unwrap();
    config.user(user);
    config.application_name("pwt-user-attribution");
    let (client, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    let pid = client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    (client, pid)
}

async fn admin() -> Client {
    let (client, connection) = url()
        .parse::<tokio_postgres::Config>()
        .unwrap()
        .connect(NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Two roles unique to this run, so parallel runs and leftovers never mix.
fn roles() -> [String; 2] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let suffix = format!("{}_{nanos}", std::process::id());
    [format!("pw_user_a_{suffix}"), format!("pw_user_b_{suffix}")]
}

#[tokio::test]
async fn each_workload_gets_exactly_the_backends_of_its_role() {
    let admin = admin().await;
    let [a, b] = roles();
    admin
        .batch_execute(&format!("CREATE ROLE {a} LOGIN; CREATE ROLE {b} LOGIN"))
        .await
        .unwrap();
    // The checks run in their own task so the roles are dropped even when one fails.
    let outcome = tokio::spawn(check_roles(a.clone(), b.clone())).await;
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename IN ('{a}', '{b}')"
        ))
        .await
        .unwrap();
    for _ in 0..50 {
        let left: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = ANY($1)",
                &[&vec![a.as_str(), b.as_str()]],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin
        .batch_execute(&format!("DROP ROLE {a}; DROP ROLE {b}"))
        .await
        .unwrap();
    if let Err(failed) = outcome {
        std::panic::resume_unwind(failed.into_panic());
    }
}

async fn check_roles(a: String, b: String) {
    let mut held_a = Vec::new();
    for _ in 0..3 {
        held_a.push(connect_as_user(&a).await); // idle
    }
    let (idle_b, idle_b_pid) = connect_as_user(&b).await;
    let (in_tx, in_tx_pid) = connect_as_user(&b).await;
    in_tx.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let (_other, other_pid) = connect_as_user("postgres").await;

    let mut sampler = Sampler::new(&url()).unwrap();
    let snapshot = sampler.sample().await.unwrap();
    let workloads = [
        WorkloadKey {
            name: "Deployment/web".into(),
            user: a.clone(),
        },
        WorkloadKey {
            name: "Deployment/worker".into(),
            user: b.clone(),
        },
    ];
    let attributed = attribute_by_user(&snapshot.backends, &workloads);
    let pids = |w: usize| -> BTreeSet<i32> {
        attributed.per_workload[w]
            .known()
            .expect("known")
            .iter()
            .map(|b| b.pid)
            .collect()
    };
    assert_eq!(pids(0), held_a.iter().map(|(_, pid)| *pid).collect());
    assert_eq!(pids(1), BTreeSet::from([idle_b_pid, in_tx_pid]));
    assert!(attributed.ambiguous.is_empty());
    assert!(
        attributed.unattributed.iter().any(|b| b.pid == other_pid),
        "a role no workload logs in as is reported, not dropped"
    );

    // Counts by state for the workload, as status shows them.
    let worker = attributed.per_workload[1].clone().map(|bs| {
        // Two pods of the workload; the counts by state do not depend on a limit.
        summarise(&Limits::default(), &bs, 2, snapshot.now, group)
    });
    let Measured::Known(worker) = worker else {
        panic!("worker unknown")
    };
    assert_eq!(
        (
            worker.counts.total,
            worker.counts.idle,
            worker.counts.idle_in_transaction
        ),
        (2, 1, 1)
    );

    // Two workloads logging in as one role cannot be told apart.
    let sharing = [
        WorkloadKey {
            name: "Deployment/web".into(),
            user: a.clone(),
        },
        WorkloadKey {
            name: "Deployment/web-canary".into(),
            user: a.clone(),
        },
    ];
    let shared = attribute_by_user(&snapshot.backends, &sharing);
    assert!(shared.per_workload.iter().all(|w| w.known().is_none()));
    assert_eq!(shared.ambiguous.len(), 3);
    assert!(
        shared
            .ambiguous
            .iter()
            .all(|(_, names)| names == &["Deployment/web", "Deployment/web-canary"])
    );

    // `inspect --group-by user` sees the same roles.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_poolwarden"))
        .args(["inspect", "--database-url", &url(), "--group-by", "user", "-o", "json"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |role: &str| {
        body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["group"] == role)
            .cloned()
            .unwrap_or_else(|| panic!("no row for {role}: {body}"))
    };
    assert_eq!(
        (row(&a)["total"].as_u64(), row(&a)["idle"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(
        (row(&b)["total"].as_u64(), row(&b)["idleInTransaction"].as_u64()),
        (Some(2), Some(1))
    );
    drop((held_a, idle_b, in_tx));
}
