//! `poolwarden fly run | reconcile --once | plan`: the Fly.io target.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use clap::{Args, Subcommand};
use kube::ResourceExt;
use serde_json::json;
use tracing::{error, info};

use super::{Output, shutdown_signal};
use crate::{
    check::load::fly_policies as load_policies,
    platform::{
        fly::{
            api::MachinesApi,
            reconcile::{FlyContext, Outcome, interval, pass},
        },
        report,
    },
    telemetry::{
        http::{Health, serve},
        logging::{self, LogFormat},
        metrics::Metrics,
    },
};

#[derive(Args, Debug)]
pub struct FlyArgs {
    #[command(subcommand)]
    pub command: FlyCommand,
}

#[derive(Subcommand, Debug)]
pub enum FlyCommand {
    /// Reconcile every Fly policy each interval until stopped (on a Fly machine or anywhere).
    Run(RunArgs),
    /// One pass of every Fly policy, then exit (1 when a due write was not carried out).
    Reconcile(ReconcileArgs),
    /// What one pass of every Fly policy would do now, with no write (exit 3 when it would write).
    Plan(PlanArgs),
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Policy files or directories (every PoolPolicy with `spec.fly`); regular files
    /// of at most 4 MiB each.
    #[arg(long = "policies", required = true)]
    pub policies: Vec<PathBuf>,
    /// Machines API token.
    #[arg(long, env = "FLY_API_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Machines API root URL.
    #[arg(long, env = "FLY_API_URL", default_value = "https://api.machines.dev")]
    pub api_url: String,
    /// Longest wait, in seconds, for a machine to start after an update or restart.
    #[arg(long, default_value_t = 60)]
    pub start_timeout: u64,
    /// Write each policy's status as `<policy>.json` into this directory after every pass.
    #[arg(long)]
    pub status_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: Common,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
}

#[derive(Args, Debug)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub common: Common,
    /// One pass (the only mode; `run` loops).
    #[arg(long, required = true)]
    pub once: bool,
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

pub async fn run(args: FlyArgs) -> ExitCode {
    match args.command {
        FlyCommand::Run(a) => run_loop(a).await,
        FlyCommand::Reconcile(a) => once(&a.common, a.output, true).await,
        FlyCommand::Plan(a) => once(&a.common, a.output, false).await,
    }
}

fn context(common: &Common, metrics: Arc<Metrics>, write: bool) -> Result<FlyContext, String> {
    let api = MachinesApi::new(&common.api_url, &common.token)?;
    let mut ctx = FlyContext::new(api, metrics, write);
    ctx.start_timeout = Duration::from_secs(common.start_timeout.max(1));
    Ok(ctx)
}

fn render(outcome: &Outcome) -> String {
    let mut out = report::render(&outcome.report);
    for d in &outcome.done {
        out.push_str(&format!("done: {d}\n"));
    }
    for n in &outcome.not_done {
        out.push_str(&format!("not done: {n}\n"));
    }
    out
}

fn json_of(outcome: &Outcome) -> serde_json::Value {
    json!({
        "report": outcome.report,
        "status": outcome.status,
        "done": outcome.done,
        "notDone": outcome.not_done,
    })
}

fn write_status(dir: &Option<PathBuf>, policy: &str, outcome: &Outcome) {
    let Some(dir) = dir else { return };
    let path = dir.join(format!("{policy}.json"));
    let text = format!("{:#}\n", json_of(outcome));
    // Write then rename, so a reader never sees half a file.
    let tmp = dir.join(format!(".{policy}.json.tmp"));
    if let Err(e) = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&tmp, text))
        .and_then(|_| std::fs::rename(&tmp, &path))
    {
        error!(path = %path.display(), error = %e, "writing the status file");
    }
}

async fn once(common: &Common, output: Output, write: bool) -> ExitCode {
    logging::init(common.log_format);
    let policies = match load_policies(&common.policies) {
        Ok(p) if p.is_empty() => {
            eprintln!("no PoolPolicy with spec.fly in the given paths");
            return ExitCode::from(1);
        }
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let ctx = match context(common, Arc::new(Metrics::new()), write) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut code = 0u8;
    let mut all = Vec::new();
    for policy in &policies {
        match pass(&ctx, policy).await {
            Ok(outcome) => {
                if write {
                    write_status(&common.status_dir, &policy.name_any(), &outcome);
                    if !outcome.not_done.is_empty() {
                        code = code.max(1);
                    }
                } else if outcome.report.changes {
                    code = code.max(3);
                }
                match output {
                    Output::Table => print!("{}", render(&outcome)),
                    Output::Json => all.push(json_of(&outcome)),
                }
            }
            Err(e) => {
                eprintln!("{e}");
                code = 2;
            }
        }
    }
    if output == Output::Json {
        println!("{:#}", serde_json::Value::Array(all));
    }
    ExitCode::from(code)
}

async fn run_loop(args: RunArgs) -> ExitCode {
    let common = &args.common;
    logging::init(common.log_format);
    let metrics = Arc::new(Metrics::new());
    metrics.leader.set(1);
    let health = Arc::new(Health {
        metrics: metrics.clone(),
        ready: false.into(),
        liveness: Default::default(),
    });
    let server = match serve(args.metrics_addr, health.clone()).await {
        Ok((bound, task)) => {
            info!(addr = %bound, "serving /metrics, /healthz and /readyz");
            task
        }
        Err(e) => {
            eprintln!("serving telemetry on {}: {e}", args.metrics_addr);
            return ExitCode::from(2);
        }
    };
    let ctx = match context(common, metrics, true) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    passes(common, &ctx, &health, stop_on_signal()).await;
    ctx.finish_releases(Duration::from_secs(2)).await;
    info!("stopped");
    server.abort();
    ExitCode::SUCCESS
}

/// A flag raised by SIGTERM or Ctrl-C, listening from now on (not only once a pass
/// ends: until the handler is in place, SIGTERM kills the process where it stands).
fn stop_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    stop_rx
}

/// Every policy's pass, each interval, until `stop` is raised. A raised stop ends the
/// pass in progress where it is: every pass plans from a new read of the machines,
/// and the leases the stopped pass held are released on the way out.
async fn passes(common: &Common, ctx: &FlyContext, health: &Health, stop: tokio::sync::watch::Receiver<bool>) {
    let stopped = || {
        let mut rx = stop.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    loop {
        // Policies are read again every pass: GitOps may have changed the files.
        let policies = match load_policies(&common.policies) {
            Ok(p) => p,
            Err(e) => {
                error!(error = %e, "reading policies; keeping the loop alive");
                Vec::new()
            }
        };
        for policy in &policies {
            let name = policy.name_any();
            tokio::select! {
                passed = pass(ctx, policy) => match passed {
                    Ok(outcome) => {
                        write_status(&common.status_dir, &name, &outcome);
                        health.ready.store(true, Ordering::Relaxed);
                    }
                    Err(e) => error!(policy = %name, error = %e, "pass failed"),
                },
                _ = stopped() => {
                    info!(policy = %name, "stopping in the middle of a pass");
                    return;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval(&policies)) => {}
            _ = stopped() => return,
        }
    }
}
