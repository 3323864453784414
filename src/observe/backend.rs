//! One row of `pg_stat_activity` (a client backend), as the sampler reads it.

use std::net::IpAddr;

use jiff::Timestamp;

/// A client backend. Fields PostgreSQL may report as NULL are `Option`s: a NULL
/// `state` for another role's session means the monitoring role lacks
/// `pg_read_all_stats`, which the sampler reports instead of counting.
#[derive(Clone, Debug, PartialEq, Eq)]
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
}
