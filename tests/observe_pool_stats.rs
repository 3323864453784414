//! The pool-stats scraper against real HTTP servers on loopback: the seeds' JSON,
//! Prometheus text, and every way an endpoint can fail — each a reason, never a zero.

use std::{net::IpAddr, time::Duration};

use poolwarden::{
    observation::{Measured, PoolClaims},
    observe::pool_stats::Scraper,
    policy::{StatsFormat, validate::ResolvedPoolStats},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

const SEEDS_JSON: &str = r#"{"status":"ok","checks":{"database_pool":{"checked_out":15,"pool_size":50,
 "tracking_stats":{"total_active":0,"total_acquired":3698,"total_released":3698},"tracking_discrepancy":15}}}"#;

/// Serves one canned answer per connection; `None` never answers (a hung server).
async fn serve(answer: Option<String>) -> u16 {
    serve_on("127.0.0.1:0", answer).await
}

async fn serve_on(addr: &str, answer: Option<String>) -> u16 {
    let listener = TcpListener::bind(addr).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                match answer {
                    Some(a) => {
                        let _ = socket.write_all(a.as_bytes()).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(30)).await,
                }
            });
        }
    });
    port
}

fn ok(body: &str) -> Option<String> {
    Some(format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ))
}

fn source(port: u16, format: StatsFormat, checked_out: &str, tracked: &str) -> ResolvedPoolStats {
    ResolvedPoolStats {
        port,
        path: "/health/detailed".into(),
        format,
        checked_out: checked_out.into(),
        tracked_active: tracked.into(),
        timeout: Duration::from_millis(500),
    }
}

fn seeds_source(port: u16) -> ResolvedPoolStats {
    source(
        port,
        StatsFormat::Json,
        "/checks/database_pool/checked_out",
        "/checks/database_pool/tracking_stats/total_active",
    )
}

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn unknown(m: Measured<PoolClaims>) -> String {
    match m {
        Measured::Unknown(why) => why,
        Measured::Known(c) => panic!("expected an unknown value, got {c:?}"),
    }
}

#[tokio::test]
async fn reads_the_seeds_health_detailed_shape() {
    let port = serve(ok(SEEDS_JSON)).await;
    let claims = Scraper::new(4).scrape(&seeds_source(port), LOCAL).await;
    assert_eq!(
        claims,
        Measured::Known(PoolClaims {
            checked_out: 15,
            tracked_active: 0
        })
    );
}

#[tokio::test]
async fn reads_prometheus_text_with_label_matchers() {
    let text = "# TYPE db_pool_checked_out gauge\ndb_pool_checked_out{pool=\"main\"} 7\ndb_pool_checked_out{pool=\"orm\"} 15\n# TYPE db_pool_tracked_active gauge\ndb_pool_tracked_active{pool=\"main\"} 5\n";
    let port = serve(ok(text)).await;
    let s = source(
        port,
        StatsFormat::Prometheus,
        r#"db_pool_checked_out{pool="main"}"#,
        r#"db_pool_tracked_active{pool="main"}"#,
    );
    assert_eq!(
        Scraper::new(4).scrape(&s, LOCAL).await,
        Measured::Known(PoolClaims {
            checked_out: 7,
            tracked_active: 5
        })
    );
    let ambiguous = source(
        port,
        StatsFormat::Prometheus,
        "db_pool_checked_out",
        "db_pool_tracked_active",
    );
    assert!(unknown(Scraper::new(4).scrape(&ambiguous, LOCAL).await).contains("2 samples match"));
}

#[tokio::test]
async fn every_failure_is_a_reason_never_a_zero() {
    let scraper = Scraper::new(4);
    let garbage = serve(ok("<html>oops</html>")).await;
    assert!(unknown(scraper.scrape(&seeds_source(garbage), LOCAL).await).contains("not JSON"));

    let error = serve(Some(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n".into(),
    ))
    .await;
    assert!(unknown(scraper.scrape(&seeds_source(error), LOCAL).await).contains("HTTP 500"));

    let hung = serve(None).await;
    assert!(unknown(scraper.scrape(&seeds_source(hung), LOCAL).await).contains("timed out after 500ms"));

    let huge = serve(ok(&format!("{{\"pad\":\"{}\"}}", "x".repeat(2 << 20)))).await;
    assert!(unknown(scraper.scrape(&seeds_source(huge), LOCAL).await).contains("body larger than"));

    let missing = serve(ok(r#"{"checks":{"database_pool":{"checked_out":3}}}"#)).await;
    assert!(unknown(scraper.scrape(&seeds_source(missing), LOCAL).await).contains("total_active: missing"));

    let not_a_number = serve(ok(
        r#"{"checks":{"database_pool":{"checked_out":"many","tracking_stats":{"total_active":1}}}}"#,
    ))
    .await;
    assert!(unknown(scraper.scrape(&seeds_source(not_a_number), LOCAL).await).contains("is not a count"));

    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert!(unknown(scraper.scrape(&seeds_source(closed), LOCAL).await).contains("request failed"));
}

#[tokio::test]
async fn scrape_all_keeps_the_order_of_the_pods() {
    // Two "pods" on the same port, one answering, one hung.
    let port = serve_on("127.0.0.2:0", ok(SEEDS_JSON)).await;
    serve_on(&format!("127.0.0.3:{port}"), None).await;
    let (good, hung): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
    let all = Scraper::new(2)
        .scrape_all(&seeds_source(port), &[hung, good, hung, good])
        .await;
    let known: Vec<bool> = all.iter().map(|m| matches!(m, Measured::Known(_))).collect();
    assert_eq!(known, [false, true, false, true]);
    assert!(matches!(&all[0], Measured::Unknown(why) if why.contains("timed out")));
}
