//! A Fly app's machines as the decision core sees them: each process group is a
//! workload, each machine an instance named `app:group:machine_id` — the name
//! poolwarden gives it as `PGAPPNAME`, so `application_name` attribution works
//! through Fly Postgres's HAProxy and Managed Postgres's PgBouncer, which hide the
//! machine's address. Pure.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::api::Machine;
use crate::{
    decide::{Container, Env, EnvConflict, EnvValue, Instance, Kind, Workload},
    platform::pass::{Subject, SubjectInstance},
    policy::{FlyTarget, RemediationRecord},
};

/// Machine metadata holding poolwarden's recent restarts of the machine (JSON).
pub const RESTARTS_KEY: &str = "poolwarden_restarts";
/// Machine metadata that stops poolwarden's writes to the machine's group.
pub const PAUSED_KEY: &str = "poolwarden_paused";
/// Machine metadata: the digest of the pool secrets the machine last started with.
pub const SECRETS_KEY: &str = "poolwarden_secrets";
/// The manager named in a conflict with an app secret.
pub const SECRETS_MANAGER: &str = "fly secrets";

/// The name a machine reports as `application_name`.
pub fn instance_name(app: &str, group: &str, machine_id: &str) -> String {
    format!("{app}:{group}:{machine_id}")
}

/// One process group and its active machines, sorted by id.
#[derive(Clone, Debug)]
pub struct Group {
    pub name: String,
    pub machines: Vec<Machine>,
}

/// The groups the target governs, sorted by name. A named group without machines is
/// listed (empty), so the report shows it. Release-command and console machines are
/// no part of any group.
pub fn groups(target: &FlyTarget, machines: &[Machine]) -> Vec<Group> {
    let mut by_group: BTreeMap<String, Vec<Machine>> =
        target.process_groups.iter().map(|g| (g.clone(), Vec::new())).collect();
    for m in machines
        .iter()
        .filter(|m| m.is_active() && !m.is_release_command_or_console())
    {
        let group = m.process_group();
        if target.process_groups.is_empty() || target.process_groups.contains(&group) {
            by_group.entry(group).or_default().push(m.clone());
        }
    }
    by_group
        .into_iter()
        .map(|(name, mut machines)| {
            machines.sort_by(|a, b| a.id.cmp(&b.id));
            Group { name, machines }
        })
        .collect()
}

/// The env a machine must carry: the desired entries with the instance's own name
/// where the policy asks for a pod's name.
pub fn machine_env(desired: &BTreeMap<String, EnvValue>, instance: &str) -> BTreeMap<String, String> {
    desired
        .iter()
        .filter_map(|(k, v)| match v {
            EnvValue::Literal(s) => Some((k.clone(), s.clone())),
            EnvValue::InstanceName => Some((k.clone(), instance.to_owned())),
            _ => None,
        })
        .collect()
}

/// The entries of `want` the machine's config env does not have, leaving out `skip`.
pub fn env_diff(
    machine: &Machine,
    want: &BTreeMap<String, String>,
    skip: &BTreeSet<String>,
) -> BTreeMap<String, String> {
    let have = machine.env();
    want.iter()
        .filter(|(k, v)| !skip.contains(*k) && have.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The group as one "container": each owned variable with the value every machine
/// agrees on (its own name reads as the downward-API `metadata.name`), or a value
/// that differs from any desired one when the machines disagree. Machines that cannot
/// be written (failed, unreachable) are left out: they are reported on their own, and
/// an env they will never get must not hold the rest of the group's remediations.
fn group_env(app: &str, group: &Group, owned: &BTreeSet<String>) -> Env {
    // Each machine's owned entries, its own name read as `metadata.name`.
    let machines: Vec<BTreeMap<&String, EnvValue>> = group
        .machines
        .iter()
        .filter(|m| m.unwritable().is_none())
        .map(|m| {
            let own_name = instance_name(app, &group.name, &m.id);
            let mut env = m.env();
            owned
                .iter()
                .filter_map(|key| {
                    let v = env.remove(key)?;
                    let v = if v == own_name {
                        EnvValue::InstanceName
                    } else {
                        EnvValue::Literal(v)
                    };
                    Some((key, v))
                })
                .collect()
        })
        .collect();
    let mut env = Env::new();
    for key in owned {
        let values: BTreeSet<Option<&EnvValue>> = machines.iter().map(|m| m.get(key)).collect();
        let mut it = values.into_iter();
        match (it.next(), it.next()) {
            (Some(Some(v)), None) => {
                env.insert(key.clone(), v.clone());
            }
            (Some(None), None) | (None, _) => {}
            _ => {
                env.insert(key.clone(), EnvValue::Other("differs between machines".to_owned()));
            }
        }
    }
    env
}

/// Variables of the desired env that are also app secrets (a secret overrides the
/// machine env of the same name), as conflicts with the secrets' owner.
pub fn secret_conflicts(
    groups: &[Group],
    desired: &BTreeMap<String, EnvValue>,
    secrets: &BTreeSet<String>,
) -> Vec<EnvConflict> {
    groups
        .iter()
        .flat_map(|g| {
            desired.keys().filter(|k| secrets.contains(*k)).map(|k| EnvConflict {
                workload: g.name.clone(),
                container: g.name.clone(),
                env: k.clone(),
                manager: SECRETS_MANAGER.to_owned(),
            })
        })
        .collect()
}

fn started_at(m: &Machine) -> Option<Timestamp> {
    // The API reports no start time; `updated_at` changes with every state change,
    // so for a started machine it is when it last started.
    m.updated_at.as_deref().and_then(|t| t.parse().ok())
}

/// The group as the observe pass and the decision core see it.
pub fn subject(app: &str, group: &Group, owned: &BTreeSet<String>) -> Subject {
    let instances: Vec<Instance> = group
        .machines
        .iter()
        .map(|m| Instance {
            name: instance_name(app, &group.name, &m.id),
            // Failed, unknown, or on a host the API cannot reach: unavailable.
            ready: m.is_up(),
            started_at: started_at(m),
            samples: Vec::new(),
        })
        .collect();
    let replicas = group.machines.len() as u32;
    let ready = instances.iter().filter(|i| i.ready).count() as u32;
    Subject {
        workload: Workload {
            kind: Kind::FlyProcessGroup,
            name: group.name.clone(),
            replicas,
            ready_replicas: ready,
            max_surge: 0,
            autoscaler_max: None,
            terminating: 0,
            rollout_in_progress: group.machines.iter().any(|m| m.state.in_transition()),
            paused: group
                .machines
                .iter()
                .any(|m| m.metadata().get(PAUSED_KEY).is_some_and(|v| v == "true")),
            // A group without machines has nothing to configure.
            containers: if group.machines.is_empty() {
                Vec::new()
            } else {
                vec![Container {
                    name: group.name.clone(),
                    env: group_env(app, group, owned),
                }]
            },
            instances,
            workload_samples: None,
            template: images_digest(group),
        },
        instances: group
            .machines
            .iter()
            .map(|m| SubjectInstance {
                ip: m.private_ip.parse().ok(),
                names_itself: m.env().get(crate::policy::validate::APPLICATION_NAME_ENV)
                    == Some(&instance_name(app, &group.name, &m.id)),
                pool: None,
            })
            .collect(),
        database_user: group.name.clone(),
        key: format!("{}/{}", Kind::FlyProcessGroup, group.name),
    }
}

/// A digest of the group's machine images: a new release (`fly deploy`) changes it,
/// a restart does not.
fn images_digest(group: &Group) -> Option<String> {
    let images: BTreeSet<&str> = group
        .machines
        .iter()
        .filter_map(|m| m.config["image"].as_str())
        .collect();
    (!images.is_empty()).then(|| {
        let joined: Vec<&str> = images.into_iter().collect();
        crate::digest::short(joined.join("\n").as_bytes())
    })
}

/// The restart records kept in the machines' metadata, oldest first.
pub fn restart_history(groups: &[Group]) -> Vec<RemediationRecord> {
    let mut records: Vec<RemediationRecord> = groups
        .iter()
        .flat_map(|g| g.machines.iter())
        .filter_map(|m| m.metadata().get(RESTARTS_KEY).cloned())
        .flat_map(|json| serde_json::from_str::<Vec<RemediationRecord>>(&json).unwrap_or_default())
        .collect();
    records.sort_by_key(|r| r.at);
    records.dedup();
    records
}

/// A machine's restart records with `record` added, keeping those newer than `keep_since`.
pub fn with_record(machine: &Machine, record: &RemediationRecord, keep_since: Timestamp) -> String {
    let mut records: Vec<RemediationRecord> = machine
        .metadata()
        .get(RESTARTS_KEY)
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default();
    records.retain(|r| r.at >= keep_since);
    // The evidence stays out of the machine's metadata (a few hundred bytes per
    // record, on every restart): the Event and the report carry it. The recurrence
    // guard's fields stay, so a restarted reconciler still knows the row of restarts.
    records.push(RemediationRecord {
        evidence: None,
        ..record.clone()
    });
    serde_json::to_string(&records).unwrap_or_else(|_| "[]".to_owned())
}

/// A machine's restart records without `record` (an attempt that did not happen).
pub fn without_record(machine: &Machine, record: &RemediationRecord) -> String {
    let mut records: Vec<RemediationRecord> = machine
        .metadata()
        .get(RESTARTS_KEY)
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default();
    // Kept without its evidence (see `with_record`).
    let kept = RemediationRecord {
        evidence: None,
        ..record.clone()
    };
    records.retain(|r| r != &kept);
    serde_json::to_string(&records).unwrap_or_else(|_| "[]".to_owned())
}

/// The machine an instance name points at.
pub fn machine_id(instance: &str) -> &str {
    instance.rsplit(':').next().unwrap_or(instance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn machine(id: &str, group: &str, state: &str, env: serde_json::Value) -> Machine {
        serde_json::from_value(json!({
            "id": id, "state": state, "region": "ams", "instance_id": "01", "private_ip": "fdaa::3",
            "updated_at": "2026-11-23T10:00:00Z",
            "config": {"env": env, "metadata": {"fly_process_group": group}}
        }))
        .unwrap()
    }

    fn target(groups: &[&str]) -> FlyTarget {
        serde_json::from_value(json!({"app": "sportsbook", "processGroups": groups})).unwrap()
    }

    #[test]
    fn groups_keep_the_named_ones_and_list_empty_named_groups() {
        let ms = vec![
            machine("b", "web", "started", json!({})),
            machine("a", "web", "started", json!({})),
            machine("c", "worker_odds", "destroyed", json!({})),
            machine("d", "other", "started", json!({})),
        ];
        let gs = groups(&target(&["web", "worker_odds"]), &ms);
        let names: Vec<(&str, Vec<&str>)> = gs
            .iter()
            .map(|g| (g.name.as_str(), g.machines.iter().map(|m| m.id.as_str()).collect()))
            .collect();
        assert_eq!(names, vec![("web", vec!["a", "b"]), ("worker_odds", vec![])]);
        assert_eq!(groups(&target(&[]), &ms).len(), 2, "every group with an active machine");
    }

    #[test]
    fn the_group_env_reads_a_machines_own_name_as_metadata_name_and_flags_disagreement() {
        let g = Group {
            name: "web".into(),
            machines: vec![
                machine(
                    "a",
                    "web",
                    "started",
                    json!({"PGAPPNAME": "sb:web:a", "DB_POOL_MAX": "10", "X": "1"}),
                ),
                machine(
                    "b",
                    "web",
                    "started",
                    json!({"PGAPPNAME": "sb:web:b", "DB_POOL_MAX": "20"}),
                ),
            ],
        };
        let owned: BTreeSet<String> = ["PGAPPNAME", "DB_POOL_MAX", "DB_POOL_MIN"].map(String::from).into();
        let s = subject("sb", &g, &owned);
        let env = &s.workload.containers[0].env;
        assert_eq!(env.get("PGAPPNAME"), Some(&EnvValue::InstanceName));
        assert!(matches!(env.get("DB_POOL_MAX"), Some(EnvValue::Other(_))));
        assert!(!env.contains_key("DB_POOL_MIN"));
        assert!(!env.contains_key("X"), "only owned variables are read");
        assert!(s.instances.iter().all(|i| i.names_itself));
        assert_eq!(s.workload.instances[1].name, "sb:web:b");
        assert_eq!(machine_id(&s.workload.instances[1].name), "b");
    }

    #[test]
    fn machine_env_and_diff_fill_in_the_instance_name_and_skip_conflicts() {
        let desired = BTreeMap::from([
            ("DB_POOL_MAX".to_owned(), EnvValue::Literal("10".into())),
            ("PGAPPNAME".to_owned(), EnvValue::InstanceName),
        ]);
        let want = machine_env(&desired, "sb:web:a");
        assert_eq!(want["PGAPPNAME"], "sb:web:a");
        let m = machine("a", "web", "started", json!({"DB_POOL_MAX": "20"}));
        let all = env_diff(&m, &want, &BTreeSet::new());
        assert_eq!(all.len(), 2);
        let skipped = env_diff(&m, &want, &BTreeSet::from(["DB_POOL_MAX".to_owned()]));
        assert_eq!(skipped.keys().collect::<Vec<_>>(), vec!["PGAPPNAME"]);
    }

    #[test]
    fn restart_records_round_trip_through_metadata_and_old_ones_are_dropped() {
        let record = |at: &str| RemediationRecord {
            at: at.parse().unwrap(),
            state: Default::default(),
            action: crate::policy::RemediationAction::RestartPod,
            kind: Kind::FlyProcessGroup.to_string(),
            workload: "web".into(),
            pod: Some("sb:web:a".into()),
            reason: "leak".into(),
            measure: crate::policy::Measure::LifetimeOverrun,
            values: vec![3, 4],
            limit: 2,
            since: at.parse().unwrap(),
            ..Default::default()
        };
        let mut m = machine("a", "web", "started", json!({}));
        let old = record("2026-11-23T08:00:00Z");
        m.config["metadata"][RESTARTS_KEY] = json!(serde_json::to_string(&vec![old]).unwrap());
        let new = record("2026-11-23T10:00:00Z");
        let kept = with_record(&m, &new, "2026-11-23T09:00:00Z".parse().unwrap());
        m.config["metadata"][RESTARTS_KEY] = json!(kept);
        let g = Group {
            name: "web".into(),
            machines: vec![m.clone()],
        };
        assert_eq!(restart_history(&[g]), vec![new.clone()]);
        assert_eq!(without_record(&m, &new), "[]");
    }
}
