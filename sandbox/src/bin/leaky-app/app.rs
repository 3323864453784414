//! The leaky app's state and HTTP handlers: a tracked pool (bb8), connections
//! borrowed and never returned (`/leak`), connections opened outside the pool
//! (`/untracked`, like a forgotten ORM pool), and the stats endpoints in the
//! shape of the seeds' app.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bb8::{Pool, PooledConnection};
use bb8_postgres::PostgresConnectionManager;
use serde_json::json;
use tokio::sync::Mutex;
use tokio_postgres::NoTls;

use crate::config::Config;

pub type Manager = PostgresConnectionManager<NoTls>;

pub struct App {
    pub config: Config,
    pub pg: tokio_postgres::Config,
    pub pool: Pool<Manager>,
    pub leaked: Mutex<Vec<PooledConnection<'static, Manager>>>,
    pub untracked: Mutex<Vec<tokio_postgres::Client>>,
    /// Pool checkouts made by `/work` and not yet returned: what the app tracks.
    pub tracked_active: AtomicU64,
    pub work_done: AtomicU64,
}

pub type Shared = Arc<App>;

fn error(code: StatusCode, msg: impl std::fmt::Display) -> Response {
    (code, Json(json!({"error": msg.to_string()}))).into_response()
}

fn count(q: &HashMap<String, String>) -> usize {
    q.get("n").and_then(|n| n.parse().ok()).unwrap_or(1)
}

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn work(State(app): State<Shared>) -> Response {
    app.tracked_active.fetch_add(1, Ordering::SeqCst);
    let result = async {
        let conn = app.pool.get().await.map_err(|e| e.to_string())?;
        conn.query_one("select 1", &[]).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    }
    .await;
    app.tracked_active.fetch_sub(1, Ordering::SeqCst);
    match result {
        Ok(()) => {
            app.work_done.fetch_add(1, Ordering::SeqCst);
            Json(json!({"ok": true})).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

pub async fn leak(State(app): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    for _ in 0..count(&q) {
        match app.pool.get_owned().await {
            Ok(conn) => app.leaked.lock().await.push(conn),
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
        }
    }
    Json(json!({"leaked": app.leaked.lock().await.len()})).into_response()
}

pub async fn untracked(State(app): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    for _ in 0..count(&q) {
        match app.pg.connect(NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                app.untracked.lock().await.push(client);
            }
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
        }
    }
    Json(json!({"untracked": app.untracked.lock().await.len()})).into_response()
}

/// The seeds' second cause: a health check that creates an engine and never disposes
/// of it — one more backend per check, its last statement `SELECT 1`.
pub async fn health_engine(State(app): State<Shared>) -> Response {
    match app.pg.connect(NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            if let Err(e) = client.simple_query("SELECT 1").await {
                return error(StatusCode::SERVICE_UNAVAILABLE, e);
            }
            app.untracked.lock().await.push(client);
            Json(json!({"engines": app.untracked.lock().await.len()})).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// The seeds' third cause: a route that borrows a pool connection, opens a
/// transaction, runs its query and never gives the connection back — `idle in
/// transaction`, the route's statement last. The statement carries a literal (which
/// poolwarden must never show) and a sqlcommenter tag naming the route.
pub async fn odds_leak(State(app): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    for _ in 0..count(&q) {
        let conn = match app.pool.get_owned().await {
            Ok(c) => c,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
        };
        if let Err(e) = conn.simple_query("BEGIN").await {
            return error(StatusCode::SERVICE_UNAVAILABLE, e);
        }
        let route = "SELECT relname FROM pg_class WHERE oid = 4242 AND relname <> 'hunter2-odds-secret' \
                     /*route='%2Fodds%2F%3Cid%3E',framework='axum'*/";
        if let Err(e) = conn.simple_query(route).await {
            return error(StatusCode::SERVICE_UNAVAILABLE, e);
        }
        app.leaked.lock().await.push(conn);
    }
    Json(json!({"leaked": app.leaked.lock().await.len()})).into_response()
}

/// The seeds' first cause: a second pool nobody configured (SQLAlchemy's default 5 +
/// 10 overflow), filled at start-up and never used again: `LEAKY_SECOND_POOL` idle
/// backends opened within a second of the start, each having run the dialect's
/// first-connect query.
pub async fn open_second_pool(app: &App, size: usize) -> Result<(), String> {
    for _ in 0..size {
        let (client, connection) = app.pg.connect(NoTls).await.map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        client
            .simple_query("select pg_catalog.version()")
            .await
            .map_err(|e| e.to_string())?;
        app.untracked.lock().await.push(client);
    }
    Ok(())
}

struct Stats {
    pool_size: u64,
    idle: u64,
    checked_out: u64,
    tracked: u64,
    leaked: u64,
    untracked: u64,
}

async fn stats(app: &App) -> Stats {
    let state = app.pool.state();
    let untracked = app.untracked.lock().await.len() as u64;
    let pool_out = u64::from(state.connections.saturating_sub(state.idle_connections));
    Stats {
        pool_size: u64::from(state.connections),
        idle: u64::from(state.idle_connections),
        checked_out: pool_out + untracked,
        tracked: app.tracked_active.load(Ordering::SeqCst),
        leaked: app.leaked.lock().await.len() as u64,
        untracked,
    }
}

pub async fn health_detailed(State(app): State<Shared>) -> Response {
    let s = stats(&app).await;
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs()).unwrap_or(0);
    Json(json!({
        "status": "healthy",
        "checks": {
            "database_pool": {
                "status": "healthy",
                "checked_out": s.checked_out,
                "pool_size": s.pool_size,
                "idle": s.idle,
                "leaked": s.leaked,
                "untracked": s.untracked,
                "tracking_stats": {"total_active": s.tracked},
                "tracking_discrepancy": s.checked_out.saturating_sub(s.tracked),
                "config": {
                    "min_size": app.config.pool_min,
                    "max_size": app.config.pool_max,
                    "max_idle_seconds": secs(app.config.max_idle),
                    "max_lifetime_seconds": secs(app.config.max_lifetime),
                    "application_name": app.config.application_name,
                },
            }
        }
    }))
    .into_response()
}

pub async fn metrics(State(app): State<Shared>) -> Response {
    let s = stats(&app).await;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    };
    metric(
        "leaky_pool_connections",
        "gauge",
        "Connections the pool manages.",
        s.pool_size,
    );
    metric(
        "leaky_pool_idle_connections",
        "gauge",
        "Idle connections in the pool.",
        s.idle,
    );
    metric(
        "leaky_pool_checked_out",
        "gauge",
        "Connections checked out of the pool plus untracked ones.",
        s.checked_out,
    );
    metric(
        "leaky_tracked_active",
        "gauge",
        "Checkouts the app tracks (in-flight /work).",
        s.tracked,
    );
    metric(
        "leaky_leaked_connections",
        "gauge",
        "Pool connections borrowed and never returned.",
        s.leaked,
    );
    metric(
        "leaky_untracked_connections",
        "gauge",
        "Connections opened outside the pool.",
        s.untracked,
    );
    metric(
        "leaky_work_total",
        "counter",
        "Completed /work requests.",
        app.work_done.load(Ordering::SeqCst),
    );
    metric(
        "leaky_pool_max_size",
        "gauge",
        "Configured DB_POOL_MAX.",
        u64::from(app.config.pool_max),
    );
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}
