//! Values a pool library would silently replace, ignore or misread: valid policies
//! whose pool would not run with the policy's values, or whose measure would count a
//! healthy pool. `poolwarden check` prints them as warnings (they do not fail it);
//! each message says what the library does instead. The facts come from
//! [`super::library`].

use std::time::Duration;

use super::{
    Measure, PoolPolicySpec, PoolSettings, Problem,
    library::{DefaultMinSize, pool_env},
};

/// Every warning for a policy that passed validation.
pub fn warnings(spec: &PoolPolicySpec) -> Vec<Problem> {
    let mut out = Vec::new();
    replaced_values(&spec.pool, &mut out);
    unwritten_settings(&spec.pool, &mut out);
    pgx_notes(&spec.pool, &mut out);
    grace_below_recycling(spec, &mut out);
    out
}

fn warn(out: &mut Vec<Problem>, path: &str, message: String) {
    out.push(Problem {
        path: path.to_owned(),
        message,
    });
}

/// HikariCP's `validateNumerics`: what it replaces or switches off.
fn replaced_values(pool: &PoolSettings, out: &mut Vec<Problem>) {
    let facts = pool.library.facts();
    let Some(minimums) = facts.minimums else {
        return;
    };
    let library = pool.library;
    if let Some(l) = pool.max_lifetime_seconds.filter(|l| *l < minimums.max_lifetime_seconds) {
        warn(
            out,
            "spec.pool.maxLifetimeSeconds",
            format!(
                "{library:?}: HikariCP replaces a maxLifetime below {} s by 30 minutes (a log warning only), so {l} s would not hold and every connection would count as a LifetimeOverrun: set at least {}",
                minimums.max_lifetime_seconds, minimums.max_lifetime_seconds
            ),
        );
    }
    let fixed = match (pool.min_size, facts.default_min_size) {
        (Some(min), _) => min >= pool.max_size,
        (None, DefaultMinSize::MaxSize) => true,
        (None, DefaultMinSize::Count(n)) => n >= pool.max_size,
    };
    let Some(idle) = pool.max_idle_seconds else {
        return;
    };
    let path = "spec.pool.maxIdleSeconds";
    if fixed {
        warn(
            out,
            path,
            format!(
                "{library:?}: HikariCP ignores idleTimeout when minimumIdle (minSize, by default maxSize) equals maximumPoolSize: the pool keeps every connection"
            ),
        );
    } else if pool.max_lifetime_seconds.is_some_and(|l| idle + 1 > l) {
        warn(
            out,
            path,
            format!(
                "{library:?}: HikariCP disables idleTimeout when it is within 1 s of maxLifetime, so idle connections live until their lifetime: set maxIdleSeconds well below maxLifetimeSeconds"
            ),
        );
    } else if idle < minimums.max_idle_seconds {
        warn(
            out,
            path,
            format!(
                "{library:?}: HikariCP replaces an idleTimeout below {} s by 10 minutes (a log warning only), so {idle} s would not hold: set at least {}",
                minimums.max_idle_seconds, minimums.max_idle_seconds
            ),
        );
    }
}

/// A value set for a setting the library does not have, with no variable named for it.
fn unwritten_settings(pool: &PoolSettings, out: &mut Vec<Problem>) {
    let values = [
        ("maxIdleSeconds", pool.max_idle_seconds.is_some()),
        ("maxLifetimeJitterSeconds", pool.max_lifetime_jitter_seconds.is_some()),
        ("healthCheckPeriodSeconds", pool.health_check_period_seconds.is_some()),
    ];
    for setting in pool_env(pool) {
        let set = values.iter().any(|(field, set)| *field == setting.field && *set);
        if set && setting.name.is_none() {
            warn(
                out,
                &format!("spec.pool.{}", setting.field),
                format!(
                    "{:?} has no such setting: {} is not written (name a variable in spec.pool.env to write it anyway)",
                    pool.library, setting.field
                ),
            );
        }
    }
}

/// pgx runs with its own values where the policy sets none.
fn pgx_notes(pool: &PoolSettings, out: &mut Vec<Problem>) {
    let facts = pool.library.facts();
    if facts.max_lifetime_jitter.is_none() {
        return;
    }
    if pool.max_lifetime_jitter_seconds.is_none() && pool.max_lifetime_seconds.is_some() {
        warn(
            out,
            "spec.pool.maxLifetimeJitterSeconds",
            format!(
                "{:?}: without a jitter, the connections a burst opened together all expire together",
                pool.library
            ),
        );
    }
    if pool.health_check_period_seconds.is_none() {
        warn(
            out,
            "spec.pool.healthCheckPeriodSeconds",
            format!(
                "{:?}: pgx's own health-check period (60 s) applies; it closes expired and idle connections only then, and the default grace covers it",
                pool.library
            ),
        );
    }
}

/// An explicit grace shorter than the time the library takes to close what the
/// measure counts: a healthy pool would score.
fn grace_below_recycling(spec: &PoolPolicySpec, out: &mut Vec<Problem>) {
    let Some(rule) = &spec.discrepancy else {
        return;
    };
    let Some(Ok(grace)) = rule.grace.as_ref().map(super::HumanDuration::parse) else {
        return;
    };
    let facts = spec.pool.library.facts();
    let (delay, what) = match rule.measure {
        Measure::LifetimeOverrun => (facts.lifetime_delay(&spec.pool), "expired connections"),
        Measure::IdleOverrun => (facts.idle_delay(&spec.pool), "idle connections"),
        Measure::DatabaseMinusTracked | Measure::PoolMinusTracked => (Duration::ZERO, ""),
    };
    if grace < delay {
        warn(
            out,
            "spec.discrepancy.grace",
            format!(
                "{:?} closes {what} up to {} s late (its health-check or housekeeping period{}), longer than the grace: a healthy pool would count; leave grace unset for the library's default",
                spec.pool.library,
                delay.as_secs(),
                if spec.pool.max_lifetime_jitter_seconds.is_some() && rule.measure == Measure::LifetimeOverrun {
                    " and the lifetime jitter"
                } else {
                    ""
                }
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pool: serde_json::Value, discrepancy: serde_json::Value) -> PoolPolicySpec {
        serde_json::from_value(serde_json::json!({
            "selector": {"matchLabels": {"app": "web"}},
            "database": {"urlSecretRef": {"name": "pg", "key": "url"}},
            "pool": pool,
            "discrepancy": discrepancy,
        }))
        .unwrap()
    }

    fn paths(spec: &PoolPolicySpec) -> Vec<String> {
        warnings(spec).into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn hikari_values_it_replaces_are_warned_of_and_valid_ones_are_not() {
        let lifetime = serde_json::json!({"measure": "LifetimeOverrun"});
        for library in ["HikariCP", "SpringBoot"] {
            let low = spec(
                serde_json::json!({"library": library, "minSize": 2, "maxSize": 10, "maxIdleSeconds": 5, "maxLifetimeSeconds": 20}),
                lifetime.clone(),
            );
            assert_eq!(
                paths(&low),
                ["spec.pool.maxLifetimeSeconds", "spec.pool.maxIdleSeconds"],
                "{library}"
            );
            let fine = spec(
                serde_json::json!({"library": library, "minSize": 2, "maxSize": 10, "maxIdleSeconds": 10, "maxLifetimeSeconds": 30}),
                lifetime.clone(),
            );
            assert!(paths(&fine).is_empty(), "{library}: {:?}", warnings(&fine));
        }
        let fixed = spec(
            serde_json::json!({"library": "HikariCP", "maxSize": 10, "maxIdleSeconds": 60, "maxLifetimeSeconds": 600}),
            lifetime.clone(),
        );
        assert!(warnings(&fixed)[0].message.contains("ignores idleTimeout"));
        let close = spec(
            serde_json::json!({"library": "HikariCP", "minSize": 1, "maxSize": 10, "maxIdleSeconds": 600, "maxLifetimeSeconds": 600}),
            lifetime,
        );
        assert!(warnings(&close)[0].message.contains("disables idleTimeout"));
    }

    #[test]
    fn a_setting_the_library_lacks_is_warned_of_unless_a_variable_is_named() {
        let d = serde_json::json!({"measure": "LifetimeOverrun"});
        let p = spec(
            serde_json::json!({"library": "SQLAlchemy", "minSize": 2, "maxSize": 10, "maxIdleSeconds": 60, "maxLifetimeSeconds": 600, "healthCheckPeriodSeconds": 5}),
            d.clone(),
        );
        assert_eq!(
            paths(&p),
            ["spec.pool.maxIdleSeconds", "spec.pool.healthCheckPeriodSeconds"]
        );
        let named = spec(
            serde_json::json!({"library": "SQLAlchemy", "minSize": 2, "maxSize": 10, "maxIdleSeconds": 60, "maxLifetimeSeconds": 600, "env": {"maxIdleSeconds": "MY_IDLE"}}),
            d,
        );
        assert!(paths(&named).is_empty());
    }

    #[test]
    fn pgx_is_noted_without_jitter_or_period_and_warned_of_a_grace_below_its_recycling() {
        let p = spec(
            serde_json::json!({"library": "Pgx", "maxSize": 10, "maxLifetimeSeconds": 600}),
            serde_json::json!({"measure": "LifetimeOverrun"}),
        );
        assert_eq!(
            paths(&p),
            [
                "spec.pool.maxLifetimeJitterSeconds",
                "spec.pool.healthCheckPeriodSeconds"
            ]
        );
        let short = spec(
            serde_json::json!({"library": "Pgx", "maxSize": 10, "maxLifetimeSeconds": 600, "maxLifetimeJitterSeconds": 20, "healthCheckPeriodSeconds": 30}),
            serde_json::json!({"measure": "LifetimeOverrun", "grace": "40s"}),
        );
        let w = warnings(&short);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].message.contains("up to 50 s late"), "{}", w[0].message);
        let generic = spec(
            serde_json::json!({"maxSize": 10, "maxLifetimeSeconds": 600}),
            serde_json::json!({"measure": "LifetimeOverrun", "grace": "1s"}),
        );
        assert!(warnings(&generic).is_empty());
    }
}
