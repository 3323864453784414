//! Sample + attribute + aggregate with 100, 500 and 1,000 live backends across 100
//! application names, on a throwaway PostgreSQL with max_connections raised:
//! `cargo bench --bench sample`. Prints the median time per sample, then, with the
//! 1,000 backends still open, the server-side latency of the sample query against
//! the bare read in `benches/sql/bare.sql`, both run by `pgbench -f` (prepared, as
//! the sampler runs it).
//!
//! Every held connection first runs a statement with a literal, so `query` is not
//! empty (as in a real app). Two limits are measured: `fresh` (no backend overruns
//! them, the common case) and `overrun` (every backend overruns its lifetime, so
//! every backend is part of a leak's evidence: the worst case).
//!
//! The server is the system's newest PostgreSQL, or another major's:
//! `.ci/setup 16` installs it, then
//! `POOLWARDEN_PG_BIN=/var/tmp/poolwarden-postgres/16.14.0-beta.17/bin cargo bench --bench sample`.

#[path = "../tests/support/throwaway_pg.rs"]
mod throwaway_pg;

use std::time::{Duration, Instant};

use poolwarden::{
    decide::measure::{BackendLimit, Limits, summarise},
    observe::{
        attribution::{PodKey, attribute},
        evidence::group,
        postgres::Sampler,
    },
    policy::{Attribution, Measure},
};
use tokio_postgres::NoTls;

#[tokio::main]
async fn main() {
    let pg = throwaway_pg::ThrowawayPg::start(&["max_connections=1100", "shared_buffers=32MB"]);
    let pods: Vec<PodKey> = (0..100)
        .map(|i| PodKey {
            name: format!("app-{i:03}"),
            ip: None,
        })
        .collect();
    let fresh = Limits {
        measure: Some(Measure::LifetimeOverrun),
        backend: Some(BackendLimit::lifetime(Duration::from_secs(600))),
        ..Limits::default()
    };
    let overrun = Limits {
        backend: Some(BackendLimit::lifetime(Duration::ZERO)),
        ..fresh
    };
    let mut held = Vec::new();
    let mut sampler = Sampler::new(&pg.url()).expect("sampler");
    println!("sample + attribute + aggregate, 100 application names, median of 21");
    for target in [100usize, 500, 1000] {
        while held.len() < target {
            let mut config: tokio_postgres::Config = pg.url().parse().expect("url");
            config.application_name(&pods[held.len() % pods.len()].name);
            let (client, connection) = config.connect(NoTls).await.expect("connect");
            tokio::spawn(connection);
            let statement = format!(
                "SELECT {} AS n, 'order-{}' AS ref WHERE 1 = 1",
                held.len() % 7,
                held.len() % 13
            );
            client.simple_query(&statement).await.expect("statement");
            held.push(client);
        }
        for (label, limits) in [("fresh", fresh), ("overrun", overrun)] {
            let mut times = Vec::new();
            for _ in 0..21 {
                let start = Instant::now();
                let snapshot = sampler.sample().await.expect("sample");
                let attributed = attribute(Attribution::ApplicationName, &snapshot.backends, &pods);
                let total: u32 = attributed
                    .per_pod
                    .iter()
                    .map(|b| summarise(&limits, b, 1, snapshot.now, group).counts.total)
                    .sum();
                times.push(start.elapsed());
                assert_eq!(total as usize, target, "every backend attributed");
            }
            times.sort();
            println!(
                "{target:>5} backends, {label:<7}: {:>6.2} ms",
                times[times.len() / 2].as_secs_f64() * 1000.0
            );
        }
    }
    // The statements as the sampler prepares them for this server's version.
    let (admin, connection) = tokio_postgres::connect(&pg.url(), NoTls).await.expect("connect");
    tokio::spawn(connection);
    let version: i32 = admin
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .expect("server_version_num")
        .get(0);
    drop(admin);
    let sample_sql = std::env::temp_dir().join(format!("poolwarden-sample-{}.sql", std::process::id()));
    std::fs::write(
        &sample_sql,
        format!(
            "{};\n{};\n",
            poolwarden::observe::postgres::header_query(version).trim(),
            poolwarden::observe::postgres::backends_query(version).trim()
        ),
    )
    .expect("script");
    let bare_sql = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/sql/bare.sql");
    let bare = pgbench(&pg.url(), std::path::Path::new(bare_sql));
    let sample = pgbench(&pg.url(), &sample_sql);
    let _ = std::fs::remove_file(&sample_sql);
    println!("\nserver-side, 1000 backends, PostgreSQL {version}, pgbench -M prepared -T 10 (latency average):");
    println!("  bare (benches/sql/bare.sql): {bare:.3} ms");
    println!(
        "  sample query:                {sample:.3} ms ({:.2}× the bare query; goal ≤ 1.2×)",
        sample / bare
    );
}

/// pgbench's average latency in ms for one client running `script` for 10 s.
fn pgbench(url: &str, script: &std::path::Path) -> f64 {
    let out = std::process::Command::new(throwaway_pg::bin("pgbench"))
        .args(["-n", "-M", "prepared", "-c", "1", "-T", "10", "-f"])
        .arg(script)
        .arg(url)
        .output()
        .expect("pgbench");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("latency average = ")?.strip_suffix(" ms")?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "pgbench gave no latency: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}
