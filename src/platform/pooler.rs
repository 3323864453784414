//! A policy's database sample seen through its pooler, whatever the platform: the
//! admin console of every pooler instance read in one round and joined to the
//! database sample ([`crate::observe::pgbouncer::through_pooler`]).
//!
//! Unknown stays unknown: when the database sample, the admin URL or any instance's
//! console is missing, the result is the reason, so every pod's measure is unknown
//! and nothing restarts. A missing instance is never read as "no clients there".

use std::{net::IpAddr, sync::Arc, time::Duration};

use crate::observe::{
    pgbouncer::{ConsoleReader, read_all, through_pooler},
    postgres::Snapshot,
};

/// How long one round over every instance may take.
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);

/// The sample through the pooler. `instances` is `None` for one instance at the
/// admin URL's own host, or the pooler pods' addresses (each read with the URL's
/// port and credentials). Each round opens one console session per instance and
/// closes it: PgBouncer's console sessions are cheap and never reach PostgreSQL.
pub async fn sample_through_pooler(
    database: Result<Arc<Snapshot>, String>,
    admin_url: Result<String, String>,
    instances: Option<Result<Vec<IpAddr>, String>>,
) -> Result<Arc<Snapshot>, String> {
    let database = database?;
    let url = admin_url?;
    let mut readers = match instances {
        None => vec![ConsoleReader::new(&url).map_err(|e| e.to_string())?],
        Some(addrs) => {
            let addrs = addrs?;
            if addrs.is_empty() {
                return Err("pooler.podSelector selects no running pooler pod with an IP".to_owned());
            }
            addrs
                .into_iter()
                .map(|a| ConsoleReader::at_address(&url, a))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?
        }
    };
    let consoles = match tokio::time::timeout(ROUND_TIMEOUT, read_all(&mut readers)).await {
        Ok(Ok(consoles)) => consoles,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, reason = e.metric_label(), "pooler not read");
            return Err(e.to_string());
        }
        Err(_) => return Err(format!("pooler admin consoles not read within {ROUND_TIMEOUT:?}")),
    };
    tracing::debug!(
        instances = consoles.len(),
        clients = consoles.iter().map(|c| c.clients.len()).sum::<usize>(),
        "pooler read"
    );
    Ok(Arc::new(through_pooler(&database, &consoles)))
}
