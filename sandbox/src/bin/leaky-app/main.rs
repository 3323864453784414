//! leaky-app: a small web service with a real PostgreSQL pool that can be made
//! to leak, for poolwarden's end-to-end tests and demo. Configured from
//! `DATABASE_URL`, `PGAPPNAME`, `DB_POOL_MIN`, `DB_POOL_MAX`, `DB_POOL_MAX_IDLE`,
//! `DB_POOL_MAX_LIFETIME` (seconds), `POD_IP` (or `FLY_PRIVATE_IP`), `PORT` and
//! `LEAKY_SECOND_POOL` (backends of an unconfigured second pool opened at start-up).
//! `/load?n=N&ms=T` holds N transactions open for T ms (a known load).

mod app;
mod config;
mod load;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bb8_postgres::PostgresConnectionManager;
use tokio::sync::Mutex;
use tokio_postgres::NoTls;

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("leaky-app: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let config = config::Config::from_env()?;
    let mut pg = tokio_postgres::Config::from_str(&config.database_url).map_err(|e| format!("DATABASE_URL: {e}"))?;
    // tokio-postgres does not read PGAPPNAME itself (libpq does); set it so the
    // database's application_name names the pod.
    pg.application_name(&config.application_name);
    pg.connect_timeout(Duration::from_secs(5));
    let pool = bb8::Pool::builder()
        .max_size(config.pool_max)
        .min_idle(Some(config.pool_min).filter(|m| *m > 0))
        .idle_timeout(config.max_idle)
        .max_lifetime(config.max_lifetime)
        // bb8 closes idle/expired connections from a reaper task; run it often
        // so DB_POOL_MAX_IDLE shows in pg_stat_activity within about a second.
        .reaper_rate(Duration::from_secs(1))
        .connection_timeout(Duration::from_secs(5))
        .build_unchecked(PostgresConnectionManager::new(pg.clone(), NoTls));
    let listen = format!("{}:{}", config.listen_ip, config.port);
    eprintln!(
        "leaky-app: {} on {listen}: pool min={} max={} idle={:?} lifetime={:?}",
        config.application_name, config.pool_min, config.pool_max, config.max_idle, config.max_lifetime
    );
    let state = Arc::new(app::App {
        config,
        pg,
        pool,
        leaked: Mutex::new(Vec::new()),
        untracked: Mutex::new(Vec::new()),
        tracked_active: AtomicU64::new(0),
        work_done: AtomicU64::new(0),
    });
    if let Some(size) = std::env::var("LEAKY_SECOND_POOL").ok().and_then(|v| v.parse().ok()) {
        app::open_second_pool(&state, size).await?;
    }
    let router = Router::new()
        .route("/healthz", get(app::healthz))
        .route("/work", get(app::work).post(app::work))
        .route("/leak", get(app::leak).post(app::leak))
        .route("/untracked", get(app::untracked).post(app::untracked))
        .route("/health/engine", get(app::health_engine))
        .route("/odds/leak", get(app::odds_leak).post(app::odds_leak))
        .route("/health/detailed", get(app::health_detailed))
        .route("/metrics", get(app::metrics))
        .route("/load", get(load::load).post(load::load))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("binding {listen}: {e}"))?;
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await
        .map_err(|e| e.to_string())?;
    // Close every connection, the leaked and untracked ones too, before exiting.
    state.leaked.lock().await.clear();
    state.untracked.lock().await.clear();
    drop(state);
    tokio::time::sleep(Duration::from_millis(100)).await;
    eprintln!("leaky-app: stopped");
    Ok(())
}
