//! The plain data observation hands to the decision core: per pod, per instant, what
//! the database and the app's own pool endpoint said, or why they could not say it;
//! and the connection limits the database (and its pooler) reported.
//!
//! Missing data is never zero: every value is [`Measured::Known`] or
//! [`Measured::Unknown`] with a reason, and an unknown value blocks remediation.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use jiff::Timestamp;

use crate::policy::{ConnectionCounts, Measure};

/// A value that was measured, or the reason it could not be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Measured<T> {
    Known(T),
    Unknown(String),
}

impl<T> From<Result<T, String>> for Measured<T> {
    fn from(r: Result<T, String>) -> Self {
        match r {
            Ok(v) => Measured::Known(v),
            Err(why) => Measured::Unknown(why),
        }
    }
}

impl<T> Measured<T> {
    pub fn known(&self) -> Option<&T> {
        match self {
            Measured::Known(v) => Some(v),
            Measured::Unknown(_) => None,
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Measured<U> {
        match self {
            Measured::Known(v) => Measured::Known(f(v)),
            Measured::Unknown(why) => Measured::Unknown(why),
        }
    }
}

/// A client backend: one row of `pg_stat_activity` as the sampler reads it, the
/// policy-free fact a pod's summary is made of. Fields PostgreSQL may report as NULL are `Option`s: a NULL
/// `state` for another role's session means the monitoring role lacks
/// `pg_read_all_stats`, which the sampler reports instead of counting.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    pub pid: i32,
    pub database: Option<String>,
    pub user: Option<String>,
    pub application_name: String,
    pub client_addr: Option<IpAddr>,
    pub backend_start: Option<Timestamp>,
    pub state: Option<String>,
    pub state_change: Option<Timestamp>,
    pub xact_start: Option<Timestamp>,
    /// `wait_event_type:wait_event` (`Client:ClientRead`), when it waits.
    pub wait_event: Option<String>,
    /// The last (or current) statement, with its literals: never printed.
    pub query: QueryText,
    /// `query_id` (PostgreSQL 14+, with `compute_query_id`): joins `pg_stat_statements`.
    pub query_id: Option<i64>,
}

/// A statement as the database reports it, literals included. Its `Debug` says only
/// how long it is, so a logged backend cannot leak a literal; the text is read only
/// by [`crate::observe::statement::normalize`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct QueryText(pub String);

impl std::fmt::Debug for QueryText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QueryText({} bytes)", self.0.len())
    }
}

/// What `pg_stat_activity` says about one pod's backends at one instant, summarised
/// against the policy's measure (`decide::measure`) before it is kept in history: the
/// backends themselves are not kept.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PodConnections {
    /// Backends by state.
    pub counts: ConnectionCounts,
    /// Age of the oldest backend (`now - backend_start`), if any.
    pub oldest_backend_age: Option<Duration>,
    /// Longest time a backend has been idle (`now - state_change`, state idle), if any.
    pub oldest_idle_age: Option<Duration>,
    /// Backends over the limit of [`measure`](Self::measure), beyond what it allows
    /// (LifetimeOverrun: older than maxLifetimeSeconds + grace; IdleOverrun: idle
    /// longer than maxIdleSeconds + grace, beyond minSize).
    pub overrun: u32,
    /// The measure `overrun` was counted for; `None` when the policy judges no leak.
    /// A sample counted for another measure (the policy was edited) is not read as
    /// this one's.
    pub measure: Option<Measure>,
    /// The backends a leak would be made of (the measure's evidence scope),
    /// grouped by state and normalised statement, largest group first. Empty when
    /// none is overrunning.
    pub evidence: Vec<BackendGroup>,
}

/// Backends of one pod in the same state with the same normalised last statement:
/// the facts a leak's evidence is made of, with timestamps (not ages), so the same
/// leak gives the same group in every sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendGroup {
    /// `pg_stat_activity.state` (`idle`, `idle in transaction`, ...); `None` when NULL.
    pub state: Option<String>,
    /// The last statement with its literals removed; `None` when the backend never ran one.
    pub statement: Option<Statement>,
    /// `query_id`, when the server computes it (the same for the whole group when set).
    pub query_id: Option<i64>,
    /// The most common `wait_event_type:wait_event`, if any backend waits.
    pub wait_event: Option<String>,
    pub count: u32,
    /// The earliest and the latest `backend_start` of the group.
    pub first_started: Option<Timestamp>,
    pub last_started: Option<Timestamp>,
    /// The earliest `xact_start` (a transaction left open), if any.
    pub oldest_xact_start: Option<Timestamp>,
    /// The earliest `state_change`: the backend longest in its state.
    pub oldest_state_change: Option<Timestamp>,
}

/// A statement with its literals removed (`observe::statement::normalize`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Statement {
    /// The normalised text (`SELECT odds.* FROM odds WHERE id = $1`); never contains
    /// a literal of the original.
    pub text: String,
    /// sqlcommenter tags found in the statement's comments (`route`, `controller`, ...).
    pub tags: BTreeMap<String, String>,
}

/// A stable fingerprint of a normalised statement ([`crate::digest::short`]): the
/// same statement has the same fingerprint in every status and Event, and it reveals
/// no text.
pub fn fingerprint(text: &str) -> String {
    crate::digest::short(text.as_bytes())
}

/// What the app's own pool statistics endpoint claims.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PoolClaims {
    /// Connections the pool has checked out.
    pub checked_out: u32,
    /// Connections the app's own tracking knows to be in use.
    pub tracked_active: u32,
}

/// One sample of one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSample {
    /// When it was taken: the database's `now()` from the sampling query, so the
    /// operator's own clock skew cannot fake an overrun.
    pub at: Timestamp,
    /// The database's view.
    pub database: Measured<PodConnections>,
    /// The app's view; `None` when the policy has no `poolStats`.
    pub pool: Option<Measured<PoolClaims>>,
}

/// A database that refused poolwarden's connection for want of a free slot (SQLSTATE
/// 53300 or 53400): it is up, and full. Nothing is measured while it lasts; the
/// status says so, with the server's figures as last seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseFull {
    /// The server's refusal (SQLSTATE and message).
    pub refusal: String,
    /// The last sample that succeeded, if one did since poolwarden started.
    pub last_seen: Option<LastSeen>,
}

/// A database's figures at its last successful sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastSeen {
    pub at: Timestamp,
    pub max_connections: u32,
    pub reserved: u32,
    /// Client backends, poolwarden's own session excluded.
    pub client_backends: u32,
}

/// The connection limits that are set on the server's databases (`datconnlimit`)
/// and login roles (`rolconnlimit`), by name; a name absent has no limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnLimits {
    pub databases: BTreeMap<String, u32>,
    pub roles: BTreeMap<String, u32>,
}

/// The database's connection limits, when they could be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatabaseLimits {
    pub max_connections: u32,
    /// Connections reserved for superusers and other reserved roles.
    pub reserved: u32,
    /// The pooler the apps connect through, when the policy names one and its
    /// settings could be read.
    pub pooler: Option<PoolerLimits>,
}

/// A pooler's side of the connection budget, summed over its instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolerLimits {
    pub instances: u32,
    /// Σ `max_client_conn`: the client connections the apps may open.
    pub max_client_conn: u64,
    /// Σ `default_pool_size` × pools: the server connections the pooler may open.
    pub server_connections: u64,
}
