//! The command line: one subcommand per file; `main.rs` only parses and calls [`run`].

pub mod check;
pub mod controller;
pub mod fly;
pub mod inspect;
pub mod kube_client;
pub mod plan;
pub mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// How a command prints what it found (`plan`, `fly plan`, `fly reconcile`, `inspect`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

/// How `check` and `status` print: prose, or JSON for scripts.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextOutput {
    Text,
    Json,
}

/// Parses the command line; run as `kubectl-poolwarden` (a kubectl plugin), usage and
/// help say `kubectl poolwarden`.
pub fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let plugin = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|n| n == status::PLUGIN_EXECUTABLE);
    let mut command = Cli::command();
    if plugin {
        command = command.bin_name("kubectl poolwarden").name("kubectl poolwarden");
    }
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// poolwarden keeps connection-pool settings in line and restarts leaking pods safely.
#[derive(Parser, Debug)]
#[command(name = "poolwarden", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the PoolPolicy CustomResourceDefinition as YAML.
    Crd {
        /// Print the policy reference (Markdown) generated from the CRD schema instead.
        #[arg(long, conflicts_with = "json_schema")]
        reference: bool,
        /// Print the PoolPolicy JSON Schema instead (for kubeconform and editors; the
        /// repository publishes it under schemas/, in the CRDs-catalog layout).
        #[arg(long)]
        json_schema: bool,
    },
    /// Validate PoolPolicy files (for CI and pre-commit); exit 1 when any is invalid.
    Check(check::CheckArgs),
    /// Show the live connections of a database, grouped, with overruns (no cluster needed).
    Inspect(inspect::InspectArgs),
    /// What a policy would do now against the live cluster and database, with no write.
    #[command(after_help = plan::EXIT_CODES)]
    Plan(plan::PlanArgs),
    /// Per policy and workload: env in sync, connections, the measure against its
    /// limit, restarts and skips, conditions (`kubectl poolwarden status` as a plugin).
    Status(status::StatusArgs),
    /// Run the operator: reconcile every PoolPolicy in the cluster.
    Controller(controller::ControllerArgs),
    /// The Fly.io target: reconcile policies with `spec.fly` through the Machines API.
    Fly(fly::FlyArgs),
}

pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Crd { reference, json_schema } => {
            if json_schema {
                print!("{}", crate::json_schema::json_schema());
            } else if reference {
                print!("{}", crate::reference::policy_reference());
            } else {
                print!("{}", crate::crd::crd_yaml());
            }
            ExitCode::SUCCESS
        }
        Command::Check(args) => check::run(args),
        Command::Inspect(args) => inspect::run(args).await,
        Command::Controller(args) => controller::run_controller(args).await,
        Command::Plan(args) => plan::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Fly(args) => fly::run(args).await,
    }
}

/// SIGTERM (what the kubelet sends) or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
