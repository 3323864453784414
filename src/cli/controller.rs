//! `poolwarden controller`: the operator itself.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::Args;
use tracing::error;

use crate::{
    platform::kubernetes::controller::{Options, run},
    telemetry::logging::{self, LogFormat},
};

#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// Watch only this namespace (all namespaces when not given).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Elect a leader among replicas through a coordination.k8s.io Lease.
    #[arg(long)]
    pub leader_election: bool,
    #[arg(long, default_value = "poolwarden-leader")]
    pub lease_name: String,
    /// Namespace of the Lease (the controller's own namespace in a cluster).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Seconds the lease stays valid after its last renewal; a new leader takes over
    /// within this time after the old one is gone.
    #[arg(long, default_value_t = 15)]
    pub lease_duration: u64,
    /// This replica's identity in the lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The sizing histories' peak window, for tests only (docs/sizing.md): every
    /// time constant of the recommender is counted in windows.
    #[arg(long, env = "POOLWARDEN_SIZING_WINDOW", default_value = "1m", hide = true, value_parser = sizing_window)]
    pub sizing_window: std::time::Duration,
}

/// A peak window of at least 100ms.
fn sizing_window(text: &str) -> Result<std::time::Duration, String> {
    match crate::policy::HumanDuration::new(text).parse() {
        Ok(d) if d >= std::time::Duration::from_millis(100) => Ok(d),
        Ok(_) => Err("the sizing window must be at least 100ms".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

pub async fn run_controller(args: ControllerArgs) -> ExitCode {
    logging::init(args.log_format);
    let (client, evict_client) = match super::kube_client::clients(args.kubeconfig.as_ref()).await {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "no Kubernetes client");
            return ExitCode::from(2);
        }
    };
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "poolwarden".to_owned());
        format!("{host}-{}", std::process::id())
    });
    let options = Options {
        namespace: args.namespace,
        metrics_addr: args.metrics_addr,
        leader_election: args.leader_election,
        lease_name: args.lease_name,
        lease_namespace: args.lease_namespace,
        lease_duration: args.lease_duration,
        identity,
        sizing_window: args.sizing_window,
    };
    match run(client, evict_client, options, super::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "controller stopped");
            ExitCode::FAILURE
        }
    }
}
