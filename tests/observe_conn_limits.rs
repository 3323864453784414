//! The sample reads the databases' and roles' own connection limits beside
//! `pg_stat_activity`, against the real PostgreSQL at `DATABASE_URL`, as a monitor
//! role that is not a superuser sees them: the limits that are set, no limit (-1) not
//! read as one, and superusers (whom PostgreSQL does not limit) left out.

use poolwarden::observe::postgres::Sampler;
use tokio_postgres::{Client, NoTls};

fn url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn admin() -> Client {
    let (client, connection) = tokio_postgres::connect(&url(), NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// `url()` as another role, on the same server and database.
fn url_as(role: &str) -> String {
    let (scheme_host, db) = url()
        .rsplit_once('/')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .unwrap();
    let (scheme, rest) = scheme_host.split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{role}@{host}/{db}")
}

#[tokio::test]
async fn the_sample_reads_the_limits_that_are_set_and_leaves_superusers_out() {
    let admin = admin().await;
    let id = std::process::id();
    let (monitor, app, free, su, db) = (
        format!("pwt_cl_mon_{id}"),
        format!("pwt_cl_app_{id}"),
        format!("pwt_cl_free_{id}"),
        format!("pwt_cl_su_{id}"),
        format!("pwt_cl_db_{id}"),
    );
    admin
        .batch_execute(&format!(
            "CREATE ROLE {monitor} LOGIN; GRANT pg_monitor TO {monitor};
             CREATE ROLE {app} LOGIN CONNECTION LIMIT 7;
             CREATE ROLE {free} LOGIN;
             CREATE ROLE {su} SUPERUSER LOGIN CONNECTION LIMIT 2;"
        ))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {db} CONNECTION LIMIT 11"))
        .await
        .unwrap();

    let mut sampler = Sampler::new(&url_as(&monitor)).unwrap();
    let sampled = sampler.sample().await;
    drop(sampler);
    // One statement each: DROP DATABASE cannot run inside a transaction block.
    admin.batch_execute(&format!("DROP DATABASE {db}")).await.unwrap();
    let roles = format!("DROP ROLE {app}; DROP ROLE {free}; DROP ROLE {su};");
    admin.batch_execute(&roles).await.unwrap();
    // The sampler's session may take a moment to end.
    for _ in 0..50 {
        if admin
            .batch_execute(&format!("DROP ROLE IF EXISTS {monitor}"))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let snapshot = sampled.expect("a sample");
    let limits = snapshot.conn_limits.expect("the limits are read with every sample");
    assert_eq!(limits.roles.get(&app), Some(&7), "{limits:?}");
    assert_eq!(limits.roles.get(&free), None, "no limit is not a limit");
    assert_eq!(limits.roles.get(&su), None, "PostgreSQL does not limit a superuser");
    assert_eq!(limits.databases.get(&db), Some(&11), "{limits:?}");
}
