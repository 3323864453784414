//! `poolwarden check PATH...`

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, ValueEnum};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Files, directories (searched recursively for *.yaml and *.yml) or `-` for stdin.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

pub fn run(_args: CheckArgs) -> ExitCode {
    ExitCode::from(2)
}
