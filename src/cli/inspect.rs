//! `poolwarden inspect`: live connections of any PostgreSQL, grouped; no cluster needed.

use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::Output;

use crate::{
    inspect::{GroupBy, Trial, render_table, report},
    observe::{
        pgbouncer::{ConsoleReader, read_all, through_pooler},
        postgres::{Sampler, Snapshot},
    },
    policy::{HumanDuration, PoolEnvNames, PoolSettings, QueryEvidence},
};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Connection string of a role with pg_monitor (the password never appears in output).
    /// With --pgbouncer, the database the pooler's server connections are joined to.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// A PgBouncer admin console URL (the `pgbouncer` database, as a stats_users role);
    /// repeat for several instances. Groups the pooler's client connections instead of
    /// PostgreSQL's backends, each with the state of the server backend it holds when
    /// --database-url is given too.
    #[arg(long = "pgbouncer", value_name = "URL")]
    pub pgbouncer: Vec<String>,
    /// What to group backends by.
    #[arg(long, value_enum, default_value_t = GroupBy::ApplicationName)]
    pub group_by: GroupBy,
    /// Count backends older than this as lifetime overruns (e.g. 600s).
    #[arg(long)]
    pub max_lifetime: Option<String>,
    /// Count backends idle longer than this as idle overruns (e.g. 60s).
    #[arg(long)]
    pub max_idle: Option<String>,
    /// Judge each group as a pod of this pool library does, as a policy's
    /// spec.pool.library would: Generic, PsycopgPool, SQLAlchemy, HikariCP, SpringBoot,
    /// Pgx or NodePostgres (docs/libraries.md). Without it, the limits hold exactly.
    #[arg(long)]
    pub library: Option<String>,
    /// Slack added to --max-lifetime and --max-idle, as the policy's discrepancy.grace
    /// (default: 0 without --library, else the library's default grace).
    #[arg(long)]
    pub grace: Option<String>,
    /// Idle connections each group (a pod) may keep past the limits, as the policy's
    /// minSize (default: the library's; none without --library).
    #[arg(long)]
    pub min_size: Option<u32>,
    /// The pool's maxSize, which psycopg_pool's idle shrinking and HikariCP's default
    /// minimumIdle depend on (default: unbounded, which never counts what they keep).
    #[arg(long)]
    pub max_size: Option<u32>,
    /// Show each group's evidence: its backends (those overrunning --max-lifetime, else
    /// --max-idle, when given) by state and last statement, literals removed.
    #[arg(long)]
    pub evidence: bool,
    /// With --evidence: Normalized shows statements without literals, Fingerprint a
    /// hash of them, None no statement.
    #[arg(long, value_enum, default_value_t = Queries::Normalized)]
    pub queries: Queries,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Sample again every interval until interrupted (e.g. 5s).
    #[arg(long)]
    pub watch: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queries {
    Normalized,
    Fingerprint,
    None,
}

impl From<Queries> for QueryEvidence {
    fn from(q: Queries) -> Self {
        match q {
            Queries::Normalized => QueryEvidence::Normalized,
            Queries::Fingerprint => QueryEvidence::Fingerprint,
            Queries::None => QueryEvidence::None,
        }
    }
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

/// The measure's limits the flags give, for the library they name.
fn trial(args: &InspectArgs) -> Result<Trial, String> {
    let mut trial = Trial::limits(
        duration("max-lifetime", &args.max_lifetime)?,
        duration("max-idle", &args.max_idle)?,
    );
    if let Some(name) = &args.library {
        trial.library = serde_json::from_value(serde_json::Value::String(name.clone())).map_err(|_| {
            format!("--library: unknown library {name:?}: use Generic, PsycopgPool, SQLAlchemy, HikariCP, SpringBoot, Pgx or NodePostgres")
        })?;
        let pool = PoolSettings {
            library: trial.library,
            min_size: args.min_size,
            max_size: args.max_size.unwrap_or(u32::MAX),
            processes_per_pod: None,
            max_idle_seconds: None,
            max_lifetime_seconds: None,
            max_lifetime_jitter_seconds: None,
            health_check_period_seconds: None,
            env: PoolEnvNames::default(),
            extra_env: Vec::new(),
        };
        trial.grace = crate::policy::library::default_grace(&pool);
    }
    if let Some(grace) = duration("grace", &args.grace)? {
        trial.grace = grace;
    }
    trial.min_size = args.min_size;
    trial.max_size = args.max_size;
    Ok(trial)
}

pub async fn run(args: InspectArgs) -> ExitCode {
    let (trial, watch) = match (trial(&args), duration("watch", &args.watch)) {
        (Ok(t), Ok(w)) => (t, w),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let (mut sampler, mut consoles) = match sources(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let target = target_words(sampler.as_ref(), &consoles);
    // The reserved-slots warning, on stderr once per change (not on every --watch round).
    let mut warned: Option<String> = None;
    loop {
        match sample(sampler.as_mut(), &mut consoles).await {
            Ok(snapshot) => {
                let warning = snapshot.slots.warning();
                if let Some(w) = warning.as_ref().filter(|w| warned.as_ref() != Some(*w)) {
                    eprintln!("warning: {target}: {w}");
                }
                warned = warning;
                let evidence = args.evidence.then(|| args.queries.into());
                let r = report(&target, &snapshot, args.group_by, &trial, evidence);
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

/// What is sampled: the database, the poolers' consoles, or both (at least one).
fn sources(args: &InspectArgs) -> Result<(Option<Sampler>, Vec<ConsoleReader>), String> {
    let sampler = args
        .database_url
        .as_deref()
        .map(Sampler::new)
        .transpose()
        .map_err(|e| e.to_string())?;
    let consoles = args
        .pgbouncer
        .iter()
        .map(|u| ConsoleReader::new(u))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if sampler.is_none() && consoles.is_empty() {
        return Err("give --database-url (or DATABASE_URL), --pgbouncer, or both".to_owned());
    }
    Ok((sampler, consoles))
}

/// What the report says it looked at.
fn target_words(sampler: Option<&Sampler>, consoles: &[ConsoleReader]) -> String {
    match (sampler, consoles.is_empty()) {
        (Some(s), true) => s.target().to_owned(),
        (sampler, false) => {
            let pools: Vec<&str> = consoles.iter().map(ConsoleReader::target).collect();
            match sampler {
                Some(s) => format!("clients of PgBouncer {} joined to {}", pools.join(", "), s.target()),
                None => format!("clients of PgBouncer {}", pools.join(", ")),
            }
        }
        (None, true) => String::new(),
    }
}

/// One sample: PostgreSQL's backends, or the pooler's clients joined to them.
async fn sample(sampler: Option<&mut Sampler>, consoles: &mut [ConsoleReader]) -> Result<Snapshot, String> {
    let database = match sampler {
        Some(s) => Some(s.sample().await.map_err(|e| e.to_string())?),
        None => None,
    };
    if consoles.is_empty() {
        return database.ok_or_else(|| "nothing to sample".to_owned());
    }
    let read = read_all(consoles).await.map_err(|e| e.to_string())?;
    // Without the database there is nothing to join: linked clients show as active.
    let database = database.unwrap_or_else(|| Snapshot {
        now: jiff::Timestamp::now(),
        max_connections: 0,
        reserved: 0,
        backends: Vec::new(),
        pooler: None,
        slots: Default::default(),
        conn_limits: None,
    });
    Ok(through_pooler(&database, &read))
}
