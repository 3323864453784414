//! A container's `httpGet` probes as the kubelet runs them: one GET every
//! `periodSeconds` after `initialDelaySeconds`, and the result flips only
//! after `failureThreshold` failures or `successThreshold` successes in a row.
//! A readiness probe starts as failed (not Ready until it succeeds); a liveness
//! probe starts as succeeded, and its failure restarts the container.
//! See <https://kubernetes.io/docs/concepts/configuration/liveness-readiness-startup-probes/>
//! and the defaults in
//! <https://kubernetes.io/docs/tasks/configure-pod-container/configure-liveness-readiness-startup-probes/#configure-probes>.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Readiness,
    Liveness,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub port: u16,
    pub path: String,
    pub period: Duration,
    pub initial_delay: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// Port of an `httpGet` probe: a number, or the name of a container port.
fn probe_port(container: &Value, port: &Value) -> Option<u16> {
    match port {
        Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Value::String(s) => s.parse().ok().or_else(|| {
            container["ports"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == s.as_str())?["containerPort"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
        }),
        _ => None,
    }
}

/// The container's `httpGet` probe of `kind`, if it has one.
pub fn parse(container: &Value, kind: Kind) -> Option<Probe> {
    let p = match kind {
        Kind::Readiness => &container["readinessProbe"],
        Kind::Liveness => &container["livenessProbe"],
    };
    let get = &p["httpGet"];
    if !get.is_object() {
        return None;
    }
    let secs = |field: &str, default: u64| Duration::from_secs(p[field].as_u64().unwrap_or(default).max(1));
    let count =
        |field: &str, default: u64| u32::try_from(p[field].as_u64().unwrap_or(default).max(1)).unwrap_or(u32::MAX);
    Some(Probe {
        port: probe_port(container, &get["port"])?,
        path: get["path"].as_str().unwrap_or("/").to_string(),
        // The kubelet's default period is 10 s; the sandbox's workloads want
        // pods Ready fast, so an unset readiness period is 1 s here.
        period: match kind {
            Kind::Readiness => secs("periodSeconds", 1),
            Kind::Liveness => secs("periodSeconds", 10),
        },
        initial_delay: Duration::from_secs(p["initialDelaySeconds"].as_u64().unwrap_or(0)),
        timeout: secs("timeoutSeconds", 1),
        success_threshold: count("successThreshold", 1),
        failure_threshold: count("failureThreshold", 3),
    })
}

/// The result of a probe over its attempts.
#[derive(Debug, Clone)]
pub struct ProbeState {
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    pub ok: bool,
}

impl ProbeState {
    pub fn new(probe: &Probe, kind: Kind) -> ProbeState {
        ProbeState {
            success_threshold: probe.success_threshold,
            failure_threshold: probe.failure_threshold,
            successes: 0,
            failures: 0,
            ok: kind == Kind::Liveness,
        }
    }

    /// Records one attempt; true when the result changed.
    pub fn observe(&mut self, ok: bool) -> bool {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.ok && self.successes >= self.success_threshold {
                self.ok = true;
                return true;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.ok && self.failures >= self.failure_threshold {
                self.ok = false;
                return true;
            }
        }
        false
    }
}

/// A bare HTTP/1.1 GET: 200..400 is success, like the kubelet's prober.
pub async fn http_ok(ip: Ipv4Addr, port: u16, path: &str, timeout: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.37\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 32];
        let n = s.read(&mut buf).await.ok()?;
        let head = std::str::from_utf8(&buf[..n]).ok()?;
        let code: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chart_container() -> Value {
        json!({
            "ports": [{"name": "metrics", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 10, "failureThreshold": 3},
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 5},
        })
    }

    #[test]
    fn the_charts_probes_parse_with_the_kubelets_defaults() {
        let c = chart_container();
        let live = parse(&c, Kind::Liveness).unwrap();
        assert_eq!((live.port, live.path.as_str()), (8080, "/healthz"));
        assert_eq!(live.period, Duration::from_secs(10));
        assert_eq!((live.success_threshold, live.failure_threshold), (1, 3));
        assert_eq!(live.timeout, Duration::from_secs(1));
        let ready = parse(&c, Kind::Readiness).unwrap();
        assert_eq!((ready.port, ready.path.as_str()), (8080, "/readyz"));
        assert_eq!(ready.period, Duration::from_secs(5));
        assert!(parse(&json!({}), Kind::Liveness).is_none());
        assert!(
            parse(&json!({"livenessProbe": {"httpGet": {"port": "nope"}}}), Kind::Liveness).is_none(),
            "a named port the container does not declare"
        );
    }

    #[test]
    fn results_flip_only_after_their_thresholds() {
        let probe = parse(&chart_container(), Kind::Liveness).unwrap();
        let mut live = ProbeState::new(&probe, Kind::Liveness);
        assert!(live.ok, "alive until proven otherwise");
        assert!(!live.observe(false));
        assert!(!live.observe(false));
        assert!(!live.observe(true), "a success resets the count");
        assert!(!live.observe(false));
        assert!(!live.observe(false));
        assert!(live.observe(false), "the third failure in a row");
        assert!(!live.ok);
        let mut ready = ProbeState::new(&probe, Kind::Readiness);
        assert!(!ready.ok, "not ready until a success");
        assert!(ready.observe(true));
        assert!(ready.ok);
    }
}
