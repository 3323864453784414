//! poolwarden: keeps PostgreSQL connection-pool settings of Kubernetes workloads equal
//! to a `PoolPolicy`, measures live connections per pod, and restarts the pods whose
//! leaked connections stay above the policy's limit, within safety budgets.

// A function is a step one can name; `clippy.toml` sets the most lines it may have
// (code lines, as clippy counts them), and `make lint` fails above that.
#![warn(clippy::too_many_lines)]

pub mod check;
pub mod cli;
pub mod crd;
pub mod decide;
pub mod digest;
pub mod inspect;
pub mod json_schema;
pub mod observation;
pub mod observe;
pub mod platform;
pub mod policy;
pub mod reference;
pub mod telemetry;
pub mod timing;
