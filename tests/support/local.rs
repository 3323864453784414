//! What a test reaches without a cluster: the local PostgreSQL, plain HTTP, and
//! unique names. Shared by the root crate's tests and the sandbox's (through
//! `#[path]`, as `waits.rs` is), rather than copied.

#![allow(dead_code)]

use std::time::Duration;

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub async fn pg() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL at DATABASE_URL");
    tokio::spawn(conn);
    client
}

/// A name no other test running now uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{:05x}", (nanos ^ std::process::id()) & 0xfffff)
}

/// A plain HTTP GET: status and body.
pub async fn http_get(host: &str, port: u16, path: &str) -> Option<(u16, String)> {
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
        Some((code, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(10), fut).await.ok().flatten()
}

/// The body of a 2xx answer to a plain HTTP GET.
pub async fn http_ok(host: &str, port: u16, path: &str) -> Option<String> {
    http_get(host, port, path)
        .await
        .and_then(|(code, body)| (200..300).contains(&code).then_some(body))
}
