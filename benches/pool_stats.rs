//! Scraping 1,000 pods: `cargo bench --bench pool_stats`. One loopback listener on
//! 0.0.0.0 stands in for 1,000 pods at 127.0.x.y; 5% of them never answer. Prints
//! the wall time with concurrency 64 and a 1 s timeout.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use poolwarden::{
    observation::Measured,
    observe::pool_stats::Scraper,
    policy::{StatsFormat, validate::ResolvedPoolStats},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

const BODY: &str = r#"{"checks":{"database_pool":{"checked_out":3,"tracking_stats":{"total_active":3}}}}"#;

fn pod_ip(i: usize) -> IpAddr {
    IpAddr::from([127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8])
}

fn hung(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            std::env::var("NO_HUNG").is_err() && ((o[2] as usize - 1) * 250 + o[3] as usize - 1) % 20 == 0
        }
        IpAddr::V6(_) => false,
    }
}

#[tokio::main]
async fn main() {
    let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = socket.read(&mut buf).await;
                let local = socket
                    .local_addr()
                    .map(|a| a.ip())
                    .unwrap_or(IpAddr::from([0, 0, 0, 0]));
                if hung(local) {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                } else {
                    let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{BODY}", BODY.len());
                    let _ = socket.write_all(answer.as_bytes()).await;
                }
            });
        }
    });
    let source = ResolvedPoolStats {
        port,
        path: "/health/detailed".into(),
        format: StatsFormat::Json,
        checked_out: "/checks/database_pool/checked_out".into(),
        tracked_active: "/checks/database_pool/tracking_stats/total_active".into(),
        timeout: Duration::from_secs(1),
    };
    let ips: Vec<IpAddr> = (0..1000).map(pod_ip).collect();
    let scraper = Scraper::new(64);
    let hung_pods = ips.iter().filter(|ip| hung(**ip)).count();
    for run in 1..=3 {
        let start = Instant::now();
        let results = scraper.scrape_all(&source, &ips).await;
        let elapsed = start.elapsed();
        let known = results.iter().filter(|r| matches!(r, Measured::Known(_))).count();
        assert_eq!(
            known,
            1000 - hung_pods,
            "every answering pod is read, every hung one is unknown"
        );
        println!(
            "run {run}: 1000 pods ({hung_pods} hung), concurrency 64, timeout 1s: {:.2} s",
            elapsed.as_secs_f64()
        );
    }
}
