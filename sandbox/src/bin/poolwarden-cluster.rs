//! Starts the real Kubernetes control plane on this machine (etcd,
//! kube-apiserver, kube-controller-manager, and a process node agent), writes
//! an admin kubeconfig once it is ready, and runs until Ctrl-C/SIGTERM or until
//! its parent process dies.

use std::path::PathBuf;

use clap::Parser;
use poolwarden_sandbox::cluster::{ClusterOptions, RealCluster};
use poolwarden_sandbox::kubelet::image::ImageMap;

#[derive(Parser)]
#[command(about = "The real Kubernetes control plane (built by tests/cluster/build.sh) with a process node agent")]
struct Args {
    /// Where etcd, kube-apiserver and kube-controller-manager are; by default
    /// what tests/cluster/build.sh prints (it builds them once, then reuses them).
    #[arg(long, env = "POOLWARDEN_CLUSTER_BIN")]
    bin_dir: Option<PathBuf>,
    /// Where to write the admin kubeconfig (only once the cluster is ready).
    #[arg(long, env = "KUBECONFIG_OUT", default_value = "cluster.kubeconfig")]
    kubeconfig: PathBuf,
    /// Keep all data (certificates, etcd, logs) in this directory; by default a
    /// temporary directory, removed on exit.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// An image the node runs from an OCI image layout, under runc: NAME=LAYOUT_DIR
    /// (e.g. poolwarden:dev=/var/tmp/pw-shared/image/oci, whose tag `dev` is looked
    /// up in the layout). Pods naming any other image run their `command` as local
    /// processes. Repeatable.
    #[arg(long = "image", value_name = "NAME=LAYOUT_DIR")]
    images: Vec<String>,
}

fn build_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/cluster/build.sh")
}

fn default_bin_dir() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let script = build_script();
    let out = std::process::Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed ({})", script.display(), out.status).into());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .last()
        .ok_or_else(|| format!("{} printed no bin dir", script.display()))?;
    Ok(PathBuf::from(last.trim()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Die with the parent (a test runner, make, a shell): SIGTERM, so the
    // cleanup below runs. Checked after, in case the parent is already gone.
    let parent = nix::unistd::getppid();
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
    if nix::unistd::getppid() != parent {
        return Err("the parent process exited before the cluster started".into());
    }
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                // The client logs every refused attempt while the API server starts.
                "info,kube_client::client::builder=off".into()
            }),
        )
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let bin_dir = match args.bin_dir {
        Some(d) => d,
        None => default_bin_dir()?,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Started on the main thread, which lives as long as the cluster should:
    // the children's PR_SET_PDEATHSIG is tied to the thread that forked them.
    let start = RealCluster::start(ClusterOptions {
        bin_dir,
        kubeconfig: args.kubeconfig.clone(),
        data_dir: args.data_dir,
        images: ImageMap::parse(&args.images)?,
    });
    let mut cluster = tokio::select! {
        c = start => c?,
        _ = tokio::signal::ctrl_c() => return Ok(()),
        _ = term.recv() => return Ok(()),
    };
    tracing::info!(server = %cluster.server(), dir = %cluster.dir().display(), "cluster running");
    println!(
        "export KUBECONFIG={}",
        std::fs::canonicalize(&args.kubeconfig)?.display()
    );
    let mut check = tokio::time::interval(std::time::Duration::from_secs(2));
    let died = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break None,
            _ = term.recv() => break None,
            _ = check.tick() => if let Some(gone) = cluster.exited() { break Some(gone) },
        }
    };
    tracing::info!("stopping");
    cluster.shutdown().await;
    if let Some((name, log)) = died {
        return Err(format!("{name} exited; the end of its log:\n{log}").into());
    }
    Ok(())
}
