//! The sampler against the real PostgreSQL at `DATABASE_URL`: exact counts per
//! application name and state, the overrun measures, the permission check, and
//! that poolwarden itself holds at most one backend however often it samples.

use std::time::Duration;

use poolwarden::{
    decide::measure::{BackendLimit, EvidenceScope, Limits, summarise},
    observe::{
        attribution::{PodKey, attribute},
        evidence::group,
        postgres::{SampleError, Sampler},
    },
    policy::{Attribution, Measure},
};
use tokio_postgres::{Client, NoTls};

fn url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn connect_as(app: &str, url: &str) -> Client {
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    config.application_name(app);
    let (client, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// `url()` with another role, on the same host, port and database.
fn url_as(role: &str) -> String {
    let config: tokio_postgres::Config = url().parse().unwrap();
    let (host, port) = match (config.get_hosts().first(), config.get_ports().first()) {
        (Some(tokio_postgres::config::Host::Tcp(h)), Some(p)) => (h.clone(), *p),
        _ => ("127.0.0.1".into(), 5432),
    };
    let db = config.get_dbname().unwrap_or("postgres").to_owned();
    format!("postgres://{role}@{host}:{port}/{db}")
}

/// A login role of this test's own with `pg_monitor`, dropped on `drop_role`: the
/// sampler's sessions are then the only ones of that role, whatever else (another
/// poolwarden included) is connected to the same database.
async fn monitor_role(admin: &Client, test: &str) -> String {
    let role = format!("pwt_{test}_{}", std::process::id());
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN; GRANT pg_monitor TO {role}"
        ))
        .await
        .unwrap();
    role
}

async fn drop_role(admin: &Client, role: &str) {
    // The sampler's backend may take a moment to end after the sampler is dropped.
    for _ in 0..50 {
        if admin
            .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not drop role {role}");
}

/// A unique prefix per test run, so parallel tests and leftovers never mix.
fn prefix(test: &str) -> String {
    format!("pwt-{test}-{}", std::process::id())
}

#[tokio::test]
async fn sampler_attributes_known_connections_by_application_name_and_state() {
    let p = prefix("states");
    let (a, b) = (format!("{p}-a"), format!("{p}-b"));
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_as(&a, &url()).await); // idle
    }
    let busy = connect_as(&b, &url()).await;
    let in_tx = connect_as(&b, &url()).await;
    in_tx.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let sleeper = tokio::spawn(async move { busy.batch_execute("SELECT pg_sleep(3)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let admin = connect_as(&format!("{p}-admin"), &url()).await;
    let role = monitor_role(&admin, "states").await;
    let mut sampler = Sampler::new(&url_as(&role)).unwrap();
    let snapshot = sampler.sample().await.unwrap();
    let pods = [
        PodKey {
            name: a.clone(),
            ip: None,
        },
        PodKey {
            name: b.clone(),
            ip: None,
        },
    ];
    let attributed = attribute(Attribution::ApplicationName, &snapshot.backends, &pods);
    let pod_a = summarise(&Limits::default(), &attributed.per_pod[0], 1, snapshot.now, group);
    let pod_b = summarise(&Limits::default(), &attributed.per_pod[1], 1, snapshot.now, group);
    assert_eq!((pod_a.counts.total, pod_a.counts.idle), (3, 3));
    assert_eq!(
        (
            pod_b.counts.total,
            pod_b.counts.active,
            pod_b.counts.idle_in_transaction
        ),
        (2, 1, 1)
    );
    assert!(snapshot.max_connections >= 10 && snapshot.reserved >= 1);
    // The sampler's own backend is the only session of `role`; other poolwarden
    // processes on the same database are rightly in the snapshot.
    assert!(
        !snapshot
            .backends
            .iter()
            .any(|b| b.user.as_deref() == Some(role.as_str())),
        "the sampler excludes its own backend"
    );
    sleeper.await.unwrap().unwrap();
    drop(sampler);
    drop_role(&admin, &role).await;
}

#[tokio::test]
async fn lifetime_and_idle_overruns_are_measured_on_the_database_clock() {
    let app = prefix("overrun");
    let _c1 = connect_as(&app, &url()).await;
    let _c2 = connect_as(&app, &url()).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let _young = connect_as(&app, &url()).await;
    let mut sampler = Sampler::new(&url()).unwrap();
    let snapshot = sampler.sample().await.unwrap();
    let pods = [PodKey {
        name: app.clone(),
        ip: None,
    }];
    let attributed = attribute(Attribution::ApplicationName, &snapshot.backends, &pods);
    let limits = |measure, backend| Limits {
        measure: Some(measure),
        backend: Some(backend),
        evidence: EvidenceScope::Off,
    };
    let lifetime = limits(Measure::LifetimeOverrun, BackendLimit::lifetime(Duration::from_secs(2)));
    let idle = limits(Measure::IdleOverrun, BackendLimit::idle(Duration::from_secs(2), 1));
    let c = summarise(&lifetime, &attributed.per_pod[0], 1, snapshot.now, group);
    let idle = summarise(&idle, &attributed.per_pod[0], 1, snapshot.now, group);
    assert_eq!(c.counts.total, 3);
    assert_eq!(c.overrun, 2, "two connections outlived 2 s, the young one did not");
    assert_eq!(idle.overrun, 1, "two idle past 2 s, minus minSize 1");
}

#[tokio::test]
async fn a_role_without_pg_monitor_gets_a_permission_error_not_zeros() {
    let admin = connect_as("pwt-admin", &url()).await;
    let role = format!("pwt_nopriv_{}", std::process::id());
    admin
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN"))
        .await
        .unwrap();
    let mut sampler = Sampler::new(&url_as(&role)).unwrap();
    let err = sampler.sample().await.unwrap_err();
    match &err {
        SampleError::Permission { role: r, .. } => assert_eq!(r, &role),
        other => panic!("expected a permission error, got {other}"),
    }
    assert!(
        err.to_string().contains(&format!("GRANT pg_monitor TO {role};")),
        "{err}"
    );
    drop(sampler);
    drop_role(&admin, &role).await;
}

#[tokio::test]
async fn a_thousand_samples_hold_at_most_one_backend() {
    let admin = connect_as(&prefix("thousand-admin"), &url()).await;
    let role = monitor_role(&admin, "thousand").await;
    let mut sampler = Sampler::new(&format!("{}?application_name=ignored", url_as(&role))).unwrap();
    for _ in 0..1000 {
        sampler.sample().await.unwrap();
    }
    // The role is this test's own: its sessions are the sampler's, and only them.
    let own: Vec<(String, String)> = admin
        .query(
            "SELECT application_name, backend_type FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        own,
        vec![("poolwarden".to_owned(), "client backend".to_owned())],
        "the sampler's sessions after 1,000 samples"
    );
    drop(sampler);
    drop_role(&admin, &role).await;
}

/// The sample's statements are prepared on the sampler's connection; a statement does not
/// outlive it, so after the backend is killed the sampler reconnects and prepares again.
#[tokio::test]
async fn after_its_backend_is_terminated_the_sampler_reconnects_and_samples_again() {
    let admin = connect_as(&prefix("reprepare-admin"), &url()).await;
    let role = monitor_role(&admin, "reprepare").await;
    let mut sampler = Sampler::new(&url_as(&role)).unwrap();
    sampler.sample().await.unwrap();
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "the sampler's one backend");
    let mut sampled_again = false;
    for _ in 0..50 {
        if sampler.sample().await.is_ok() {
            sampled_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        sampled_again,
        "the sampler never sampled again after its backend was terminated"
    );
    drop(sampler);
    drop_role(&admin, &role).await;
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_then_backoff_never_a_zero() {
    let mut sampler = Sampler::new("postgres://postgres@127.0.0.1:1/postgres").unwrap();
    let first = sampler.sample().await.unwrap_err();
    assert_eq!(first.metric_label(), "connect", "{first}");
    let second = sampler.sample().await.unwrap_err();
    assert_eq!(second.metric_label(), "backing_off", "{second}");
}

#[tokio::test]
async fn inspect_shows_each_application_and_its_overruns_with_the_password_masked() {
    let app = prefix("inspect");
    let _held = [connect_as(&app, &url()).await, connect_as(&app, &url()).await];
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let bin = env!("CARGO_BIN_EXE_poolwarden");
    // A password in the URL must never be printed (trust auth ignores it).
    let with_password = url().replacen("postgres@", "postgres:hunter2@", 1);
    let json = tokio::process::Command::new(bin)
        .args([
            "inspect",
            "--database-url",
            &with_password,
            "--max-lifetime",
            "1s",
            "-o",
            "json",
        ])
        .output()
        .await
        .unwrap();
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    let body: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let row = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == app.as_str())
        .unwrap();
    assert_eq!(
        (
            row["total"].as_u64(),
            row["idle"].as_u64(),
            row["lifetimeOverrun"].as_u64()
        ),
        (Some(2), Some(2), Some(2))
    );
    assert!(body["total"]["total"].as_u64().unwrap() >= 2);

    let table = tokio::process::Command::new(bin)
        .args(["inspect", "--database-url", &with_password, "--max-lifetime", "1s"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8(table.stdout).unwrap();
    let line = text.lines().find(|l| l.starts_with(&app)).unwrap();
    assert!(line.ends_with("2!         0"), "{line:?}");
    assert!(text.lines().last().unwrap().starts_with("TOTAL"));
    assert!(!text.contains("hunter2") && !String::from_utf8_lossy(&json.stdout).contains("hunter2"));
}

#[tokio::test]
async fn inspect_watch_samples_again_until_stopped() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_poolwarden"))
        .args(["inspect", "--database-url", &url(), "--watch", "200ms"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let tables = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("TOTAL"))
        .count();
    assert!(tables >= 3, "{tables} samples in 1.5 s at a 200 ms interval");
}

/// The sample reads pg_stat_activity whole and keeps, in Rust, the client backends
/// that are not its own session, with their wait event as `type:event`.
#[tokio::test]
async fn the_sample_is_the_client_backends_but_its_own_with_their_wait_events() {
    let admin = connect_as(&prefix("rows-admin"), &url()).await;
    let role = monitor_role(&admin, "rows").await;
    let sleeper_app = prefix("rows-sleeper");
    let sleeper = connect_as(&sleeper_app, &url()).await;
    let sleeping = tokio::spawn(async move { sleeper.simple_query("SELECT pg_sleep(3)").await.map(|_| ()) });
    let mut sampler = Sampler::new(&url_as(&role)).unwrap();
    let mut seen = None;
    for _ in 0..100 {
        let s = sampler.sample().await.unwrap();
        if s.backends
            .iter()
            .any(|b| b.application_name == sleeper_app && b.state.as_deref() == Some("active"))
        {
            seen = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sample = seen.expect("the sleeping session is sampled while it sleeps");
    let sleeping_backend = sample
        .backends
        .iter()
        .find(|b| b.application_name == sleeper_app)
        .unwrap();
    assert_eq!(sleeping_backend.wait_event.as_deref(), Some("Timeout:PgSleep"));
    // The role is this test's own: its only session is the sampler's, left out.
    assert!(
        sample.backends.iter().all(|b| b.user.as_deref() != Some(role.as_str())),
        "the sampler's own session is not a backend of the sample"
    );
    // Background processes (checkpointer, walwriter, ...) are never backends.
    let others: Vec<i32> = admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE backend_type <> 'client backend'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!others.is_empty(), "PostgreSQL runs background processes");
    assert!(sample.backends.iter().all(|b| !others.contains(&b.pid)));
    sleeping.await.unwrap().unwrap();
    drop(sampler);
    drop_role(&admin, &role).await;
}

#[tokio::test]
async fn inspect_with_a_library_counts_only_what_its_pool_would_not_keep() {
    let app = prefix("inspect-lib");
    // Two connections resting idle since they connected, past a 1 s lifetime: a
    // SQLAlchemy pool of pool_size 2 keeps them (recycled at the next checkout).
    let _held = [connect_as(&app, &url()).await, connect_as(&app, &url()).await];
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let bin = env!("CARGO_BIN_EXE_poolwarden");
    let overrun = |min_size: &'static str| {
        let app = app.clone();
        async move {
            let out = tokio::process::Command::new(bin)
                .args([
                    "inspect",
                    "--database-url",
                    &url(),
                    "--max-lifetime",
                    "1s",
                    "--library",
                    "SQLAlchemy",
                    "--grace",
                    "0s",
                    "--min-size",
                    min_size,
                    "--max-size",
                    "10",
                    "-o",
                    "json",
                ])
                .output()
                .await
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let rows = body["rows"].as_array().unwrap().clone();
            let row = rows.into_iter().find(|r| r["group"] == app.as_str()).unwrap();
            row["lifetimeOverrun"].as_u64()
        }
    };
    assert_eq!(overrun("2").await, Some(0), "pool_size 2 keeps both");
    assert_eq!(overrun("1").await, Some(1), "pool_size 1 keeps one");
    let unknown = tokio::process::Command::new(bin)
        .args(["inspect", "--database-url", &url(), "--library", "Hibernate"])
        .output()
        .await
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown library"));
}
