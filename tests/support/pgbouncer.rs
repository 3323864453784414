//! A throwaway PgBouncer (Debian's `pgbouncer`) in front of a PostgreSQL: its own
//! config and auth files in a temp dir, a free 127.0.0.1 port, session or transaction
//! mode; stopped on drop. PgBouncer refuses to run as root, so when we are root it
//! runs as the `postgres` system user (as the throwaway PostgreSQL does).
//!
//! Roles: `postgres` (the apps, passed through to the server), `pgb_stats` (in
//! `stats_users`: may read the console), `pgb_nobody` (may log in to the pooler, not
//! to the console).

#![allow(dead_code)]

use std::{
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub const STATS_USER: &str = "pgb_stats";
pub const NOT_A_STATS_USER: &str = "pgb_nobody";

pub struct PgBouncer {
    pub port: u16,
    pub mode: &'static str,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn postgres_ids() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

fn root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

/// The pgbouncer binary, or `None` when it is not installed (`.ci/setup` installs it:
/// the tests that need it fail without it, never skip).
pub fn binary() -> Option<&'static str> {
    ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

impl PgBouncer {
    /// Starts PgBouncer in `mode` (`session` or `transaction`) in front of the
    /// PostgreSQL at 127.0.0.1:`upstream_port`, every database passed through.
    pub fn start(mode: &'static str, upstream_port: u16) -> Self {
        let bin = binary().expect("pgbouncer installed (.ci/setup installs Debian's pgbouncer)");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let ini = dir.path().join("pgbouncer.ini");
        let users = dir.path().join("users.txt");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n\
                 * = host=127.0.0.1 port={upstream_port}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {users}\n\
                 stats_users = {STATS_USER}\n\
                 pool_mode = {mode}\n\
                 default_pool_size = 20\n\
                 max_client_conn = 200\n\
                 server_idle_timeout = 600\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 logfile = {log}\n",
                users = users.display(),
                log = dir.path().join("pgbouncer.log").display(),
            ),
        )
        .expect("pgbouncer.ini");
        std::fs::write(
            &users,
            format!("\"postgres\" \"\"\n\"{STATS_USER}\" \"\"\n\"{NOT_A_STATS_USER}\" \"\"\n"),
        )
        .expect("users.txt");
        let mut command = Command::new(bin);
        command.arg(&ini).stdout(Stdio::null()).stderr(Stdio::null());
        if root()
            && let Some((uid, gid)) = postgres_ids()
        {
            let _ = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(dir.path())
                .status();
            command.uid(uid).gid(gid);
        }
        let child = command.spawn().expect("pgbouncer");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "pgbouncer did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        PgBouncer {
            port,
            mode,
            dir,
            child: Some(child),
        }
    }

    /// Where the apps connect (as `postgres`, to the upstream `postgres` database).
    pub fn app_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable", self.port)
    }

    /// The admin console as the stats_users role.
    pub fn admin_url(&self) -> String {
        self.admin_url_as(STATS_USER)
    }

    pub fn admin_url_as(&self, role: &str) -> String {
        format!("postgres://{role}@127.0.0.1:{}/pgbouncer?sslmode=disable", self.port)
    }

    /// `SHOW CLIENTS` read directly: (application_name, state, link) of each client of
    /// a database other than the console's.
    pub async fn show_clients(&self) -> Vec<(String, String, String)> {
        let (client, conn) = tokio_postgres::connect(&self.admin_url(), tokio_postgres::NoTls)
            .await
            .expect("admin console");
        tokio::spawn(conn);
        let mut out = Vec::new();
        for m in client.simple_query("SHOW CLIENTS").await.expect("SHOW CLIENTS") {
            if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                let col = |name: &str| {
                    let i = r.columns().iter().position(|c| c.name() == name).unwrap();
                    r.get(i).unwrap_or_default().to_owned()
                };
                if col("database") != "pgbouncer" {
                    out.push((col("application_name"), col("state"), col("link")));
                }
            }
        }
        out
    }

    /// Client connections `SHOW CLIENTS` lists under `application_name`.
    pub async fn clients_of(&self, application_name: &str) -> usize {
        self.show_clients()
            .await
            .iter()
            .filter(|(app, _, _)| app == application_name)
            .count()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        self.stop();
    }
}
