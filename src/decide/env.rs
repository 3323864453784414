//! Rule 1 — env: the entries poolwarden owns, and which of them differ from what a
//! container has. Entries it does not own are never looked at.

use std::collections::BTreeMap;

use super::input::{EnvConflict, EnvValue, Workload};
use crate::policy::{Attribution, ResolvedPolicy, library::pool_env, validate::APPLICATION_NAME_ENV};

/// The env poolwarden wants on every selected container, in a stable order: each
/// pool setting under its library's name and in its library's unit.
pub fn desired_env(policy: &ResolvedPolicy) -> BTreeMap<String, EnvValue> {
    desired_env_with(policy, &policy.pool)
}

/// [`desired_env`] with these pool settings in place of the policy's (sizing's
/// Auto mode gives each workload its own sizes).
pub fn desired_env_with(policy: &ResolvedPolicy, pool: &crate::policy::PoolSettings) -> BTreeMap<String, EnvValue> {
    let mut env = BTreeMap::new();
    for setting in pool_env(pool) {
        if let (Some(name), Some(value)) = (setting.name, setting.value) {
            env.insert(name, EnvValue::Literal(value));
        }
    }
    for extra in &pool.extra_env {
        env.insert(extra.name.clone(), EnvValue::Literal(extra.value.clone()));
    }
    if matches!(policy.attribution, Attribution::ApplicationName | Attribution::Auto) {
        // libpq reports PGAPPNAME as application_name, which is how a backend names its
        // pod; a driver that ignores it gets the name through its library's binding.
        env.insert(APPLICATION_NAME_ENV.to_owned(), EnvValue::InstanceName);
        if let Some(binding) = pool.library.facts().application_name_binding {
            env.insert(binding.name.to_owned(), EnvValue::Literal(binding.value.to_owned()));
        }
    }
    env
}

/// The owned entries one container must change, per container name; empty when the
/// workload is in sync. Entries another manager owns are left out.
pub fn env_changes(
    policy: &ResolvedPolicy,
    desired: &BTreeMap<String, EnvValue>,
    workload: &Workload,
    conflicts: &[EnvConflict],
) -> BTreeMap<String, BTreeMap<String, EnvValue>> {
    let mut changes = BTreeMap::new();
    for container in selected_containers(policy, &workload.containers) {
        let differing: BTreeMap<String, EnvValue> = desired
            .iter()
            .filter(|(name, value)| container.env.get(*name) != Some(*value))
            .filter(|(name, _)| !conflicted(conflicts, workload, &container.name, name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        if !differing.is_empty() {
            changes.insert(container.name.clone(), differing);
        }
    }
    changes
}

/// The containers of a template the policy manages (all when it names none).
pub fn selected_containers<'w>(
    policy: &ResolvedPolicy,
    containers: &'w [super::input::Container],
) -> impl Iterator<Item = &'w super::input::Container> {
    containers
        .iter()
        .filter(|c| policy.containers.is_empty() || policy.containers.contains(&c.name))
}

/// Every entry poolwarden owns on the workload, per selected container: the desired
/// env minus the entries another manager owns. A server-side apply must carry all of
/// them, since an applier gives up the fields it leaves out.
pub fn owned_env(
    policy: &ResolvedPolicy,
    desired: &BTreeMap<String, EnvValue>,
    workload: &Workload,
    conflicts: &[EnvConflict],
) -> BTreeMap<String, BTreeMap<String, EnvValue>> {
    selected_containers(policy, &workload.containers)
        .map(|container| {
            let owned = desired
                .iter()
                .filter(|(name, _)| !conflicted(conflicts, workload, &container.name, name))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            (container.name.clone(), owned)
        })
        .collect()
}

fn conflicted(conflicts: &[EnvConflict], workload: &Workload, container: &str, env: &str) -> bool {
    conflicts
        .iter()
        .any(|c| c.workload == workload.name && c.container == container && c.env == env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(library: &str, attribution: &str) -> ResolvedPolicy {
        let spec = serde_json::json!({
            "selector": {"matchLabels": {"app": "shop"}},
            "database": {"urlSecretRef": {"name": "pg", "key": "url"}, "attribution": attribution},
            "pool": {"library": library, "minSize": 2, "maxSize": 10, "maxLifetimeSeconds": 30},
        });
        crate::policy::validate(&serde_json::from_value(spec).unwrap()).unwrap()
    }

    #[test]
    fn spring_boot_gets_the_pod_name_into_pgjdbc_through_spring_application_json_after_pgappname() {
        let env = desired_env(&policy("SpringBoot", "ApplicationName"));
        let names: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "PGAPPNAME",
                "SPRING_APPLICATION_JSON",
                "SPRING_DATASOURCE_HIKARI_MAXIMUMPOOLSIZE",
                "SPRING_DATASOURCE_HIKARI_MAXLIFETIME",
                "SPRING_DATASOURCE_HIKARI_MINIMUMIDLE",
            ],
            "Kubernetes expands $(PGAPPNAME) only from an entry before it: PGAPPNAME sorts first"
        );
        assert_eq!(env["PGAPPNAME"], EnvValue::InstanceName);
        assert_eq!(
            env["SPRING_APPLICATION_JSON"],
            EnvValue::Literal(
                r#"{"spring.datasource.hikari.data-source-properties.ApplicationName":"$(PGAPPNAME)"}"#.into()
            )
        );
        assert_eq!(
            env["SPRING_DATASOURCE_HIKARI_MAXLIFETIME"],
            EnvValue::Literal("30000".into())
        );
    }

    #[test]
    fn without_application_names_no_binding_is_written() {
        let env = desired_env(&policy("SpringBoot", "ClientAddress"));
        assert!(!env.contains_key("PGAPPNAME") && !env.contains_key("SPRING_APPLICATION_JSON"));
        let env = desired_env(&policy("HikariCP", "ApplicationName"));
        assert_eq!(
            env["PGAPPNAME"],
            EnvValue::InstanceName,
            "the app passes it to pgjdbc itself"
        );
        assert!(!env.contains_key("SPRING_APPLICATION_JSON"));
    }
}
