//! `poolwarden check PATH...`: exit 0 when every policy is valid, 1 when any is
//! invalid, 2 when a path cannot be read at all. Warnings (values a pool library
//! would replace or ignore) are printed and do not change the exit status.

use std::{path::PathBuf, process::ExitCode};

use clap::Args;

use super::TextOutput;

use crate::check::{Report, check_paths};

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
}

pub fn run(args: CheckArgs) -> ExitCode {
    let report = check_paths(&args.paths);
    match args.output {
        TextOutput::Text => print_text(&report),
        TextOutput::Json => {
            let errors: Vec<String> = report.input_errors.iter().map(ToString::to_string).collect();
            let body = serde_json::json!({
                "valid": report.findings.is_empty() && errors.is_empty(),
                "policiesChecked": report.policies_checked,
                "problems": report.findings,
                "warnings": report.warnings,
                "inputErrors": errors,
            });
            println!("{body:#}");
        }
    }
    exit_code(&report)
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
