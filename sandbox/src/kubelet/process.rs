//! Pod processes: spawned in their own process group (so a signal reaches the
//! whole tree a shell command may start), stopped with SIGTERM then SIGKILL
//! after the grace period, and registered so nothing outlives the sandbox.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Process groups of running pods, killed with SIGKILL when the kubelet is dropped.
#[derive(Debug, Clone, Default)]
pub struct ProcessRegistry(Arc<Mutex<HashSet<i32>>>);

impl ProcessRegistry {
    fn insert(&self, pgid: i32) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(pgid);
    }

    fn remove(&self, pgid: i32) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&pgid);
    }

    pub fn pids(&self) -> Vec<i32> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }

    pub fn kill_all(&self) {
        for pgid in self.pids() {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

pub struct PodProcess {
    child: Child,
    pgid: i32,
    registry: ProcessRegistry,
}

pub fn spawn(
    argv: &[String],
    env: &[(String, String)],
    log: &Path,
    registry: &ProcessRegistry,
) -> std::io::Result<PodProcess> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "container has no command"))?;
    let log_out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let log_err = log_out.try_clone()?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_out))
        .stderr(Stdio::from(log_err))
        .process_group(0)
        .kill_on_drop(true);
    // Containers bring their own PATH; ours inherit the host's so commands resolve.
    for key in ["PATH", "HOME", "LANG", "RUST_LOG"] {
        if let Ok(v) = std::env::var(key) {
            cmd.env(key, v);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    // If the sandbox process dies without cleaning up, the kernel kills the pod.
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
    }
    let child = cmd.spawn()?;
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    registry.insert(pgid);
    Ok(PodProcess {
        child,
        pgid,
        registry: registry.clone(),
    })
}

impl PodProcess {
    pub fn pid(&self) -> i32 {
        self.pgid
    }

    /// Waits for the main process to exit; returns its exit code (128+signal if killed).
    pub async fn wait(&mut self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        match self.child.wait().await {
            Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
            Err(_) => -1,
        }
    }

    /// SIGTERM to the group, SIGKILL after `grace` if the main process is still there.
    pub async fn terminate(self, grace: Duration) -> i32 {
        self.terminate_with(Signal::SIGTERM, grace).await
    }

    /// `signal` to the group, SIGKILL after `grace` if the main process is still there.
    pub async fn terminate_with(mut self, signal: Signal, grace: Duration) -> i32 {
        let pg = Pid::from_raw(self.pgid);
        let _ = killpg(pg, signal);
        let code = match tokio::time::timeout(grace, self.wait()).await {
            Ok(code) => code,
            Err(_) => {
                let _ = killpg(pg, Signal::SIGKILL);
                self.wait().await
            }
        };
        // Leftovers of the group (children the main process did not reap).
        let _ = killpg(pg, Signal::SIGKILL);
        code
    }
}

impl Drop for PodProcess {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        self.registry.remove(self.pgid);
    }
}
