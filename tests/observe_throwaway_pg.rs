//! Sampler behaviour that needs a PostgreSQL of its own: the database going away and
//! coming back, a failed statement that leaves the session open, and client-address
//! attribution from distinct loopback addresses.

mod support;

use std::{net::IpAddr, time::Duration};

use poolwarden::{
    decide::measure::{Limits, summarise},
    observe::{
        attribution::{PodKey, attribute},
        evidence::group,
        postgres::Sampler,
    },
    policy::Attribution,
};
use support::throwaway_pg::ThrowawayPg;
use tokio::net::TcpSocket;
use tokio_postgres::NoTls;

#[tokio::test]
async fn the_database_going_away_is_an_error_and_the_sampler_recovers_when_it_returns() {
    let mut pg = ThrowawayPg::start(&[]);
    let mut sampler = Sampler::new(&pg.url()).unwrap();
    sampler.sample().await.unwrap();
    pg.stop();
    let err = sampler.sample().await.unwrap_err();
    assert!(matches!(err.metric_label(), "query" | "connect"), "{err}");
    pg.start_server();
    // Back off at most 500 ms after the first failure.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let snapshot = sampler.sample().await.unwrap();
    assert!(snapshot.max_connections > 0);
}

/// The sampler's session is never given up while it lives: a database that a leak
/// has filled would refuse a new one. A statement that fails (here: the role may no
/// longer run `pg_backend_pid()`, 42501) is an error, and the next sample runs on the
/// same backend.
#[tokio::test]
async fn a_failed_statement_keeps_the_session() {
    let pg = ThrowawayPg::start(&[]);
    let (admin, connection) = tokio_postgres::connect(&pg.url(), NoTls).await.unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute("CREATE ROLE mon LOGIN; GRANT pg_monitor TO mon;")
        .await
        .unwrap();
    let sessions = || async {
        admin
            .query("SELECT pid FROM pg_stat_activity WHERE usename = 'mon'", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, i32>(0))
            .collect::<Vec<i32>>()
    };
    let mut sampler = Sampler::new(&format!("postgres://mon@127.0.0.1:{}/postgres", pg.port)).unwrap();
    sampler.sample().await.unwrap();
    let before = sessions().await;
    assert_eq!(before.len(), 1, "{before:?}");

    admin
        .batch_execute("REVOKE EXECUTE ON FUNCTION pg_backend_pid() FROM PUBLIC")
        .await
        .unwrap();
    let err = sampler.sample().await.unwrap_err();
    assert_eq!(err.metric_label(), "query", "{err}");
    assert!(err.to_string().contains("42501"), "{err}");
    assert_eq!(
        sessions().await,
        before,
        "the session stays open after the failed statement"
    );

    admin
        .batch_execute("GRANT EXECUTE ON FUNCTION pg_backend_pid() TO PUBLIC")
        .await
        .unwrap();
    // Back off at most 500 ms after the first failure.
    tokio::time::sleep(Duration::from_millis(600)).await;
    sampler.sample().await.unwrap();
    assert_eq!(sessions().await, before, "sampled again on the same backend");
}

#[tokio::test]
async fn client_address_attribution_from_distinct_loopback_addresses() {
    let pg = ThrowawayPg::start(&[]);
    let config: tokio_postgres::Config = pg.url().parse().unwrap();
    let mut held = Vec::new();
    for (source, n) in [("127.0.0.2", 2), ("127.0.0.3", 1)] {
        for _ in 0..n {
            // Bind the socket to the pod's address before connecting, as a pod would.
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
            let stream = socket
                .connect(format!("127.0.0.1:{}", pg.port).parse().unwrap())
                .await
                .unwrap();
            let (client, connection) = config.connect_raw(stream, NoTls).await.unwrap();
            tokio::spawn(connection);
            held.push(client);
        }
    }
    let mut sampler = Sampler::new(&pg.url()).unwrap();
    let snapshot = sampler.sample().await.unwrap();
    let pods: Vec<PodKey> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .enumerate()
        .map(|(i, ip)| PodKey {
            name: format!("pod-{i}"),
            ip: Some(ip.parse::<IpAddr>().unwrap()),
        })
        .collect();
    let attributed = attribute(Attribution::ClientAddress, &snapshot.backends, &pods);
    let totals: Vec<u32> = attributed
        .per_pod
        .iter()
        .map(|b| summarise(&Limits::default(), b, 1, snapshot.now, group).counts.total)
        .collect();
    assert_eq!(totals, [2, 1, 0]);
    assert!(attributed.unattributed.is_empty(), "{:?}", attributed.unattributed);
}
