//! Reading PgBouncer's admin console (the virtual `pgbouncer` database) and seeing a
//! pod's connections on the pooler's client side.
//!
//! Behind a pooler `pg_stat_activity` shows PgBouncer's server connections: their
//! `client_addr` is the pooler, and in transaction mode an idle server keeps the
//! *last* client's `application_name`. So a policy with `spec.database.pooler` counts
//! each pod's *client* connections (`SHOW CLIENTS`: `application_name` from 1.18,
//! `addr`), and for each client that holds a server right now it reads the real
//! backend's state through the join `client.ptr = server.link`,
//! `server.remote_pid = pg_stat_activity.pid`. The result is a [`Snapshot`] whose
//! backends are the clients, so attribution and the measures work unchanged.
//!
//! The console speaks the simple query protocol only (no Parse/Bind), hence
//! `simple_query` and text values. Columns are read by name: versions add columns
//! (`prepared_statements` in 1.21, `id` in 1.24) and the reader ignores the ones it
//! does not use. <https://www.pgbouncer.org/usage.html#admin-console>

use std::{collections::HashMap, net::IpAddr, time::Duration};

use jiff::{Timestamp, civil::DateTime, tz::TimeZone};
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage, SimpleQueryRow};
use tokio_postgres_rustls::MakeRustlsConnect;

pub use crate::observation::PoolerLimits;

use super::{
    backend::Backend,
    conninfo::{ConnInfo, ConnInfoError, Endpoint},
    postgres::{SAMPLER_APPLICATION_NAME, Snapshot},
};

/// The oldest PgBouncer whose `SHOW CLIENTS` carries `application_name` (PR #449), so
/// that a client can be attributed to a pod at all.
pub const OLDEST_SUPPORTED: Version = Version(1, 18, 0);

/// A PgBouncer version, from `SHOW VERSION` (`PgBouncer 1.18.0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Version {
    /// Reads `PgBouncer 1.18.0` (also `PgBouncer 1.21.0 ...` with build details).
    pub fn parse(text: &str) -> Option<Version> {
        let rest = text.trim().strip_prefix("PgBouncer")?.trim_start();
        let number = rest.split_whitespace().next()?;
        let mut parts = number.split('.').map(|p| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse::<u32>()
                .ok()
        });
        let major = parts.next()??;
        let minor = parts.next()??;
        let patch = parts.next().flatten().unwrap_or(0);
        Some(Version(major, minor, patch))
    }
}

/// PgBouncer's `pool_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PoolMode {
    /// A client holds one server connection from login to logout.
    Session,
    /// A client holds a server connection only during a transaction.
    Transaction,
    /// A client holds a server connection only during a statement.
    Statement,
}

impl PoolMode {
    fn parse(text: &str) -> Option<PoolMode> {
        match text {
            "session" => Some(PoolMode::Session),
            "transaction" => Some(PoolMode::Transaction),
            "statement" => Some(PoolMode::Statement),
            _ => None,
        }
    }
}

/// One row of `SHOW CLIENTS` or `SHOW SERVERS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub user: String,
    pub database: String,
    /// `active`, `waiting`, `idle` (1.25+), `active_cancel_req`, `used`, `tested`, …
    pub state: String,
    /// The peer's address; `None` for a Unix socket.
    pub addr: Option<IpAddr>,
    pub port: u16,
    pub connect_time: Timestamp,
    pub request_time: Timestamp,
    /// The connection's identity within this instance (an address, reused after close).
    pub ptr: String,
    /// The `ptr` of the connection it is paired with (client ↔ server); empty when none.
    pub link: String,
    /// The backend's `pg_stat_activity.pid` (servers; 0 for clients).
    pub remote_pid: i32,
    pub application_name: String,
}

/// One instance's console, read in one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Console {
    /// How the instance is named in messages: `user@host:port/pgbouncer`.
    pub target: String,
    pub version: Version,
    pub pool_mode: Option<PoolMode>,
    pub max_client_conn: Option<u32>,
    pub default_pool_size: Option<u32>,
    /// Pools (database, user pairs) other than the console's own.
    pub pools: u32,
    /// Clients other than the console's own sessions.
    pub clients: Vec<Connection>,
    pub servers: Vec<Connection>,
}

/// Why a console could not be read. Messages name it by identity, never with the
/// password.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConsoleError {
    #[error("invalid PgBouncer admin URL: {0}")]
    InvalidUrl(#[from] ConnInfoError),
    #[error("{target}: {reason}")]
    Tls { target: String, reason: String },
    #[error("{target}: cannot connect to the PgBouncer admin console: {reason}")]
    Connect { target: String, reason: String },
    #[error(
        "{target}: PgBouncer refused the admin console to role {role:?} ({reason}): list it in stats_users (or admin_users)"
    )]
    Permission {
        target: String,
        role: String,
        reason: String,
    },
    #[error("{target}: {command} failed: {reason}")]
    Query {
        target: String,
        command: &'static str,
        reason: String,
    },
    #[error(
        "{target}: {found}: poolwarden reads PgBouncer {OLDEST_SUPPORTED} or later (SHOW CLIENTS needs application_name)"
    )]
    UnsupportedVersion { target: String, found: String },
}

impl ConsoleError {
    /// Stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ConsoleError::InvalidUrl(_) => "pooler_invalid_url",
            ConsoleError::Tls { .. } => "pooler_tls_setup",
            ConsoleError::Connect { .. } => "pooler_connect",
            ConsoleError::Permission { .. } => "pooler_permission",
            ConsoleError::Query { .. } => "pooler_query",
            ConsoleError::UnsupportedVersion { .. } => "pooler_unsupported_version",
        }
    }
}

/// The admin console of one PgBouncer instance. A reader holds at most one console
/// session and drops it after any failure.
pub struct ConsoleReader {
    info: ConnInfo,
    config: Config,
    tls: Option<MakeRustlsConnect>,
    target: String,
    client: Option<Client>,
}

impl ConsoleReader {
    /// A reader for an admin URL (URL or key=value). Nothing connects yet.
    pub fn new(url: &str) -> Result<Self, ConsoleError> {
        Self::for_console(ConnInfo::parse(url)?)
    }

    /// The reader of the instance at `addr`, with the URL's port, role, password and
    /// TLS settings: one pod of several behind one Service.
    pub fn at_address(url: &str, addr: IpAddr) -> Result<Self, ConsoleError> {
        let mut info = ConnInfo::parse(url)?;
        let port = info.identity.endpoints.first().map(|e| e.port).unwrap_or(6432);
        info.identity.endpoints = vec![Endpoint {
            host: Some(addr.to_string()),
            hostaddr: None,
            port,
        }];
        Self::for_console(info)
    }

    fn for_console(info: ConnInfo) -> Result<Self, ConsoleError> {
        let target = info.identity.to_string();
        let tls = info.identity.tls.connector().map_err(|reason| ConsoleError::Tls {
            target: target.clone(),
            reason: info.scrub(reason),
        })?;
        let mut config = info.config();
        // No `options` startup parameter: PgBouncer refuses startup parameters it does
        // not know unless they are listed in ignore_startup_parameters.
        config.application_name(SAMPLER_APPLICATION_NAME);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        Ok(Self {
            info,
            config,
            tls,
            target,
            client: None,
        })
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// One round: SHOW VERSION, CONFIG, POOLS, CLIENTS, SERVERS.
    pub async fn read(&mut self) -> Result<Console, ConsoleError> {
        let result = self.read_once().await;
        if result.is_err() {
            self.client = None;
        }
        result
    }

    async fn read_once(&mut self) -> Result<Console, ConsoleError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(self.connect().await?);
        }
        let Some(client) = self.client.as_ref() else {
            return Err(self.connect_error("no connection".into()));
        };
        let show = |command: &'static str| show(client, &self.target, command);
        let version = supported_version(&show("SHOW VERSION").await?, &self.target)?;
        let config_rows = show("SHOW CONFIG").await?;
        let setting = |key: &str| -> Option<String> {
            config_rows
                .iter()
                .find(|r| column(r, "key") == Some(key))
                .and_then(|r| column(r, "value"))
                .map(str::to_owned)
        };
        let pool_rows = show("SHOW POOLS").await?;
        let pools = pool_rows
            .iter()
            .filter(|r| column(r, "database") != Some(ADMIN_DATABASE))
            .count() as u32;
        let clients = rows(&show("SHOW CLIENTS").await?, &self.target, "SHOW CLIENTS")?
            .into_iter()
            .filter(|c| c.database != ADMIN_DATABASE)
            .collect();
        let servers = rows(&show("SHOW SERVERS").await?, &self.target, "SHOW SERVERS")?;
        Ok(Console {
            target: self.target.clone(),
            version,
            pool_mode: setting("pool_mode").as_deref().and_then(PoolMode::parse),
            max_client_conn: setting("max_client_conn").and_then(|v| v.parse().ok()),
            default_pool_size: setting("default_pool_size").and_then(|v| v.parse().ok()),
            pools,
            clients,
            servers,
        })
    }

    async fn connect(&mut self) -> Result<Client, ConsoleError> {
        if let Ok(Some(p)) = self.info.password() {
            self.config.password(p);
        }
        let result = match &self.tls {
            None => self.config.connect(NoTls).await.map(|(client, connection)| {
                tokio::spawn(connection);
                client
            }),
            Some(tls) => self.config.connect(tls.clone()).await.map(|(client, connection)| {
                tokio::spawn(connection);
                client
            }),
        };
        result.map_err(|e| {
            let reason = self.info.scrub(error_text(&e));
            // PgBouncer answers a role in neither stats_users nor admin_users with
            // FATAL "not allowed" at login.
            if e.as_db_error().is_some_and(|db| db.message().contains("not allowed")) {
                ConsoleError::Permission {
                    target: self.target.clone(),
                    role: self.info.identity.user.clone(),
                    reason,
                }
            } else {
                self.connect_error(reason)
            }
        })
    }

    fn connect_error(&self, reason: String) -> ConsoleError {
        ConsoleError::Connect {
            target: self.target.clone(),
            reason,
        }
    }
}

/// The console's own database: its clients are poolwarden and other operators.
const ADMIN_DATABASE: &str = "pgbouncer";

/// The rows the admin console answers `command` with.
async fn show(client: &Client, target: &str, command: &'static str) -> Result<Vec<SimpleQueryRow>, ConsoleError> {
    client
        .simple_query(command)
        .await
        .map(|messages| {
            messages
                .into_iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(r) => Some(r),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .map_err(|e| ConsoleError::Query {
            target: target.to_owned(),
            command,
            reason: error_text(&e),
        })
}

/// The version `SHOW VERSION` answered, if poolwarden reads that version's console.
fn supported_version(version_rows: &[SimpleQueryRow], target: &str) -> Result<Version, ConsoleError> {
    let found = version_rows
        .first()
        .and_then(|r| r.get(0))
        .unwrap_or_default()
        .to_owned();
    match Version::parse(&found) {
        Some(v) if v >= OLDEST_SUPPORTED => Ok(v),
        _ => Err(ConsoleError::UnsupportedVersion {
            target: target.to_owned(),
            found: if found.is_empty() { "no version".into() } else { found },
        }),
    }
}

fn column<'a>(row: &'a SimpleQueryRow, name: &str) -> Option<&'a str> {
    let i = row.columns().iter().position(|c| c.name() == name)?;
    row.get(i)
}

fn rows(rows: &[SimpleQueryRow], target: &str, command: &'static str) -> Result<Vec<Connection>, ConsoleError> {
    let malformed = |what: String| ConsoleError::Query {
        target: target.to_owned(),
        command,
        reason: what,
    };
    rows.iter()
        .map(|r| {
            let text = |name: &str| column(r, name).unwrap_or_default().to_owned();
            let time = |name: &str| {
                let value = column(r, name).unwrap_or_default();
                parse_time(value).ok_or_else(|| malformed(format!("{name} {value:?} is not a UTC time")))
            };
            Ok(Connection {
                user: text("user"),
                database: text("database"),
                state: text("state"),
                addr: column(r, "addr").and_then(|a| a.parse().ok()),
                port: column(r, "port").and_then(|p| p.parse().ok()).unwrap_or(0),
                connect_time: time("connect_time")?,
                request_time: time("request_time")?,
                ptr: text("ptr"),
                link: text("link"),
                remote_pid: column(r, "remote_pid").and_then(|p| p.parse().ok()).unwrap_or(0),
                application_name: text("application_name"),
            })
        })
        .collect()
}

/// PgBouncer prints times as `2026-12-01 20:17:04 UTC` in its own time zone; only
/// UTC (the default in containers) is read, since an abbreviation such as `CET` does
/// not name one offset.
pub fn parse_time(text: &str) -> Option<Timestamp> {
    let civil = text.strip_suffix(" UTC").or_else(|| text.strip_suffix(" GMT"))?;
    let dt: DateTime = civil.trim().replace(' ', "T").parse().ok()?;
    dt.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// The error with its server-side detail.
fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// The budget figures of a set of instances; `None` when any instance did not show
/// its settings (never guessed from PgBouncer's defaults).
pub fn limits(consoles: &[Console]) -> Option<PoolerLimits> {
    let mut out = PoolerLimits {
        instances: consoles.len() as u32,
        max_client_conn: 0,
        server_connections: 0,
    };
    for c in consoles {
        out.max_client_conn += u64::from(c.max_client_conn?);
        out.server_connections += u64::from(c.default_pool_size?) * u64::from(c.pools.max(1));
    }
    Some(out)
}

/// The database snapshot as the pods see it through the pooler: one "backend" per
/// client connection of any instance, carrying the client's own `application_name`,
/// `addr`, user, database and `connect_time` (its age is the app's connection age);
/// its state is that of the server backend it holds now (joined through `link` and
/// `remote_pid` to `pg_stat_activity`), `idle` since its last request when it holds
/// none, `waiting` while it queues for one. Limits and `now` are the database's.
pub fn through_pooler(database: &Snapshot, consoles: &[Console]) -> Snapshot {
    let by_pid: HashMap<i32, &Backend> = database.backends.iter().map(|b| (b.pid, b)).collect();
    let mut backends = Vec::new();
    for console in consoles {
        let servers: HashMap<&str, &Connection> = console
            .servers
            .iter()
            .filter(|s| !s.link.is_empty())
            .map(|s| (s.link.as_str(), s))
            .collect();
        for client in &console.clients {
            // In 1.18 an idle client shows `active` with an empty link; the link is the
            // truth in every version.
            let server = (!client.link.is_empty())
                .then(|| servers.get(client.ptr.as_str()))
                .flatten();
            let held = server.and_then(|s| by_pid.get(&s.remote_pid));
            // The statement, its id and the wait are the server backend's, when held.
            let (query, query_id, wait_event) = match held {
                Some(b) => (b.query.clone(), b.query_id, b.wait_event.clone()),
                None => Default::default(),
            };
            let (state, state_change, xact_start) = match (server, held) {
                (Some(_), Some(b)) => (b.state.clone(), b.state_change, b.xact_start),
                // Linked to a server PostgreSQL did not show (another database's, or
                // gone since): it is busy for the pooler, at least.
                (Some(_), None) => (Some("active".to_owned()), Some(client.request_time), None),
                (None, _) if client.state == "waiting" || client.state.starts_with("waiting") => {
                    (Some("waiting".to_owned()), Some(client.request_time), None)
                }
                (None, _) => (Some("idle".to_owned()), Some(client.request_time), None),
            };
            backends.push(Backend {
                pid: server.map(|s| s.remote_pid).unwrap_or(0),
                database: Some(client.database.clone()),
                user: Some(client.user.clone()),
                application_name: client.application_name.clone(),
                client_addr: client.addr,
                backend_start: Some(client.connect_time),
                state,
                state_change,
                xact_start,
                wait_event,
                query,
                query_id,
            });
        }
    }
    Snapshot {
        now: database.now,
        max_connections: database.max_connections,
        reserved: database.reserved,
        backends,
        pooler: limits(consoles),
        slots: database.slots.clone(),
        conn_limits: database.conn_limits.clone(),
    }
}

/// Reads every console; the first failure makes the whole round fail, because a
/// missing instance's clients would otherwise count as zero.
pub async fn read_all(readers: &mut [ConsoleReader]) -> Result<Vec<Console>, ConsoleError> {
    let mut out = Vec::with_capacity(readers.len());
    for r in readers {
        out.push(r.read().await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use super::*;

    #[test]
    fn versions_are_read_from_show_version() {
        assert_eq!(Version::parse("PgBouncer 1.18.0"), Some(Version(1, 18, 0)));
        assert_eq!(Version::parse("PgBouncer 1.24.1 libevent 2.1"), Some(Version(1, 24, 1)));
        assert_eq!(Version::parse("PgBouncer 1.25"), Some(Version(1, 25, 0)));
        assert_eq!(Version::parse("pgcat 1.0"), None);
        assert!(Version(1, 17, 0) < OLDEST_SUPPORTED);
    }

    #[test]
    fn times_are_read_in_utc_only() {
        assert_eq!(
            parse_time("2026-12-01 20:17:04 UTC"),
            Some("2026-12-01T20:17:04Z".parse().unwrap())
        );
        assert_eq!(parse_time("2026-12-01 20:17:04 CET"), None);
        assert_eq!(parse_time(""), None);
    }

    fn conn(ptr: &str, link: &str, app: &str, state: &str, pid: i32, age: i64, now: Timestamp) -> Connection {
        Connection {
            user: "app".into(),
            database: "app".into(),
            state: state.into(),
            addr: Some("10.0.0.7".parse().unwrap()),
            port: 40000,
            connect_time: now - SignedDuration::from_secs(age),
            request_time: now - SignedDuration::from_secs(age / 2),
            ptr: ptr.into(),
            link: link.into(),
            remote_pid: pid,
            application_name: app.into(),
        }
    }

    fn backend(pid: i32, app: &str, state: &str, changed: Timestamp) -> Backend {
        Backend {
            pid,
            database: Some("app".into()),
            user: Some("app".into()),
            application_name: app.into(),
            client_addr: Some("10.0.9.9".parse().unwrap()),
            backend_start: Some(changed),
            state: Some(state.into()),
            state_change: Some(changed),
            xact_start: Some(changed),
            ..Backend::default()
        }
    }

    #[test]
    fn clients_become_the_pods_backends_with_the_state_of_the_server_they_hold() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let twelve_min_ago = now - SignedDuration::from_mins(12);
        // In transaction mode the idle server 502 still says "web-1", the last client.
        let database = Snapshot {
            now,
            max_connections: 100,
            reserved: 3,
            pooler: None,
            slots: Default::default(),
            conn_limits: None,
            backends: vec![
                backend(501, "web-2", "idle in transaction", twelve_min_ago),
                backend(502, "web-1", "idle", now),
            ],
        };
        let console = Console {
            target: "stats@pooler:6432/pgbouncer".into(),
            version: Version(1, 18, 0),
            pool_mode: Some(PoolMode::Transaction),
            max_client_conn: Some(100),
            default_pool_size: Some(20),
            pools: 1,
            clients: vec![
                conn("0xc1", "", "web-1", "active", 0, 600, now),
                conn("0xc2", "0xs1", "web-2", "active", 0, 900, now),
                conn("0xc3", "", "web-2", "waiting", 0, 10, now),
            ],
            servers: vec![
                conn("0xs1", "0xc2", "web-2", "active", 501, 900, now),
                conn("0xs2", "", "web-1", "idle", 502, 900, now),
            ],
        };
        let seen = through_pooler(&database, &[console]);
        assert_eq!((seen.now, seen.max_connections, seen.reserved), (now, 100, 3));
        let summary: Vec<(&str, Option<&str>, i32, Option<Timestamp>)> = seen
            .backends
            .iter()
            .map(|b| (b.application_name.as_str(), b.state.as_deref(), b.pid, b.state_change))
            .collect();
        assert_eq!(
            summary,
            [
                ("web-1", Some("idle"), 0, Some(now - SignedDuration::from_secs(300))),
                ("web-2", Some("idle in transaction"), 501, Some(twelve_min_ago)),
                ("web-2", Some("waiting"), 0, Some(now - SignedDuration::from_secs(5))),
            ]
        );
        assert_eq!(
            seen.backends[1].backend_start,
            Some(now - SignedDuration::from_secs(900)),
            "the age is the client connection's"
        );
        assert_eq!(seen.backends[0].client_addr, Some("10.0.0.7".parse().unwrap()));
    }

    #[test]
    fn the_budget_sums_the_instances_and_is_unknown_when_one_hides_its_settings() {
        let one = |pools| Console {
            target: String::new(),
            version: Version(1, 18, 0),
            pool_mode: Some(PoolMode::Session),
            max_client_conn: Some(200),
            default_pool_size: Some(10),
            pools,
            clients: vec![],
            servers: vec![],
        };
        assert_eq!(
            limits(&[one(2), one(2), one(2)]),
            Some(PoolerLimits {
                instances: 3,
                max_client_conn: 600,
                server_connections: 60
            })
        );
        let hidden = Console {
            default_pool_size: None,
            ..one(1)
        };
        assert_eq!(limits(&[one(1), hidden]), None);
    }
}
