//! What each workload and pod watch event does to the selection index, and which
//! policies it concerns: the stream of passes those watches trigger.
//!
//! The index is the only store of these objects (no kube-runtime reflector keeps a
//! second copy), so this is where a relist is buffered and swapped in whole, as a
//! reflector does, and where a change is told apart from a resend: the index answers
//! what each write replaced, and only a change a pass reads triggers one. A deleted
//! workload, a pod that went, and a workload relabelled out of a policy trigger the
//! policies that selected them before, so their status drops them at once.

use std::collections::{BTreeSet, HashSet};

use kube::runtime::{reflector::ObjectRef, watcher::Event};

use super::{
    cache::{CachedAutoscaler, CachedPod, CachedWorkload},
    index::{Owner, SelectionIndex},
    validated::ValidatedPolicies,
    workloads::WorkloadView,
};
use crate::policy::{PoolPolicy, WorkloadKind};

/// The objects of a relist in progress (`Init` … `InitDone`).
struct Relist<T>(Option<Vec<T>>);

impl<T> Default for Relist<T> {
    fn default() -> Self {
        Relist(None)
    }
}

impl<T> Relist<T> {
    fn start(&mut self) {
        self.0 = Some(Vec::new());
    }

    fn push(&mut self, object: T) {
        self.0.get_or_insert_with(Vec::new).push(object);
    }

    fn finish(&mut self) -> Vec<T> {
        self.0.take().unwrap_or_default()
    }
}

/// The policies to reconcile for a change from `before` to `after` of one workload:
/// none when nothing a pass reads changed; those selecting it after, and (when its
/// labels changed or it went) those that selected it before.
fn workload_concerns(
    validated: &ValidatedPolicies,
    before: Option<&CachedWorkload>,
    after: Option<&CachedWorkload>,
) -> Vec<ObjectRef<PoolPolicy>> {
    if let (Some(old), Some(new)) = (before, after)
        && !old.differs_for_a_pass(new)
    {
        return Vec::new();
    }
    let mut refs: HashSet<ObjectRef<PoolPolicy>> = HashSet::new();
    if let Some(new) = after {
        refs.extend(policies_selecting(validated, &new.view));
    }
    if let Some(old) = before
        && after.is_none_or(|new| old.view.labels != new.view.labels)
    {
        refs.extend(policies_selecting(validated, &old.view));
    }
    refs.into_iter().collect()
}

/// What storing `w` will change, read before it replaces the version the index holds.
fn apply_concerns(
    index: &SelectionIndex,
    validated: &ValidatedPolicies,
    kind: WorkloadKind,
    w: &CachedWorkload,
) -> Vec<ObjectRef<PoolPolicy>> {
    index
        .with_workload(&w.view.namespace, kind, &w.view.name, |old| {
            workload_concerns(validated, Some(old), Some(w))
        })
        .unwrap_or_else(|| workload_concerns(validated, None, Some(w)))
}

/// What a workload watch event of `kind` does: stores it in the index, and answers
/// the policies to reconcile.
pub fn workloads(
    index: SelectionIndex,
    validated: ValidatedPolicies,
    kind: WorkloadKind,
) -> impl FnMut(Event<CachedWorkload>) -> Vec<ObjectRef<PoolPolicy>> {
    let mut relist = Relist::default();
    move |event| match event {
        Event::Apply(w) => {
            let refs = apply_concerns(&index, &validated, kind, &w);
            index.put_workload(w);
            refs
        }
        Event::Delete(w) => {
            let before = index.remove_workload(&w.view.namespace, kind, &w.view.name);
            workload_concerns(&validated, Some(before.as_ref().unwrap_or(&w)), None)
        }
        Event::Init => {
            relist.start();
            Vec::new()
        }
        Event::InitApply(w) => {
            relist.push(w);
            Vec::new()
        }
        Event::InitDone => {
            let listed = relist.finish();
            let mut refs: HashSet<_> = listed
                .iter()
                .flat_map(|w| apply_concerns(&index, &validated, kind, w))
                .collect();
            for gone in index.replace_workloads(kind, listed) {
                refs.extend(workload_concerns(&validated, Some(&gone), None));
            }
            refs.into_iter().collect()
        }
    }
}

/// The owners a pod's change from `old` to `new` concerns: none when nothing a pass
/// reads changed; else its owner before and after (a pod orphaned or adopted
/// concerns both).
pub fn changed_owners(old: Option<&CachedPod>, new: Option<&CachedPod>) -> Vec<Owner> {
    if let (Some(a), Some(b)) = (old, new)
        && !a.differs_for_a_pass(b)
    {
        return Vec::new();
    }
    let mut owners: Vec<Owner> = [old, new]
        .into_iter()
        .flatten()
        .filter_map(|p| p.owner.clone().map(|(kind, name)| (p.namespace.clone(), kind, name)))
        .collect();
    owners.dedup();
    owners
}

/// The policies selecting the workload of each owner the index holds.
fn owners_concern(
    index: &SelectionIndex,
    validated: &ValidatedPolicies,
    owners: impl IntoIterator<Item = Owner>,
) -> HashSet<ObjectRef<PoolPolicy>> {
    let mut refs = HashSet::new();
    for (ns, kind, name) in owners {
        if let Some(found) = index.with_workload(&ns, kind, &name, |w| policies_selecting(validated, &w.view)) {
            refs.extend(found);
        }
    }
    refs
}

/// The owners storing `p` will concern, read before it replaces the version held.
fn pod_change(index: &SelectionIndex, p: &CachedPod) -> Vec<Owner> {
    index
        .with_pod(&p.namespace, &p.name, |old| changed_owners(Some(old), Some(p)))
        .unwrap_or_else(|| changed_owners(None, Some(p)))
}

/// What a pod watch event does: stores it in the index, and answers the policies
/// selecting the workloads whose pods changed.
pub fn pods(
    index: SelectionIndex,
    validated: ValidatedPolicies,
) -> impl FnMut(Event<CachedPod>) -> Vec<ObjectRef<PoolPolicy>> {
    let mut relist = Relist::default();
    move |event| match event {
        Event::Apply(p) => {
            let owners = pod_change(&index, &p);
            index.put_pod(p);
            owners_concern(&index, &validated, owners).into_iter().collect()
        }
        Event::Delete(p) => {
            let before = index.remove_pod(&p.namespace, &p.name);
            let owners = changed_owners(Some(before.as_ref().unwrap_or(&p)), None);
            owners_concern(&index, &validated, owners).into_iter().collect()
        }
        Event::Init => {
            relist.start();
            Vec::new()
        }
        Event::InitApply(p) => {
            relist.push(p);
            Vec::new()
        }
        Event::InitDone => {
            let listed = relist.finish();
            let mut owners: BTreeSet<Owner> = listed.iter().flat_map(|p| pod_change(&index, p)).collect();
            for gone in index.replace_pods(listed) {
                owners.extend(changed_owners(Some(&gone), None));
            }
            owners_concern(&index, &validated, owners).into_iter().collect()
        }
    }
}

/// What an autoscaler watch event does: stores it in the index, and answers the
/// policies selecting the workload it targets (and the one it targeted before).
pub fn autoscalers(
    index: SelectionIndex,
    validated: ValidatedPolicies,
) -> impl FnMut(Event<CachedAutoscaler>) -> Vec<ObjectRef<PoolPolicy>> {
    let mut relist = Relist::default();
    let target = |a: &CachedAutoscaler| a.target.clone().map(|(kind, name)| (a.namespace.clone(), kind, name));
    move |event| match event {
        Event::Apply(a) => {
            let owners: BTreeSet<Owner> = target(&a).into_iter().chain(index.put_autoscaler(a)).collect();
            owners_concern(&index, &validated, owners).into_iter().collect()
        }
        Event::Delete(a) => {
            let owners: BTreeSet<Owner> = target(&a)
                .into_iter()
                .chain(index.remove_autoscaler(&a.namespace, &a.name))
                .collect();
            owners_concern(&index, &validated, owners).into_iter().collect()
        }
        Event::Init => {
            relist.start();
            Vec::new()
        }
        Event::InitApply(a) => {
            relist.push(a);
            Vec::new()
        }
        Event::InitDone => {
            let listed = relist.finish();
            let mut owners: BTreeSet<Owner> = listed.iter().filter_map(target).collect();
            owners.extend(index.replace_autoscalers(listed));
            owners_concern(&index, &validated, owners).into_iter().collect()
        }
    }
}

/// The policies of the object's namespace whose selector picks it.
pub fn policies_selecting(validated: &ValidatedPolicies, view: &WorkloadView) -> Vec<ObjectRef<PoolPolicy>> {
    let selecting = validated.selecting(view);
    selecting
        .iter()
        .map(|v| ObjectRef::from_obj(v.policy.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::kubernetes::{
        index::tests::{deployment, pod},
        validated::tests::policy,
    };
    use serde_json::json;

    fn names(refs: Vec<ObjectRef<PoolPolicy>>) -> Vec<String> {
        let mut names: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    fn cluster() -> (SelectionIndex, ValidatedPolicies) {
        let validated = ValidatedPolicies::default();
        validated.put(policy("prod", "team-a", json!({"matchLabels": {"team": "a"}}), 0));
        validated.put(policy("prod", "team-b", json!({"matchLabels": {"team": "b"}}), 0));
        (SelectionIndex::default(), validated)
    }

    #[test]
    fn a_workload_triggers_on_what_a_pass_reads_and_its_old_policies_hear_it_leave() {
        let (index, validated) = cluster();
        let mut follow = workloads(index.clone(), validated, WorkloadKind::Deployment);
        let web = deployment("prod", "web", json!({"team": "a"}));
        assert_eq!(names(follow(Event::Apply(web.clone()))), ["team-a"]);
        // Its status moved (a resend with new counts): stored, no pass.
        let mut counted = web.clone();
        counted.view.ready_replicas = 2;
        assert_eq!(names(follow(Event::Apply(counted))), Vec::<String>::new());
        assert_eq!(
            index.with_workload("prod", WorkloadKind::Deployment, "web", |w| w.view.ready_replicas),
            Some(2)
        );
        // A new generation (its env or template changed).
        let mut next = web.clone();
        next.generation = Some(2);
        assert_eq!(names(follow(Event::Apply(next))), ["team-a"]);
        // Relabelled from team a to team b: both hear it.
        let moved = deployment("prod", "web", json!({"team": "b"}));
        assert_eq!(names(follow(Event::Apply(moved.clone()))), ["team-a", "team-b"]);
        // Deleted: the policy that selected it.
        assert_eq!(names(follow(Event::Delete(moved))), ["team-b"]);
        assert!(
            index
                .with_workload("prod", WorkloadKind::Deployment, "web", |_| ())
                .is_none()
        );
    }

    #[test]
    fn a_relist_triggers_for_what_changed_came_or_went_while_the_watch_was_down() {
        let (index, validated) = cluster();
        let mut follow = workloads(index.clone(), validated, WorkloadKind::Deployment);
        follow(Event::Apply(deployment("prod", "web", json!({"team": "a"}))));
        follow(Event::Apply(deployment("prod", "api", json!({"team": "b"}))));
        follow(Event::Init);
        follow(Event::InitApply(deployment("prod", "web", json!({"team": "a"}))));
        assert_eq!(
            names(follow(Event::InitDone)),
            ["team-b"],
            "web is unchanged; api went while the watch was down"
        );
        assert!(
            index
                .with_workload("prod", WorkloadKind::Deployment, "api", |_| ())
                .is_none()
        );
        follow(Event::Init);
        follow(Event::InitApply(deployment("prod", "web", json!({"team": "a"}))));
        assert_eq!(names(follow(Event::InitDone)), Vec::<String>::new());
    }

    #[test]
    fn a_pod_triggers_its_workloads_policies_when_it_changes_moves_or_goes() {
        let (index, validated) = cluster();
        workloads(index.clone(), validated.clone(), WorkloadKind::Deployment)(Event::Apply(deployment(
            "prod",
            "web",
            json!({"team": "a"}),
        )));
        let mut follow = pods(index.clone(), validated);
        let web_1 = pod("prod", "web-1", Some("web"), false);
        assert_eq!(names(follow(Event::Apply(web_1.clone()))), ["team-a"]);
        assert_eq!(
            names(follow(Event::Apply(web_1.clone()))),
            Vec::<String>::new(),
            "a resend"
        );
        let mut ready = web_1.clone();
        ready.ready = true;
        assert_eq!(names(follow(Event::Apply(ready))), ["team-a"]);
        // Orphaned by its ReplicaSet: its old workload's policies hear it go.
        assert_eq!(
            names(follow(Event::Apply(pod("prod", "web-1", None, false)))),
            ["team-a"]
        );
        assert_eq!(names(follow(Event::Apply(web_1.clone()))), ["team-a"]);
        assert_eq!(names(follow(Event::Delete(web_1))), ["team-a"]);
        // A pod of a workload no policy has (or the index does not hold).
        assert_eq!(
            names(follow(Event::Apply(pod("prod", "x-1", Some("x"), false)))),
            Vec::<String>::new()
        );
        follow(Event::Init);
        assert_eq!(
            names(follow(Event::InitDone)),
            Vec::<String>::new(),
            "x-1 went: x is no policy's"
        );
        let selected = index.select(
            &crate::platform::kubernetes::index::tests::policy(json!({"matchLabels": {"team": "a"}})),
            "prod",
        );
        assert_eq!(selected.len(), 1);
        assert!(selected[0].pods.is_empty());
    }
}
