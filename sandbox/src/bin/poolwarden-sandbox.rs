//! Starts the sandbox (API server, controllers, kubelet), writes a kubeconfig,
//! optionally applies the manifests of a directory, and runs until Ctrl-C/SIGTERM.

use std::path::PathBuf;

use clap::Parser;
use poolwarden_sandbox::{Sandbox, SandboxOptions, manifests};

#[derive(Parser)]
#[command(about = "In-memory Kubernetes API server + process kubelet for poolwarden's tests and demo")]
struct Args {
    /// Where to write the kubeconfig.
    #[arg(long, env = "KUBECONFIG_OUT", default_value = "sandbox.kubeconfig")]
    kubeconfig: PathBuf,
    /// Apply every *.yaml/*.yml/*.json file of this directory (sorted by name) after start.
    #[arg(long)]
    manifests: Option<PathBuf>,
    /// Serve the API only: no controllers, no kubelet.
    #[arg(long)]
    api_only: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Colours only on a terminal: a log file or pipe gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let opts = SandboxOptions {
        kubeconfig: Some(args.kubeconfig.clone()),
        run_workloads: !args.api_only,
        ..Default::default()
    };
    let sandbox = Sandbox::start_with(opts).await?;
    tracing::info!(url = %sandbox.url(), kubeconfig = %args.kubeconfig.display(), "sandbox running");
    if let Some(dir) = &args.manifests {
        for applied in manifests::apply_dir(sandbox.store(), dir)? {
            tracing::info!(object = %applied, "applied");
        }
    }
    println!(
        "export KUBECONFIG={}",
        std::fs::canonicalize(&args.kubeconfig)?.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    sandbox.shutdown().await;
    Ok(())
}
