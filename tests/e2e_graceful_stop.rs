//! End to end: the controller stops within moments of SIGTERM even while a pass waits
//! on a pod's stats endpoint that never answers (up to the policy's 30 s timeout):
//! writes stop at once, and a pass still reading is not waited out.

mod support;

use std::{
    collections::BTreeMap,
    io::Read,
    net::{IpAddr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use support::{
    e2e::{Cluster, database_url, eventually},
    waits::scaled,
};

fn policy(port: u16) -> String {
    format!(
        "
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {{name: slow-stats}}
spec:
  selector:
    matchLabels: {{team: stopping}}
  interval: 30s
  database: {{urlSecretRef: {{name: pg, key: url}}}}
  pool: {{minSize: 0, maxSize: 5, maxIdleSeconds: 30, maxLifetimeSeconds: 600}}
  poolStats:
    port: {port}
    path: /stats
    format: Json
    checkedOut: /checked_out
    trackedActive: /tracked_active
    timeout: 30s
  discrepancy: {{measure: PoolMinusTracked, max: 2, sustainedFor: 1m}}
  remediation: {{action: None}}
"
    )
}

/// A stats endpoint on `ip` that accepts and never answers; counts the connections.
fn silent_endpoint(ip: IpAddr) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((ip, 0)).expect("a port on the pod's address");
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            // Read the request and keep the connection open, answering nothing.
            let mut s = stream;
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = s.read(&mut [0u8; 1024]);
            held.push(s);
        }
    });
    (port, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_stops_within_moments_while_a_pass_waits_on_a_silent_stats_endpoint() {
    let cluster = Cluster::start("stop").await;
    let team = BTreeMap::from([("team", "stopping")]);
    cluster.create_deployment("slowstats", &team, 1, &[]).await;
    cluster.database_secret("pg", &database_url()).await;
    let ready = eventually(Duration::from_secs(60), || async {
        cluster.ready_pods("slowstats").await.len() == 1
    })
    .await;
    assert!(ready, "the pod is ready");
    let pod = cluster.ready_pods("slowstats").await.remove(0);
    let ip: IpAddr = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
        .expect("the pod's IP");
    let (port, accepted) = silent_endpoint(ip);
    cluster.create_policy(&policy(port)).await;
    let controller = cluster.controller("stopper", false);
    let scraping = eventually(Duration::from_secs(30), || async {
        accepted.load(Ordering::SeqCst) > 0
    })
    .await;
    assert!(scraping, "the pass asks the pod's stats endpoint");

    // The scrape would hold the pass for its 30 s timeout; the stop does not wait for
    // it (bounded below those 30 s, and below the 20 s the test's stop gives up after, whatever the time scale).
    let bound = scaled(Duration::from_secs(5)).min(Duration::from_secs(18));
    let stopped = tokio::time::timeout(bound, controller.stop()).await;
    assert!(
        stopped.is_ok(),
        "the controller did not stop within {bound:?} of the signal"
    );
}
