//! `/load?n=N&ms=T`: N concurrent transactions, each on a connection borrowed from
//! the tracked pool, held open for T milliseconds (`idle in transaction` between
//! its statements), then committed and returned. Answers when all are done, with
//! how many held a connection — fewer than N when the pool (DB_POOL_MAX) is smaller
//! and a borrower timed out. A known load for the sizing recommender's tests.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::Shared;

/// The most transactions and the longest hold one call may ask for.
const MAX_N: usize = 500;
const MAX_MS: u64 = 60_000;

pub async fn load(State(app): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let n = q.get("n").and_then(|v| v.parse().ok()).unwrap_or(1usize).min(MAX_N);
    let ms = q.get("ms").and_then(|v| v.parse().ok()).unwrap_or(1000u64).min(MAX_MS);
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { hold(&app, Duration::from_millis(ms)).await })
        })
        .collect();
    let mut held = 0;
    let mut errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => held += 1,
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    errors.truncate(3);
    Json(json!({"asked": n, "held": held, "ms": ms, "errors": errors})).into_response()
}

/// One transaction held open for `d`, tracked as the app's own in-flight work.
async fn hold(app: &Shared, d: Duration) -> Result<(), String> {
    app.tracked_active.fetch_add(1, Ordering::SeqCst);
    let result = async {
        let conn = app.pool.get().await.map_err(|e| e.to_string())?;
        conn.simple_query("BEGIN").await.map_err(|e| e.to_string())?;
        conn.simple_query("SELECT 1").await.map_err(|e| e.to_string())?;
        tokio::time::sleep(d).await;
        conn.simple_query("COMMIT").await.map_err(|e| e.to_string())?;
        Ok(())
    }
    .await;
    app.tracked_active.fetch_sub(1, Ordering::SeqCst);
    result
}
