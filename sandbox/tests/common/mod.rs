//! Helpers shared by the sandbox's integration tests.
#![allow(dead_code)]

/// The local PostgreSQL, plain HTTP and unique names of the root crate's tests.
#[path = "../../../tests/support/local.rs"]
pub mod local;
// Each test binary uses its own few of these.
#[allow(unused_imports)]
pub use local::{database_url, http_ok, pg, unique};

/// The waits of the root crate's end-to-end tests (one time-scale knob, diagnostics
/// when a wait runs out), shared rather than copied.
#[path = "../../../tests/support/waits.rs"]
pub mod waits;
pub use waits::eventually;

/// application_name -> backends, for names starting with `prefix`.
pub async fn backends(pg: &tokio_postgres::Client, prefix: &str) -> Vec<(String, String)> {
    pg.query(
        "select application_name, coalesce(state, '') from pg_stat_activity where application_name like $1 || '%'",
        &[&prefix],
    )
    .await
    .expect("query pg_stat_activity")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

pub fn process_exists(pid: i32) -> bool {
    // Signal 0 checks existence; zombies are reaped by tokio, so a dead process is gone.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}
