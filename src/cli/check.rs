//! `poolwarden check PATH...`: exit 0 when every policy is valid, 1 when any is
//! invalid, 2 when a path cannot be read at all. Warnings (values a pool library
//! would replace or ignore) are printed and do not change the exit status.

use std::{path::PathBuf, process::ExitCode};

use clap::Args;

use super::TextOutput;

use crate::check::{
    Report,
    budget::{self, GivenLimits, offline_budget},
    check_paths_keeping,
};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Files, directories (searched recursively for *.yaml and *.yml) or `-` for stdin.
    /// Only regular files are read (a FIFO, device or socket is exit 2), at most 4 MiB
    /// each.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = TextOutput::Text)]
    pub output: TextOutput,
    /// Also add up the connection budget of the valid policies given, as one
    /// database, over the Deployments, StatefulSets and HorizontalPodAutoscalers in
    /// the same files (docs/budget.md). Exit status 1 when it is exceeded.
    #[arg(long)]
    pub budget: bool,
    /// The database's max_connections, for --budget (unknown when not given).
    #[arg(long, requires = "budget")]
    pub max_connections: Option<u32>,
    /// The database's superuser_reserved_connections + reserved_connections, for --budget.
    #[arg(long, requires = "budget")]
    pub reserved: Option<u32>,
    /// The database's datconnlimit (-1: none), for --budget.
    #[arg(long, requires = "budget", allow_negative_numbers = true)]
    pub datconnlimit: Option<i64>,
    /// The pooler's max_client_conn summed over its instances, for --budget.
    #[arg(long, requires = "budget")]
    pub max_client_conn: Option<u64>,
    /// Backends no given policy's workloads hold (other apps, people, jobs), for --budget.
    #[arg(long, requires = "budget")]
    pub unattributed: Option<u64>,
}

pub fn run(args: CheckArgs) -> ExitCode {
    let (report, texts) = check_paths_keeping(&args.paths);
    let offline = args.budget.then(|| offline_budget(&documents(&texts), &given(&args)));
    let exceeded = offline.as_ref().is_some_and(|o| o.budget.assess().exceeded());
    match args.output {
        TextOutput::Text => {
            print_text(&report);
            if let Some(o) = &offline {
                print!("{}", budget::render(o));
            }
        }
        TextOutput::Json => {
            let errors: Vec<String> = report.input_errors.iter().map(ToString::to_string).collect();
            let body = serde_json::json!({
                "valid": report.findings.is_empty() && errors.is_empty(),
                "policiesChecked": report.policies_checked,
                "problems": report.findings,
                "warnings": report.warnings,
                "inputErrors": errors,
                "budget": offline.as_ref().map(|o| serde_json::json!({
                    "exceeded": exceeded,
                    "policies": o.policies,
                    "message": crate::decide::budget::message(&o.budget, &o.budget.assess()),
                    "notes": o.notes,
                })),
            });
            println!("{body:#}");
        }
    }
    match exit_code(&report) {
        code if code == ExitCode::SUCCESS && exceeded => ExitCode::from(1),
        code => code,
    }
}

/// The limits given on the command line.
fn given(args: &CheckArgs) -> GivenLimits {
    GivenLimits {
        max_connections: args.max_connections,
        reserved: args.reserved,
        datconnlimit: args.datconnlimit,
        max_client_conn: args.max_client_conn,
        unattributed: args.unattributed,
    }
}

/// Every YAML document of the texts read (a text that does not parse is already a
/// finding in the report).
fn documents(texts: &[(String, String)]) -> Vec<serde_json::Value> {
    texts
        .iter()
        .flat_map(|(_, text)| serde_saphyr::from_multiple::<serde_json::Value>(text).unwrap_or_default())
        .collect()
}

fn print_text(report: &Report) {
    for finding in &report.findings {
        println!("{finding}");
    }
    for warning in &report.warnings {
        println!("{}", warning.as_warning());
    }
    for error in &report.input_errors {
        eprintln!("{error}");
    }
    if report.findings.is_empty() && report.input_errors.is_empty() {
        eprintln!("{} PoolPolicy document(s) checked, all valid", report.policies_checked);
    }
}

fn exit_code(report: &Report) -> ExitCode {
    if !report.input_errors.is_empty() {
        ExitCode::from(2)
    } else if !report.findings.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
