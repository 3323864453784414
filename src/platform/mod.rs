//! The targets poolwarden acts on. Each turns its platform's objects into the
//! decision core's plain data and carries the plan out.

use std::{sync::Arc, time::Duration};

use crate::{
    observe::{postgres::Snapshot, shared::SharedSamplers},
    telemetry::metrics::Metrics,
};

pub mod fly;
pub mod kubernetes;
pub mod pooler;
pub mod report;

/// A policy's database sample, through the samplers every policy shares (one younger
/// than half the policy's interval is reused), its duration and errors counted; the
/// reason the URL could not be read when it could not.
pub async fn sample_database(
    samplers: &SharedSamplers,
    metrics: &Metrics,
    url: Result<&str, &str>,
    interval: Duration,
) -> Result<Arc<Snapshot>, String> {
    let url = url.map_err(str::to_owned)?;
    let sampled = samplers.sample(url, interval / 2).await;
    metrics.record_sample(&sampled);
    // Logged once per sample taken (not per cached copy), named by identity only.
    if sampled.took.is_some() {
        match &sampled.result {
            Ok(s) => tracing::debug!(database = %sampled.database, backends = s.backends.len(), "database sampled"),
            Err(e) => tracing::warn!(database = %sampled.database, error = %e, "database not sampled"),
        }
    }
    sampled.result.map_err(|e| e.to_string())
}
