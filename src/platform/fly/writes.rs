//! The Machines API's non-idempotent calls (lease, update, restart), made safe to send
//! again. An answer that is lost, or a 5xx, says nothing of whether the API acted: a
//! blind retry could reboot a machine twice or meet poolwarden's own new lease as a
//! 409. So before each retry the machine is read again and the call is taken for done
//! when the API shows it done:
//!
//! - a lease is described uniquely per attempt; the machine's lease with that
//!   description is poolwarden's own;
//! - an update carries `current_version` (the version it was read at): a retry of an
//!   update that was applied is refused, and the machine, moved on to a new version
//!   with the env poolwarden sent, shows it applied;
//! - a restart (no version guard in the document) shows as a `restart` or `start`
//!   event that was not there before it, while poolwarden holds the lease, so no one
//!   else's.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use hyper::StatusCode;

use super::api::{ApiError, Lease, Machine, MachinesApi, Update, without_nulls};

/// Attempts of one call whose answers are lost.
const ATTEMPTS: u32 = 4;

/// Between attempts: long enough for a proxy's hiccup to pass.
fn pause(attempt: u32) -> Duration {
    Duration::from_millis(250 << attempt.min(4))
}

/// A lease description no other attempt uses: the process, the time and a counter.
fn unique_description() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "poolwarden {}-{nanos:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Takes a lease on the machine. After a lost answer (or a 409 that follows one) the
/// machine's lease is read: when it carries this attempt's description, it is ours.
pub async fn acquire_lease(api: &MachinesApi, app: &str, id: &str, ttl: Duration) -> Result<Lease, ApiError> {
    let description = unique_description();
    let mut lost = None;
    for attempt in 0..ATTEMPTS {
        match api.acquire_lease(app, id, ttl, &description).await {
            Ok(lease) => return Ok(lease),
            Err(e) if e.is_lost_answer() || (lost.is_some() && e.status() == Some(StatusCode::CONFLICT)) => {
                if let Some(ours) = api.get_lease(app, id).await?.filter(|l| l.description == description) {
                    return Ok(ours);
                }
                if e.status() == Some(StatusCode::CONFLICT) {
                    // Someone else's lease after all.
                    return Err(e);
                }
                lost = Some(e);
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(pause(attempt)).await;
    }
    Err(lost.unwrap_or_else(|| gave_up(id, "lease")))
}

/// Updates the machine read as `read` (under `lease`). After a lost answer, or a
/// 409/412 that follows one, the machine is read again: still at `current_version`,
/// the update did not happen and is sent again; at a new version carrying the env
/// poolwarden sent, it did, and that machine is the answer.
pub async fn update(
    api: &MachinesApi,
    app: &str,
    read: &Machine,
    update: &Update<'_>,
    lease: &Lease,
) -> Result<Machine, ApiError> {
    let mut lost = None;
    for attempt in 0..ATTEMPTS {
        match api.update_machine(app, read, update, lease).await {
            Ok(m) => return Ok(m),
            Err(e)
                if e.is_lost_answer()
                    || (lost.is_some()
                        && matches!(e.status(), Some(StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED))) =>
            {
                let now = api.get_machine(app, &read.id).await?;
                if now.instance_id != update.current_version {
                    if without_nulls(&now.config["env"]) == without_nulls(&update.config["env"]) {
                        return Ok(now);
                    }
                    // Moved on, but not to what poolwarden sent: not ours to repeat.
                    return Err(e);
                }
                lost = Some(e);
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(pause(attempt)).await;
    }
    Err(lost.unwrap_or_else(|| gave_up(&read.id, "update")))
}

/// Restarts the machine read as `read` (under `lease`). After a lost answer the
/// machine is read again: a `restart` or `start` event that was not there before is
/// this restart.
pub async fn restart(api: &MachinesApi, app: &str, read: &Machine, lease: &Lease) -> Result<(), ApiError> {
    let seen = read.event_ids();
    let mut lost = None;
    for attempt in 0..ATTEMPTS {
        match api.restart(app, &read.id, lease).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_lost_answer() => {
                let now = api.get_machine(app, &read.id).await?;
                if now.has_new_event(&["restart", "start"], &seen) {
                    return Ok(());
                }
                lost = Some(e);
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(pause(attempt)).await;
    }
    Err(lost.unwrap_or_else(|| gave_up(&read.id, "restart")))
}

fn gave_up(id: &str, what: &str) -> ApiError {
    ApiError::Transport {
        method: hyper::Method::POST,
        path: format!("machine {id} {what}"),
        message: "no answer".to_owned(),
    }
}
