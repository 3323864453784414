//! Waiting on a loaded, shared machine: one knob for every wait, and a wait that runs
//! out says what it saw.
//!
//! `POOLWARDEN_TEST_TIME_SCALE` (default 3) multiplies every timeout given to
//! [`eventually`]; a wait that succeeds returns as soon as its condition holds, so a
//! generous timeout costs nothing on an idle machine. When a wait runs out, the
//! diagnostics registered for the current test (see [`show_on_timeout`]: the cluster's
//! policies, workloads, pods, Events, database backends and the controller's last log
//! lines) are printed to stderr, which the test harness shows with the failure.

#![allow(dead_code)]

use std::{
    cell::RefCell,
    collections::VecDeque,
    future::Future,
    io::Write,
    pin::Pin,
    sync::{Arc, Mutex, Once},
    time::{Duration, Instant},
};

/// What to print when a wait runs out.
pub type Diagnose = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

thread_local! {
    // Each test's body runs on its own thread (`#[tokio::test]` blocks on it there), so a
    // thread-local names that test's diagnostics even while tests run in parallel.
    static DIAGNOSE: RefCell<Option<Diagnose>> = const { RefCell::new(None) };
}

/// The factor every wait is multiplied by.
pub fn time_scale() -> f64 {
    std::env::var("POOLWARDEN_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
        .unwrap_or(3.0)
}

/// `d` times the time scale.
pub fn scaled(d: Duration) -> Duration {
    d.mul_f64(time_scale())
}

/// Registers what the current test's waits print when they run out (replacing any
/// earlier registration of this test).
pub fn show_on_timeout(diagnose: Diagnose) {
    DIAGNOSE.with(|d| *d.borrow_mut() = Some(diagnose));
}

/// Polls `f` every 200 ms until it returns true or the scaled `timeout` passes; on
/// timeout prints the registered diagnostics and returns false.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    let limit = scaled(timeout);
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if f().await {
        return true;
    }
    let diagnose = DIAGNOSE.with(|d| d.borrow().clone());
    let seen = match diagnose {
        Some(diagnose) => match tokio::time::timeout(Duration::from_secs(30), diagnose()).await {
            Ok(text) => text,
            Err(_) => "(reading the diagnostics took more than 30 s)".to_owned(),
        },
        None => "(this test registered no diagnostics)".to_owned(),
    };
    eprintln!(
        "--- a wait ran out after {:.1} s (timeout {:?} x scale {}); what was seen:\n{seen}\n---",
        start.elapsed().as_secs_f64(),
        timeout,
        time_scale()
    );
    false
}

/// The last lines the test process logged (every in-process controller's), kept so a
/// wait that runs out can show what the controller was doing.
static LOG: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
const LOG_LINES: usize = 50_000;

#[derive(Clone, Copy)]
struct RingWriter;

impl Write for RingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        let text = String::from_utf8_lossy(buf);
        let mut log = LOG.lock().unwrap_or_else(|e| e.into_inner());
        for line in text.lines() {
            if log.len() == LOG_LINES {
                log.pop_front();
            }
            log.push_back(line.to_owned());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the test process's log subscriber once: plain text into the ring (and to
/// stderr too when `RUST_LOG` is set), `RUST_LOG` filters, default `info`.
pub fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(|| RingWriter)
            .try_init();
    });
}

/// The last `n` captured log lines that contain `needle`.
pub fn log_lines_with(needle: &str, n: usize) -> Vec<String> {
    log_lines_matching(|l| l.contains(needle), n)
}

/// The last `n` captured log lines for which `keep` holds.
pub fn log_lines_matching(keep: impl Fn(&str) -> bool, n: usize) -> Vec<String> {
    let log = LOG.lock().unwrap_or_else(|e| e.into_inner());
    let mut lines: Vec<String> = log.iter().rev().filter(|l| keep(l)).take(n).cloned().collect();
    lines.reverse();
    lines
}

/// The last `n` lines of a file (a controller process's log), or why not.
pub fn tail_file(path: &std::path::Path, n: usize) -> Vec<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..]
                .iter()
                .map(|l| l.to_string())
                .collect()
        }
        Err(e) => vec![format!("({}: {e})", path.display())],
    }
}
