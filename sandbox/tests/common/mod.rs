//! Helpers shared by the sandbox's integration tests.
#![allow(dead_code)]

use std::time::Duration;

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The waits of the root crate's end-to-end tests (one time-scale knob, diagnostics
/// when a wait runs out), shared rather than copied.
#[path = "../../../tests/support/waits.rs"]
pub mod waits;
pub use waits::eventually;

/// A plain HTTP GET; returns the body of a 2xx response.
pub async fn http_get(host: &str, port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let code: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
        (200..300).contains(&code).then(|| body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), fut).await.ok().flatten()
}

pub async fn pg() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL at DATABASE_URL");
    tokio::spawn(conn);
    client
}

/// application_name -> backends, for names starting with `prefix`.
pub async fn backends(pg: &tokio_postgres::Client, prefix: &str) -> Vec<(String, String)> {
    pg.query(
        "select application_name, coalesce(state, '') from pg_stat_activity where application_name like $1 || '%'",
        &[&prefix],
    )
    .await
    .expect("query pg_stat_activity")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

pub fn process_exists(pid: i32) -> bool {
    // Signal 0 checks existence; zombies are reaped by tokio, so a dead process is gone.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        uuid::Uuid::new_v4().simple().to_string().get(..6).unwrap_or("x")
    )
}
