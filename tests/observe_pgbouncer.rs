//! Behind a real PgBouncer (Debian's 1.18), in session and in transaction mode: each
//! app's client connections are counted exactly as `SHOW CLIENTS` lists them, the one
//! holding a transaction open shows its backend's real state through the
//! link/remote_pid join, and a console that cannot be read is an error with the
//! reason, never an empty list.

mod support;

use std::time::Duration;

use poolwarden::{
    decide::measure::{Limits, summarise},
    observe::{
        attribution::{PodKey, attribute},
        evidence::group,
        pgbouncer::{ConsoleError, ConsoleReader, OLDEST_SUPPORTED, PoolMode, limits, read_all, through_pooler},
        postgres::Sampler,
    },
    policy::Attribution,
};
use support::{
    e2e::{database_url, unique},
    pgbouncer::{NOT_A_STATS_USER, PgBouncer},
};

fn upstream_port() -> u16 {
    poolwarden::observe::conninfo::ConnInfo::parse(&database_url())
        .ok()
        .and_then(|i| i.identity.endpoints.first().map(|e| e.port))
        .unwrap_or(5432)
}

async fn connect_as(url: &str, application_name: &str) -> tokio_postgres::Client {
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    config.application_name(application_name);
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.expect("through pgbouncer");
    tokio::spawn(conn);
    client
}

async fn clients_are_attributed_exactly(mode: &'static str) {
    let bouncer = PgBouncer::start(mode, upstream_port());
    let (holder, quiet) = (unique("pgb-holder"), unique("pgb-quiet"));
    let mut held = Vec::new();
    for _ in 0..3 {
        let c = connect_as(&bouncer.app_url(), &holder).await;
        c.simple_query("select 1").await.unwrap();
        held.push(c);
    }
    // One of the holder's connections keeps a transaction open: it holds a server
    // in either mode, and that backend is `idle in transaction`.
    held[0].simple_query("begin; select 1").await.unwrap();
    let q = connect_as(&bouncer.app_url(), &quiet).await;
    q.simple_query("select 1").await.unwrap();

    let mut readers = vec![ConsoleReader::new(&bouncer.admin_url()).unwrap()];
    let consoles = read_all(&mut readers).await.expect("console read");
    assert!(consoles[0].version >= OLDEST_SUPPORTED, "{:?}", consoles[0].version);
    assert_eq!(
        consoles[0].pool_mode,
        Some(if mode == "session" {
            PoolMode::Session
        } else {
            PoolMode::Transaction
        })
    );
    let budget = limits(&consoles).expect("settings shown");
    assert_eq!((budget.instances, budget.max_client_conn), (1, 200));
    assert_eq!(budget.server_connections, 20, "one pool (postgres/postgres) of 20");

    let mut sampler = Sampler::new(&database_url()).unwrap();
    let database = sampler.sample().await.expect("PostgreSQL");
    let seen = through_pooler(&database, &consoles);
    let pods = [
        PodKey {
            name: holder.clone(),
            ip: None,
        },
        PodKey {
            name: quiet.clone(),
            ip: None,
        },
    ];
    let attributed = attribute(Attribution::ApplicationName, &seen.backends, &pods);
    let per_pod: Vec<_> = attributed
        .per_pod
        .iter()
        .map(|bs| summarise(&Limits::default(), bs, 1, seen.now, group))
        .collect();

    // Exactly what SHOW CLIENTS, read directly, lists.
    assert_eq!(bouncer.clients_of(&holder).await, 3);
    assert_eq!(bouncer.clients_of(&quiet).await, 1);
    assert_eq!(per_pod[0].counts.total, 3, "{mode}: {:?}", per_pod[0]);
    assert_eq!(per_pod[1].counts.total, 1, "{mode}: {:?}", per_pod[1]);
    assert_eq!(
        per_pod[0].counts.idle_in_transaction, 1,
        "{mode}: the real backend state"
    );
    assert_eq!(per_pod[0].counts.idle, 2, "{mode}");
    assert_eq!(per_pod[1].counts.idle, 1, "{mode}");
    assert!(per_pod[0].oldest_backend_age.is_some());

    // The console's own session is not an app's connection.
    assert!(seen.backends.iter().all(|b| b.database.as_deref() != Some("pgbouncer")));
    drop(held);
    drop(q);
}

#[tokio::test]
async fn session_mode_clients_are_attributed_exactly_and_joined_to_their_backends() {
    clients_are_attributed_exactly("session").await;
}

#[tokio::test]
async fn transaction_mode_clients_are_attributed_exactly_and_joined_to_their_backends() {
    clients_are_attributed_exactly("transaction").await;
}

#[tokio::test]
async fn inspect_groups_the_poolers_clients_joined_to_postgresql() {
    let bouncer = PgBouncer::start("transaction", upstream_port());
    let holder = unique("pgb-inspect");
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(connect_as(&bouncer.app_url(), &holder).await);
    }
    held[1].simple_query("begin; select 1").await.unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_poolwarden"))
        .args([
            "inspect",
            "--pgbouncer",
            &bouncer.admin_url(),
            "--database-url",
            &database_url(),
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == holder.as_str())
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(
        (
            row["total"].as_u64(),
            row["idleInTransaction"].as_u64(),
            row["idle"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{row}"
    );
    assert!(
        report["target"]
            .as_str()
            .unwrap()
            .starts_with("clients of PgBouncer pgb_stats@127.0.0.1:"),
        "{report}"
    );
    drop(held);
}

#[tokio::test]
async fn a_role_outside_stats_users_is_refused_with_the_grant_to_make() {
    let bouncer = PgBouncer::start("transaction", upstream_port());
    let mut reader = ConsoleReader::new(&bouncer.admin_url_as(NOT_A_STATS_USER)).unwrap();
    let err = reader.read().await.unwrap_err();
    assert!(matches!(err, ConsoleError::Permission { .. }), "{err:?}");
    assert!(err.to_string().contains("stats_users"), "{err}");
    assert_eq!(err.metric_label(), "pooler_permission");
}

#[tokio::test]
async fn an_unreachable_console_is_an_error_not_an_empty_pooler() {
    let mut readers = vec![
        ConsoleReader::new("postgres://pgb_stats:hunter22@127.0.0.1:1/pgbouncer?sslmode=disable&connect_timeout=2")
            .unwrap(),
    ];
    let err = tokio::time::timeout(Duration::from_secs(10), read_all(&mut readers))
        .await
        .expect("fails fast")
        .unwrap_err();
    assert!(matches!(err, ConsoleError::Connect { .. }), "{err:?}");
    assert!(!err.to_string().contains("hunter22"), "{err}");
    assert!(err.to_string().starts_with("pgb_stats@127.0.0.1:1/pgbouncer"), "{err}");
}
