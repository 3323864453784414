//! `/metrics`, `/healthz` (the process serves and its passes turn, whatever their
//! outcome) and `/readyz` (caches synced).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, header::CONTENT_TYPE, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::metrics::Metrics;

/// What the endpoints read.
pub struct Health {
    pub metrics: Arc<Metrics>,
    pub ready: AtomicBool,
    pub liveness: Arc<Liveness>,
}

/// Whether passes still finish: `/healthz` turns unhealthy when none finished within
/// the time the controller says one is due (a few of the shortest interval), so a
/// controller whose every reconcile slot hangs gets restarted. A pass that failed
/// finished: the cluster refusing its writes is no reason to restart the process
/// (the policy reports it instead: `platform::kubernetes::failing`).
pub struct Liveness {
    started: Instant,
    /// Milliseconds after `started` the last pass finished.
    last_pass: AtomicU64,
    /// Milliseconds within which a pass must finish; 0 while none is expected.
    due: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            started: Instant::now(),
            last_pass: AtomicU64::new(0),
            due: AtomicU64::new(0),
        }
    }
}

impl Liveness {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A pass finished (or passes start being expected: the clock starts now).
    pub fn pass_finished(&self) {
        self.last_pass.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Within how long a pass must finish; `None` while none is expected (no
    /// policy, or a follower).
    pub fn set_due(&self, due: Option<Duration>) {
        let ms = due.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1));
        self.due.store(ms, Ordering::Relaxed);
    }

    /// `Err` with the reason when no pass finished within the due time.
    pub fn check(&self) -> Result<(), String> {
        let due = self.due.load(Ordering::Relaxed);
        let since = self.now_ms().saturating_sub(self.last_pass.load(Ordering::Relaxed));
        if due == 0 || since <= due {
            Ok(())
        } else {
            Err(format!(
                "no reconcile pass finished for {} s (due within {} s)\n",
                since / 1000,
                due / 1000
            ))
        }
    }
}

/// Binds `addr` and serves until the task is dropped. Returns the bound address
/// (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let health = health.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let health = health.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(&req, &health)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((bound, task))
}

fn answer(req: &Request<Incoming>, health: &Health) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            health.metrics.render(),
        ),
        "/healthz" => match health.liveness.check() {
            Ok(()) => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
            Err(why) => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", why),
        },
        "/readyz" if health.ready.load(Ordering::Relaxed) => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "caches not synced\n".to_owned(),
        ),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_owned()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(CONTENT_TYPE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_fails_only_when_a_due_pass_did_not_finish() {
        let l = Liveness::default();
        assert!(l.check().is_ok(), "nothing expected yet");
        l.set_due(Some(Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(20));
        assert!(l.check().is_err());
        l.pass_finished();
        assert!(l.check().is_ok());
        l.set_due(None);
        std::thread::sleep(Duration::from_millis(20));
        assert!(l.check().is_ok());
    }
}
