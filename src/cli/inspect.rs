//! `poolwarden inspect`: live connections of any PostgreSQL, grouped; no cluster needed.

use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::{
    inspect::{GroupBy, render_table, report},
    observe::postgres::Sampler,
    policy::HumanDuration,
};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Connection string of a role with pg_monitor (the password never appears in output).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// What to group backends by.
    #[arg(long, value_enum, default_value_t = GroupBy::ApplicationName)]
    pub group_by: GroupBy,
    /// Count backends older than this as lifetime overruns (e.g. 600s).
    #[arg(long)]
    pub max_lifetime: Option<String>,
    /// Count backends idle longer than this as idle overruns (e.g. 60s).
    #[arg(long)]
    pub max_idle: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Sample again every interval until interrupted (e.g. 5s).
    #[arg(long)]
    pub watch: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

fn duration(flag: &str, value: &Option<String>) -> Result<Option<std::time::Duration>, String> {
    value
        .as_ref()
        .map(|v| {
            HumanDuration::new(v.clone())
                .parse()
                .map_err(|e| format!("--{flag}: {e}"))
        })
        .transpose()
}

pub async fn run(args: InspectArgs) -> ExitCode {
    let (lifetime, idle, watch) = match (
        duration("max-lifetime", &args.max_lifetime),
        duration("max-idle", &args.max_idle),
        duration("watch", &args.watch),
    ) {
        (Ok(l), Ok(i), Ok(w)) => (l, i, w),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut sampler = match Sampler::new(&args.database_url) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    loop {
        match sampler.sample().await {
            Ok(snapshot) => {
                let r = report(sampler.target(), &snapshot, args.group_by, lifetime, idle);
                match args.output {
                    Output::Table => print!("{}", render_table(&r)),
                    Output::Json => println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default()),
                }
            }
            Err(e) => {
                eprintln!("{e}");
                if watch.is_none() {
                    return ExitCode::from(1);
                }
            }
        }
        match watch {
            Some(every) => tokio::time::sleep(every).await,
            None => return ExitCode::SUCCESS,
        }
    }
}
