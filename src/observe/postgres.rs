//! Sampling `pg_stat_activity`: one long-lived monitoring connection per database,
//! one query per sample, reconnect with backoff after a failure. poolwarden must never
//! become a leak itself, so a sampler holds at most one backend.
//!
//! The connection string is read by [`super::conninfo`]; a sampler knows its database
//! by the [`DatabaseIdentity`] and names it by it in every message. `sslmode`
//! (`disable|prefer|require|verify-ca|verify-full`) and `sslrootcert` (a file or
//! `system`) keep their libpq meaning; see [`super::tls`].

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use jiff::Timestamp;
use tokio_postgres::{Client, Config, NoTls, Statement};

pub use super::slots::ReservedSlots;
use super::{
    backend::{Backend, QueryText},
    conninfo::{ConnInfo, ConnInfoError, DatabaseIdentity},
};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The `application_name` of poolwarden's own session, so operators can see it.
pub const SAMPLER_APPLICATION_NAME: &str = "poolwarden";

/// One sample of a database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The database's `now()` at the sample.
    pub now: Timestamp,
    pub max_connections: u32,
    /// `superuser_reserved_connections` plus `reserved_connections` (PostgreSQL 16+).
    pub reserved: u32,
    /// Client backends, without the sampler's own; behind a pooler, the pooler's
    /// client connections (see [`super::pgbouncer::through_pooler`]).
    pub backends: Vec<Backend>,
    /// The pooler's budget figures, when the backends were read through one.
    pub pooler: Option<crate::observation::PoolerLimits>,
    /// The reserved slots and whether the sampler's role may use them.
    pub slots: ReservedSlots,
    /// The databases' and roles' own connection limits; `None` when not read (a
    /// snapshot made without a server), which leaves them unknown, never unlimited.
    pub conn_limits: Option<crate::observation::ConnLimits>,
}

impl Snapshot {
    /// The connection limits the decision core checks a restart against.
    pub fn limits(&self) -> crate::observation::DatabaseLimits {
        crate::observation::DatabaseLimits {
            max_connections: self.max_connections,
            reserved: self.reserved,
            pooler: self.pooler,
        }
    }
}

/// Why a sample could not be taken. Messages name the database by its identity and
/// never contain the connection string or the password.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum SampleError {
    #[error("invalid connection string: {0}")]
    InvalidUrl(#[from] ConnInfoError),
    #[error("{target}: {reason}")]
    Tls { target: String, reason: String },
    #[error("{target}: passfile: {reason}")]
    Passfile { target: String, reason: String },
    #[error("{target}: cannot connect: {reason}")]
    Connect { target: String, reason: String },
    /// The server refused the connection for want of a slot (SQLSTATE 53300
    /// too_many_connections, 53400 configuration_limit_exceeded): it is up, and full.
    #[error("{target}: the database is full, it refuses new connections: {reason}")]
    Full { target: String, reason: String },
    #[error("{target}: sampling query failed: {reason}")]
    Query { target: String, reason: String },
    #[error(
        "{target}: role {role:?} cannot see other roles' sessions (their state is hidden): grant it pg_monitor \
         (or pg_read_all_stats): GRANT pg_monitor TO {role};"
    )]
    Permission { target: String, role: String },
    #[error("{target}: waiting {wait:?} before reconnecting after: {last}")]
    BackingOff {
        target: String,
        wait: Duration,
        last: String,
        /// The last attempt was refused because the database is full.
        full: bool,
    },
}

impl SampleError {
    /// The database's refusal, when it refused the connection because it is full
    /// (this attempt, or the last one before the backoff it waits out): worded the
    /// same on every pass, so a status that says it does not change.
    pub fn full_refusal(&self) -> Option<String> {
        match self {
            SampleError::Full { .. } => Some(self.to_string()),
            SampleError::BackingOff {
                target,
                last,
                full: true,
                ..
            } => Some(
                SampleError::Full {
                    target: target.clone(),
                    reason: last.clone(),
                }
                .to_string(),
            ),
            _ => None,
        }
    }

    /// Stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SampleError::InvalidUrl(_) => "invalid_url",
            SampleError::Tls { .. } => "tls_setup",
            SampleError::Passfile { .. } => "passfile",
            SampleError::Connect { .. } => "connect",
            SampleError::Full { .. } => "database_full",
            SampleError::Query { .. } => "query",
            SampleError::Permission { .. } => "permission",
            SampleError::BackingOff { .. } => "backing_off",
        }
    }
}

/// Samples one database.
pub struct Sampler {
    info: ConnInfo,
    config: Config,
    tls: Option<MakeRustlsConnect>,
    target: String,
    /// The connection and the sample's statements prepared on it (a statement
    /// belongs to its connection: a reconnect prepares it again).
    client: Option<(Client, Prepared)>,
    backoff: Duration,
    max_backoff: Duration,
    /// When to try again, the last failure's reason, and whether it was a full database.
    retry_at: Option<(Instant, String, bool)>,
}

/// The sample's first statement: the time, the connection limits and who we are.
/// `cargo bench --bench sample` times both statements together on the server
/// against a bare read.
///
/// The last three columns say who may still connect when the database is full:
/// `reserved_connections` and the `pg_use_reserved_connections` role exist from
/// PostgreSQL 16 on; before that the role's column is NULL (see [`header_query`]).
pub const HEADER_QUERY: &str = "
SELECT now(),
       current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int
         + coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0),
       current_user::text,
       pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'),
       pg_backend_pid(),
       current_setting('server_version_num')::int,
       coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0),
       current_setting('is_superuser') = 'on',
       pg_has_role(current_user, 'pg_use_reserved_connections', 'USAGE')";

/// The sample's second statement: pg_stat_activity's columns as they are, every row.
/// Which rows are client backends, and which is our own, is decided in Rust: a
/// filter, a cast or a concatenation per row, and the header joined onto every row,
/// made the statement 1.4× the bare `SELECT *` of the view; without them it is
/// cheaper than that read (`cargo bench --bench sample`).
pub const BACKENDS_QUERY: &str = "
SELECT pid, datname, usename, application_name, client_addr,
       backend_start, state, state_change, xact_start,
       wait_event_type, wait_event, query, backend_type, NULL::bigint AS query_id
FROM pg_stat_activity";

/// The two statements of a sample, prepared on one connection.
struct Prepared {
    header: Statement,
    backends: Statement,
    conn_limits: Statement,
}

impl Sampler {
    /// A sampler for a connection string (URL or key=value). Nothing connects yet.
    pub fn new(url: &str) -> Result<Self, SampleError> {
        Self::for_database(ConnInfo::parse(url)?)
    }

    /// A sampler for a parsed connection string. Nothing connects yet.
    pub fn for_database(info: ConnInfo) -> Result<Self, SampleError> {
        let target = info.identity.to_string();
        let tls = info.identity.tls.connector().map_err(|reason| SampleError::Tls {
            target: target.clone(),
            reason: info.scrub(reason),
        })?;
        let mut config = info.config();
        config.application_name(SAMPLER_APPLICATION_NAME);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A stuck catalog lock must not stall the controller's loop.
        let options = match &info.options {
            Some(theirs) => format!("{theirs} -c statement_timeout=5000"),
            None => "-c statement_timeout=5000".to_owned(),
        };
        config.options(options);
        Ok(Self {
            info,
            config,
            tls,
            target,
            client: None,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            retry_at: None,
        })
    }

    /// How this sampler's database is named in messages: `user@host:port/db`, never
    /// with the password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Names the database differently in messages (the shared samplers tell two
    /// credential sets for one identity apart).
    pub fn set_target(&mut self, target: String) {
        self.target = target;
    }

    pub fn identity(&self) -> &DatabaseIdentity {
        &self.info.identity
    }

    /// Takes one sample, connecting first when needed.
    pub async fn sample(&mut self) -> Result<Snapshot, SampleError> {
        if let Some((at, last, full)) = &self.retry_at {
            let now = Instant::now();
            if now < *at {
                return Err(SampleError::BackingOff {
                    target: self.target.clone(),
                    wait: *at - now,
                    last: last.clone(),
                    full: *full,
                });
            }
        }
        let result = self.sample_once().await;
        match &result {
            Ok(_) => {
                self.retry_at = None;
                self.backoff = Duration::from_millis(500);
            }
            Err(
                SampleError::Connect { reason, .. }
                | SampleError::Full { reason, .. }
                | SampleError::Query { reason, .. },
            ) => {
                // The session is never given up while it lives: a statement that failed
                // (a timeout, a cancel) leaves it usable, and a database that is full
                // would refuse a new one. A closed one is dropped, so the next attempt
                // starts clean and at most one backend exists.
                if self.client.as_ref().is_none_or(|(c, _)| c.is_closed()) {
                    self.client = None;
                }
                let full = matches!(result, Err(SampleError::Full { .. }));
                self.retry_at = Some((Instant::now() + self.backoff, reason.clone(), full));
                self.backoff = (self.backoff * 2).min(self.max_backoff);
            }
            Err(_) => {}
        }
        result
    }

    async fn sample_once(&mut self) -> Result<Snapshot, SampleError> {
        self.connect_if_closed().await?;
        let Some((client, prepared)) = self.client.as_ref() else {
            return Err(SampleError::Connect {
                target: self.target.clone(),
                reason: "no connection".into(),
            });
        };
        let query_err = |e: tokio_postgres::Error| self.query_error(&e);
        // Both sent at once (tokio-postgres pipelines them): one round trip; the
        // header's now() is taken just before the activity is read.
        let (first, rows, limit_rows) = tokio::try_join!(
            client.query_one(&prepared.header, &[]),
            client.query(&prepared.backends, &[]),
            client.query(&prepared.conn_limits, &[])
        )
        .map_err(query_err)?;
        let mut limits = Vec::with_capacity(limit_rows.len());
        for row in &limit_rows {
            limits.push((
                row.try_get(0).map_err(query_err)?,
                row.try_get(1).map_err(query_err)?,
                row.try_get(2).map_err(query_err)?,
            ));
        }
        let now: Timestamp = first.try_get(0).map_err(query_err)?;
        let max_connections: i32 = first.try_get(1).map_err(query_err)?;
        let reserved: i32 = first.try_get(2).map_err(query_err)?;
        let role: String = first.try_get(3).map_err(query_err)?;
        let sees_all: bool = first.try_get(4).map_err(query_err)?;
        let own_pid: i32 = first.try_get(5).map_err(query_err)?;
        let slots = ReservedSlots {
            role: role.clone(),
            server_version_num: first.try_get::<_, i32>(6).map_err(query_err)?.max(0) as u32,
            reserved_connections: first.try_get::<_, i32>(7).map_err(query_err)?.max(0) as u32,
            superuser: first.try_get(8).map_err(query_err)?,
            may_use_reserved: first.try_get::<_, Option<bool>>(9).map_err(query_err)?.unwrap_or(false),
        };
        let mut backends = Vec::with_capacity(rows.len());
        for row in &rows {
            let Some(backend) = read_backend(row, own_pid, &query_err)? else {
                continue;
            };
            // Without pg_read_all_stats, other roles' sessions show NULL state: counting
            // them would report zeros for exactly the connections we look for.
            if !sees_all && backend.state.is_none() && backend.user.as_deref() != Some(role.as_str()) {
                return Err(SampleError::Permission {
                    target: self.target.clone(),
                    role,
                });
            }
            backends.push(backend);
        }
        Ok(Snapshot {
            now,
            max_connections: u32::try_from(max_connections).unwrap_or(0),
            reserved: u32::try_from(reserved).unwrap_or(0),
            backends,
            pooler: None,
            slots,
            conn_limits: Some(super::conn_limits::from_rows(limits)),
        })
    }

    fn query_error(&self, e: &tokio_postgres::Error) -> SampleError {
        SampleError::Query {
            target: self.target.clone(),
            reason: self.info.scrub(error_text(e)),
        }
    }

    /// Connects (and prepares the sample's two statements) unless a live connection is kept.
    async fn connect_if_closed(&mut self) -> Result<(), SampleError> {
        if !self.client.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            return Ok(());
        }
        let password = self.info.password().map_err(|e| SampleError::Passfile {
            target: self.target.clone(),
            reason: format!(
                "{}: {e}",
                self.info
                    .credentials
                    .passfile
                    .as_deref()
                    .unwrap_or(std::path::Path::new(""))
                    .display()
            ),
        })?;
        if let Some(p) = password {
            self.config.password(p);
        }
        let info = &self.info;
        let connect_err = |e: tokio_postgres::Error| {
            let target = self.target.clone();
            let reason = info.scrub(error_text(&e));
            if refused_for_want_of_a_slot(&e) {
                SampleError::Full { target, reason }
            } else {
                SampleError::Connect { target, reason }
            }
        };
        // The connection task ends when the client is dropped or the server goes away;
        // the next sample notices through `is_closed` or a query error.
        let client = match &self.tls {
            None => {
                let (client, connection) = self.config.connect(NoTls).await.map_err(connect_err)?;
                tokio::spawn(connection);
                client
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await.map_err(connect_err)?;
                tokio::spawn(connection);
                client
            }
        };
        // Prepared once per connection: `query(&str)` would parse and describe the
        // query again on every sample.
        let statement = prepare_sample(&client).await.map_err(|e| self.query_error(&e))?;
        self.client = Some((client, statement));
        Ok(())
    }
}

/// One row of pg_stat_activity as a backend; `None` for what is not a client
/// backend (background workers, walsenders) and for our own session. Sessions of
/// other roles show a NULL backend_type to a role without pg_read_all_stats: they are
/// kept, so the permission problem is seen rather than read as zero.
fn read_backend(
    row: &tokio_postgres::Row,
    own_pid: i32,
    query_err: &impl Fn(tokio_postgres::Error) -> SampleError,
) -> Result<Option<Backend>, SampleError> {
    let pid: i32 = row.try_get(0).map_err(query_err)?;
    let backend_type: Option<&str> = row.try_get(12).map_err(query_err)?;
    if pid == own_pid || backend_type.is_some_and(|t| t != "client backend") {
        return Ok(None);
    }
    let wait_type: Option<&str> = row.try_get(9).map_err(query_err)?;
    let wait_event: Option<&str> = row.try_get(10).map_err(query_err)?;
    Ok(Some(Backend {
        pid,
        database: row.try_get(1).map_err(query_err)?,
        user: row.try_get(2).map_err(query_err)?,
        application_name: row
            .try_get::<_, Option<String>>(3)
            .map_err(query_err)?
            .unwrap_or_default(),
        client_addr: row.try_get::<_, Option<IpAddr>>(4).map_err(query_err)?,
        backend_start: row.try_get(5).map_err(query_err)?,
        state: row.try_get(6).map_err(query_err)?,
        state_change: row.try_get(7).map_err(query_err)?,
        xact_start: row.try_get(8).map_err(query_err)?,
        // As `wait_event_type || ':' || wait_event`: absent unless both are there.
        wait_event: wait_type.zip(wait_event).map(|(t, e)| format!("{t}:{e}")),
        query: QueryText(
            row.try_get::<_, Option<String>>(11)
                .map_err(query_err)?
                .unwrap_or_default(),
        ),
        query_id: row.try_get(13).map_err(query_err)?,
    }))
}

/// The sample's statements prepared for the server: `query_id` exists from
/// PostgreSQL 14 on.
async fn prepare_sample(client: &Client) -> Result<Prepared, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?;
    let version: i32 = row.try_get(0)?;
    Ok(Prepared {
        header: client.prepare(&header_query(version)).await?,
        backends: client.prepare(&backends_query(version)).await?,
        conn_limits: client.prepare(super::conn_limits::CONN_LIMITS_QUERY).await?,
    })
}

/// [`HEADER_QUERY`] as a server of `server_version_num` runs it: before 16,
/// `pg_use_reserved_connections` does not exist (and `pg_has_role` fails on a role
/// that does not), so the column is NULL.
pub fn header_query(server_version_num: i32) -> String {
    if server_version_num >= 160_000 {
        HEADER_QUERY.to_owned()
    } else {
        HEADER_QUERY.replace(
            "pg_has_role(current_user, 'pg_use_reserved_connections', 'USAGE')",
            "NULL::bool",
        )
    }
}

/// [`BACKENDS_QUERY`] as a server of `server_version_num` runs it: `query_id` is a
/// column from PostgreSQL 14 on.
pub fn backends_query(server_version_num: i32) -> String {
    if server_version_num >= 140_000 {
        BACKENDS_QUERY.replace("NULL::bigint AS query_id", "query_id")
    } else {
        BACKENDS_QUERY.to_owned()
    }
}

/// Whether the server refused a connection for want of a free slot: 53300
/// too_many_connections (`max_connections` reached, the rest reserved, or a role's
/// or database's CONNECTION LIMIT) or 53400 configuration_limit_exceeded.
fn refused_for_want_of_a_slot(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code()
        .is_some_and(|c| *c == SqlState::TOO_MANY_CONNECTIONS || *c == SqlState::CONFIGURATION_LIMIT_EXCEEDED)
}

/// The error with its database-side detail, which `Display` alone leaves out.
fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_appear_in_targets_or_errors() {
        let err = Sampler::new("postgres://mon:s3cret@db:5432/app?sslmode=verify-full")
            .err()
            .unwrap();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let err = Sampler::new("postgres://mon:s3cret@db:5432/app?sslmode=verify-full&sslrootcert=/no/such.pem")
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "mon@db:5432/app?sslmode=verify-full&sslrootcert=/no/such.pem: sslrootcert /no/such.pem: I/O error: No such file or directory (os error 2)"
        );
        let ok = Sampler::new("postgres://mon:s3cret@db:5432/app").unwrap();
        assert_eq!(ok.target(), "mon@db:5432/app");
    }
}
