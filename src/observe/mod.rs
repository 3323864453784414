//! Observation: what the database and the apps' own pool endpoints say.

pub mod aggregate;
pub mod attribution;
pub mod backend;
pub mod conn_limits;
pub mod conninfo;
pub mod evidence;
pub mod history;
pub mod measure;
pub mod pgbouncer;
pub mod pool_stats;
pub mod postgres;
pub mod shared;
pub mod slots;
pub mod sqlcommenter;
pub mod statement;
pub mod tls;
