//! Telemetry: Prometheus metrics, the health and readiness endpoints, and logging.

pub mod http;
pub mod logging;
pub mod metrics;
pub mod sizing;
