//! A full database: the server refused poolwarden's connection for want of a slot
//! (SQLSTATE 53300 or 53400). It is not an outage — the server is up and the leak may
//! be what filled it — so the status says `DatabaseFull`, with the server's figures as
//! last seen, and an Event marks the moment it became full. Nothing is measured while
//! it lasts, so nothing is restarted (docs/decisions.md, rule 8): a restart needs
//! every sample of its window seen.

use super::{About, EventReason, PlanInput, PlannedEvent, conditions::Wanted};
use crate::{
    observation::{DatabaseFull, Measured},
    policy::condition::{reason, type_},
};

/// The database of this pass is full (not merely unreachable).
pub(super) fn is_full<'a>(input: &PlanInput<'a>) -> Option<&'a DatabaseFull> {
    match input.database {
        Measured::Unknown(_) => input.database_full,
        Measured::Known(_) => None,
    }
}

/// `DatabaseReachable=False`, reason `DatabaseFull`.
pub(super) fn condition(full: &DatabaseFull) -> Wanted {
    Wanted {
        type_: type_::DATABASE_REACHABLE,
        status: false,
        reason: reason::DATABASE_FULL,
        message: message(full),
    }
}

/// A Warning Event on the policy when its database has just become full: the
/// previous status did not say so.
pub(super) fn event(input: &PlanInput) -> Option<PlannedEvent> {
    let full = is_full(input)?;
    let already = input
        .status
        .conditions
        .iter()
        .any(|c| c.type_ == type_::DATABASE_REACHABLE && c.reason == reason::DATABASE_FULL);
    (!already).then(|| PlannedEvent {
        about: About::Policy,
        warning: true,
        reason: EventReason::DatabaseFull,
        message: message(full),
    })
}

/// What the refusal was, the figures last seen, and what poolwarden does meanwhile.
pub fn message(full: &DatabaseFull) -> String {
    let seen = match &full.last_seen {
        Some(s) => format!(
            "last seen at {}: {} client connections, max_connections {} of which {} reserved",
            jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", s.at).unwrap_or_else(|_| s.at.to_string()),
            s.client_backends,
            s.max_connections,
            s.reserved
        ),
        None => "not sampled since poolwarden started".to_owned(),
    };
    format!(
        "{}; {seen}; nothing is measured or restarted until a sample succeeds (on PostgreSQL 16+ grant the \
         role pg_use_reserved_connections and set reserved_connections)",
        full.refusal
    )
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::observation::LastSeen;

    #[test]
    fn the_message_gives_the_refusal_and_the_figures_last_seen() {
        let full = DatabaseFull {
            refusal: "mon@db:5432/app: the database is full, it refuses new connections: 53300: sorry, too many \
                      clients already"
                .into(),
            last_seen: Some(LastSeen {
                at: Timestamp::from_second(1_800_000_000).unwrap(),
                max_connections: 20,
                reserved: 3,
                client_backends: 16,
            }),
        };
        assert_eq!(
            message(&full),
            "mon@db:5432/app: the database is full, it refuses new connections: 53300: sorry, too many clients \
             already; last seen at 2027-01-15T08:00:00Z: 16 client connections, max_connections 20 of which 3 \
             reserved; nothing is measured or restarted until a sample succeeds (on PostgreSQL 16+ grant the \
             role pg_use_reserved_connections and set reserved_connections)"
        );
        let never = DatabaseFull {
            last_seen: None,
            ..full
        };
        assert!(message(&never).contains("; not sampled since poolwarden started;"));
    }
}
