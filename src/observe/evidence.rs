//! The facts behind a leak: a pod's overrunning backends grouped by state and
//! normalised last statement (see [`BackendGroup`]). Pure and policy-free; what is
//! shown, and how much, is decided in `decide::evidence`.

use std::collections::BTreeMap;

use super::{
    backend::Backend,
    statement::{Statement, normalize},
};
use crate::observation::BackendGroup;

/// Groups `backends`, largest group first (then by state and text, so the order is
/// stable). Each distinct raw statement is normalised once: a leak is usually many
/// backends with the same few statements.
pub fn group(backends: &[&Backend]) -> Vec<BackendGroup> {
    if backends.is_empty() {
        return Vec::new();
    }
    let mut normalised: BTreeMap<&str, Option<Statement>> = BTreeMap::new();
    let mut groups: BTreeMap<(Option<&str>, Option<Statement>), BackendGroup> = BTreeMap::new();
    for b in backends {
        let statement = normalised
            .entry(b.query.0.as_str())
            .or_insert_with(|| normalize(&b.query.0))
            .clone();
        let state = b.state.as_deref();
        let g = groups
            .entry((state, statement.clone()))
            .or_insert_with(|| BackendGroup {
                state: state.map(str::to_owned),
                statement,
                query_id: b.query_id,
                wait_event: None,
                count: 0,
                first_started: None,
                last_started: None,
                oldest_xact_start: None,
                oldest_state_change: None,
            });
        add(g, b);
    }
    let mut out: Vec<BackendGroup> = groups.into_values().collect();
    out.sort_by_key(|g| std::cmp::Reverse(g.count));
    out
}

fn add(g: &mut BackendGroup, b: &Backend) {
    g.count += 1;
    if g.query_id != b.query_id {
        g.query_id = None;
    }
    // The wait event of the group's oldest backend: the one most likely leaked first.
    if b.backend_start.is_some() && min(g.first_started, b.backend_start) == b.backend_start {
        g.wait_event = b.wait_event.clone();
    }
    g.first_started = min(g.first_started, b.backend_start);
    g.last_started = g.last_started.max(b.backend_start);
    g.oldest_xact_start = min(g.oldest_xact_start, b.xact_start);
    g.oldest_state_change = min(g.oldest_state_change, b.state_change);
}

/// The earlier of two optional instants; a missing one is not "earliest".
fn min(a: Option<jiff::Timestamp>, b: Option<jiff::Timestamp>) -> Option<jiff::Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use jiff::{SignedDuration, Timestamp};

    use super::*;
    use crate::observe::backend::QueryText;

    fn backend(state: &str, query: &str, started: i64) -> Backend {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        Backend {
            state: Some(state.into()),
            query: QueryText(query.into()),
            backend_start: Some(t0 + SignedDuration::from_secs(started)),
            state_change: Some(t0 + SignedDuration::from_secs(started + 1)),
            ..Backend::default()
        }
    }

    #[test]
    fn groups_by_state_and_normalised_statement_largest_first() {
        let bs = [
            backend("idle", "SELECT 1", 10),
            backend("idle in transaction", "SELECT * FROM odds WHERE id = 4", 3),
            backend("idle", "SELECT 1", 20),
            backend("idle in transaction", "SELECT * FROM odds WHERE id = 5", 1),
            backend("idle", "select 2", 30),
            backend("idle", "SELECT 1", 0),
        ];
        let refs: Vec<&Backend> = bs.iter().collect();
        let gs = group(&refs);
        let view: Vec<(&str, &str, u32)> = gs
            .iter()
            .map(|g| {
                (
                    g.state.as_deref().unwrap(),
                    g.statement.as_ref().unwrap().text.as_str(),
                    g.count,
                )
            })
            .collect();
        assert_eq!(
            view,
            vec![
                ("idle", "SELECT $1", 3),
                ("idle in transaction", "SELECT * FROM odds WHERE id = $1", 2),
                ("idle", "select $1", 1),
            ]
        );
        let t = |s: i64| Some(Timestamp::from_second(1_800_000_000 + s).unwrap());
        assert_eq!((gs[0].first_started, gs[0].last_started), (t(0), t(20)));
        assert_eq!(gs[0].oldest_state_change, t(1));
        assert_eq!(gs[1].first_started, t(1));
    }

    #[test]
    fn no_backends_no_groups() {
        assert!(group(&[]).is_empty());
    }
}
