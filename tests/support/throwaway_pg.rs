//! A throwaway PostgreSQL instance for tests and benchmarks that must not touch the
//! shared server: its own data directory, port and settings (e.g. a high
//! `max_connections`), stopped and removed on drop. PostgreSQL refuses to run as
//! root, so when we are root it runs as the `postgres` system user.

#![allow(dead_code)]

use std::{
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct ThrowawayPg {
    pub port: u16,
    dir: tempfile::TempDir,
    settings: Vec<String>,
    server: Option<Child>,
}

/// A PostgreSQL program: from `POOLWARDEN_PG_BIN` (the major under test, set by
/// `.ci/test-postgres`) when it has it, else from the system's newest major. The
/// majors installed from npm carry the server only (`initdb`, `pg_ctl`, `postgres`);
/// the client programs (`pg_isready`, `pgbench`) speak every major's protocol and come
/// from the system.
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("POOLWARDEN_PG_BIN") {
        let path = PathBuf::from(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (run .ci/setup)")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort_by_key(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.last().expect("a PostgreSQL version").join("bin").join(name)
}

/// The major version of the server binaries [`bin`] finds (`postgres --version`).
pub fn major() -> u32 {
    let out = Command::new(bin("postgres"))
        .arg("--version")
        .output()
        .expect("postgres --version");
    let text = String::from_utf8_lossy(&out.stdout);
    // "postgres (PostgreSQL) 16.14" or "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the major version from {text:?}"))
}

fn postgres_ids() -> Option<(u32, u32)> {
    let out = Command::new("id").args(["-u", "postgres"]).output().ok()?;
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    let out = Command::new("id").args(["-g", "postgres"]).output().ok()?;
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some((uid, gid))
}

fn as_postgres(command: &mut Command) -> &mut Command {
    // `id -u` rather than libc::geteuid keeps the test support free of unsafe code.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if root && let Some((uid, gid)) = postgres_ids() {
        command.uid(uid).gid(gid);
    }
    command
}

impl ThrowawayPg {
    /// Initializes and starts an instance with extra `-c name=value` settings.
    pub fn start(settings: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        if let Some((uid, gid)) = postgres_ids() {
            let _ = Command::new("chown")
                .arg(format!("{uid}:{gid}"))
                .arg(dir.path())
                .status();
        }
        let data = dir.path().join("data");
        let status = as_postgres(
            Command::new(bin("initdb"))
                .args(["-A", "trust", "-U", "postgres", "-D"])
                .arg(&data),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("initdb");
        assert!(status.success(), "initdb failed");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.0/8 trust\n",
        )
        .expect("pg_hba");
        let mut pg = Self {
            port,
            dir,
            settings: settings.iter().map(|s| s.to_string()).collect(),
            server: None,
        };
        pg.start_server();
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server again after [`ThrowawayPg::stop`].
    pub fn start_server(&mut self) {
        let data = self.dir.path().join("data");
        let mut command = Command::new(bin("postgres"));
        command
            .arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=*", "-c"])
            .arg(format!("unix_socket_directories={}", self.dir.path().display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for s in &self.settings {
            command.args(["-c", s]);
        }
        self.server = Some(as_postgres(&mut command).spawn().expect("postgres"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "throwaway PostgreSQL did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Accepting TCP is not yet accepting logins: wait for pg_isready.
        while !Command::new(bin("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(
                Instant::now() < deadline,
                "throwaway PostgreSQL did not accept connections"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: SIGINT), keeping the data directory.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }
}

impl Drop for ThrowawayPg {
    fn drop(&mut self) {
        self.stop();
    }
}
