use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = poolwarden::cli::Cli::parse();
    poolwarden::cli::run(cli).await
}
