//! One row of `pg_stat_activity` (a client backend), as the sampler reads it.

use std::net::IpAddr;

use jiff::Timestamp;

/// A client backend. Fields PostgreSQL may report as NULL are `Option`s: a NULL
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
/// by [`super::statement::normalize`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct QueryText(pub String);

impl std::fmt::Debug for QueryText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QueryText({} bytes)", self.0.len())
    }
}
