//! Which backend belongs to which pod — or, with `User` attribution, to which
//! workload. Pure: backends and pods (or workloads) in, owners out.
//!
//! PostgreSQL keeps at most NAMEDATALEN-1 (63) bytes of `application_name`
//! (<https://www.postgresql.org/docs/current/runtime-config-logging.html#GUC-APPLICATION-NAME>),
//! so a long pod name arrives cut. A cut name that is the prefix of exactly one pod's
//! name is that pod's; of several, it is reported ambiguous — never guessed.

use std::{collections::HashMap, net::IpAddr};

use super::backend::Backend;
use crate::{observation::Measured, policy::Attribution};

/// The longest `application_name` PostgreSQL keeps, in bytes.
pub const APPLICATION_NAME_MAX_BYTES: usize = 63;

/// A pod as attribution sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodKey {
    pub name: String,
    pub ip: Option<IpAddr>,
}

/// The backends of each pod (same order as the pods given), and what could not be placed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributed<'a> {
    pub per_pod: Vec<Vec<&'a Backend>>,
    /// Backends whose cut application name fits several pods, with those pods' names.
    pub ambiguous: Vec<(&'a Backend, Vec<String>)>,
    /// Backends that match no pod.
    pub unattributed: Vec<&'a Backend>,
}

/// Attributes backends to pods by application name, client address, or both (Auto).
/// `User` attribution is per workload, not per pod: see [`attribute_by_user`]; here it
/// attributes nothing.
pub fn attribute<'a>(mode: Attribution, backends: &'a [Backend], pods: &[PodKey]) -> Attributed<'a> {
    let mut out = Attributed {
        per_pod: vec![Vec::new(); pods.len()],
        ..Attributed::default()
    };
    let index = PodIndex::of(pods);
    for backend in backends {
        let by_name = || index.by_application_name(&backend.application_name);
        let by_addr = || backend.client_addr.and_then(|addr| index.by_addr.get(&addr).copied());
        let owner = match mode {
            Attribution::ApplicationName => by_name(),
            Attribution::ClientAddress => by_addr().map(NameMatch::One).unwrap_or(NameMatch::None),
            Attribution::Auto => match by_name() {
                NameMatch::None => by_addr().map(NameMatch::One).unwrap_or(NameMatch::None),
                found => found,
            },
            Attribution::User => NameMatch::None,
        };
        match owner {
            NameMatch::One(i) => out.per_pod[i].push(backend),
            NameMatch::Several(candidates) => out
                .ambiguous
                .push((backend, candidates.iter().map(|&i| pods[i].name.clone()).collect())),
            NameMatch::None => out.unattributed.push(backend),
        }
    }
    out
}

/// The pods by name, by cut name and by address, made once per attribution: a
/// search of every pod for every backend cost a pass 8.4 s of CPU at 10,000
/// workloads × 3 pods and 195,000 backends (`cargo bench --bench sizing -- --pass`).
/// Where two pods share a name or an address the first is the one found, as a
/// search in order finds it.
struct PodIndex<'p> {
    by_name: HashMap<&'p str, usize>,
    /// Pods whose name PostgreSQL would cut, by the cut name, in order.
    by_cut_name: HashMap<&'p str, Vec<usize>>,
    by_addr: HashMap<IpAddr, usize>,
}

impl<'p> PodIndex<'p> {
    fn of(pods: &'p [PodKey]) -> Self {
        let mut index = PodIndex {
            by_name: HashMap::with_capacity(pods.len()),
            by_cut_name: HashMap::new(),
            by_addr: HashMap::with_capacity(pods.len()),
        };
        for (i, p) in pods.iter().enumerate() {
            index.by_name.entry(&p.name).or_insert(i);
            if p.name.len() > APPLICATION_NAME_MAX_BYTES {
                index.by_cut_name.entry(clip(&p.name)).or_default().push(i);
            }
            if let Some(ip) = p.ip {
                index.by_addr.entry(ip).or_insert(i);
            }
        }
        index
    }

    fn by_application_name(&self, application_name: &str) -> NameMatch<'_> {
        if application_name.is_empty() {
            return NameMatch::None;
        }
        if let Some(&i) = self.by_name.get(application_name) {
            return NameMatch::One(i);
        }
        // Only a name of exactly the cut length can have been cut.
        if application_name.len() < APPLICATION_NAME_MAX_BYTES {
            return NameMatch::None;
        }
        match self.by_cut_name.get(application_name).map(Vec::as_slice) {
            None | Some([]) => NameMatch::None,
            Some([i]) => NameMatch::One(*i),
            Some(several) => NameMatch::Several(several),
        }
    }
}

/// A workload as `User` attribution sees it: the role its pods log in as
/// ([`crate::policy::database_user`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadKey {
    /// How reports name the workload (e.g. `Deployment/web`).
    pub name: String,
    pub user: String,
}

/// The backends of each workload (same order as the workloads given), and what could
/// not be placed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttributedByUser<'a> {
    /// A workload's backends, or — when another listed workload logs in as the same
    /// role — unknown, with the names of the workloads sharing it.
    pub per_workload: Vec<Measured<Vec<&'a Backend>>>,
    /// Backends of a role several workloads log in as, with those workloads' names.
    pub ambiguous: Vec<(&'a Backend, Vec<String>)>,
    /// Backends of no listed workload's role (or of a role PostgreSQL does not show).
    pub unattributed: Vec<&'a Backend>,
}

/// Attributes backends to workloads by role (`pg_stat_activity.usename`).
///
/// A role cannot tell apart the workloads that share it: such workloads are unknown —
/// even while the role has no backends, so the misconfiguration shows in status — and
/// their backends are reported ambiguous, never split by guess.
pub fn attribute_by_user<'a>(backends: &'a [Backend], workloads: &[WorkloadKey]) -> AttributedByUser<'a> {
    // The workloads of each role, made once (searching them all for every backend
    // was quadratic, as [`PodIndex`] explains).
    let mut by_user: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, w) in workloads.iter().enumerate() {
        by_user.entry(&w.user).or_default().push(i);
    }
    let sharing = |user: &str| -> &[usize] { by_user.get(user).map_or(&[], Vec::as_slice) };
    let names = |owners: &[usize]| owners.iter().map(|&i| workloads[i].name.clone()).collect::<Vec<_>>();
    let mut out = AttributedByUser {
        per_workload: workloads
            .iter()
            .map(|w| match sharing(&w.user) {
                [_] => Measured::Known(Vec::new()),
                owners => Measured::Unknown(format!(
                    "role {:?} is shared by {}: User attribution cannot tell them apart",
                    w.user,
                    names(owners).join(", ")
                )),
            })
            .collect(),
        ..AttributedByUser::default()
    };
    for backend in backends {
        let owners = backend.user.as_deref().map(sharing).unwrap_or_default();
        match *owners {
            [] => out.unattributed.push(backend),
            [i] => {
                if let Measured::Known(mine) = &mut out.per_workload[i] {
                    mine.push(backend);
                }
            }
            _ => out.ambiguous.push((backend, names(owners))),
        }
    }
    out
}

enum NameMatch<'i> {
    None,
    One(usize),
    Several(&'i [usize]),
}

/// The name as PostgreSQL stores it: at most 63 bytes, never splitting a character
/// (it clips multibyte names with `pg_mbcliplen`).
pub fn clip(name: &str) -> &str {
    if name.len() <= APPLICATION_NAME_MAX_BYTES {
        return name;
    }
    let mut end = APPLICATION_NAME_MAX_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn backend(pid: i32, app: &str, addr: Option<&str>) -> Backend {
        Backend {
            pid,
            database: Some("app".into()),
            user: Some("app".into()),
            application_name: app.into(),
            client_addr: addr.map(|a| a.parse().unwrap()),
            backend_start: None,
            state: Some("idle".into()),
            state_change: None,
            xact_start: None,
            ..Backend::default()
        }
    }

    fn pod(name: &str, ip: &str) -> PodKey {
        PodKey {
            name: name.into(),
            ip: Some(ip.parse().unwrap()),
        }
    }

    #[test]
    fn application_name_is_the_pod_name() {
        let pods = [pod("web-1", "10.0.0.1"), pod("web-2", "10.0.0.2")];
        let backends = [
            backend(1, "web-1", None),
            backend(2, "web-2", None),
            backend(3, "psql", None),
        ];
        let a = attribute(Attribution::ApplicationName, &backends, &pods);
        assert_eq!(a.per_pod[0].iter().map(|b| b.pid).collect::<Vec<_>>(), [1]);
        assert_eq!(a.per_pod[1].iter().map(|b| b.pid).collect::<Vec<_>>(), [2]);
        assert_eq!(a.unattributed.iter().map(|b| b.pid).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn a_cut_name_is_attributed_to_the_one_pod_it_fits() {
        let long = format!("{}-7d9f8c6b5-x2x9q", "a".repeat(60));
        let pods = [pod(&long, "10.0.0.1"), pod("short", "10.0.0.2")];
        let backends = [backend(1, clip(&long), None)];
        let a = attribute(Attribution::ApplicationName, &backends, &pods);
        assert_eq!(a.per_pod[0].len(), 1);
        assert!(a.ambiguous.is_empty());
    }

    #[test]
    fn a_cut_name_that_fits_several_pods_is_ambiguous_not_guessed() {
        let stem = "b".repeat(70);
        let pods = [
            pod(&format!("{stem}-1"), "10.0.0.1"),
            pod(&format!("{stem}-2"), "10.0.0.2"),
        ];
        let backends = [backend(1, clip(&pods[0].name), None)];
        let a = attribute(Attribution::ApplicationName, &backends, &pods);
        assert!(a.per_pod.iter().all(Vec::is_empty));
        assert_eq!(a.ambiguous.len(), 1);
        assert_eq!(a.ambiguous[0].1.len(), 2);
    }

    #[test]
    fn clipping_never_splits_a_character() {
        let name = format!("{}é-tail", "c".repeat(62));
        assert_eq!(clip(&name).len(), 62);
        assert_eq!(clip("short"), "short");
    }

    fn backend_of(pid: i32, user: Option<&str>) -> Backend {
        Backend {
            user: user.map(str::to_owned),
            ..backend(pid, "", None)
        }
    }

    fn workload(name: &str, user: &str) -> WorkloadKey {
        WorkloadKey {
            name: name.into(),
            user: user.into(),
        }
    }

    fn pids(m: &Measured<Vec<&Backend>>) -> Vec<i32> {
        m.known().expect("known").iter().map(|b| b.pid).collect()
    }

    #[test]
    fn each_workload_gets_the_backends_of_its_role() {
        let workloads = [workload("web", "web"), workload("worker-odds", "odds_rw")];
        let backends = [
            backend_of(1, Some("web")),
            backend_of(2, Some("odds_rw")),
            backend_of(3, Some("web")),
            backend_of(4, Some("Web")),
        ];
        let a = attribute_by_user(&backends, &workloads);
        assert_eq!(pids(&a.per_workload[0]), [1, 3]);
        assert_eq!(pids(&a.per_workload[1]), [2]);
        assert_eq!(
            a.unattributed.iter().map(|b| b.pid).collect::<Vec<_>>(),
            [4],
            "role names are compared exactly"
        );
        assert!(a.ambiguous.is_empty());
    }

    #[test]
    fn backends_of_no_listed_role_or_a_hidden_role_are_unattributed_not_dropped() {
        let workloads = [workload("web", "web")];
        let backends = [backend_of(1, Some("postgres")), backend_of(2, None)];
        let a = attribute_by_user(&backends, &workloads);
        assert_eq!(pids(&a.per_workload[0]), Vec::<i32>::new());
        assert_eq!(a.unattributed.iter().map(|b| b.pid).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn a_role_shared_by_two_workloads_is_ambiguous_not_guessed() {
        let workloads = [
            workload("Deployment/web", "app"),
            workload("Deployment/worker", "app"),
            workload("Deployment/odds", "odds"),
        ];
        let backends = [backend_of(1, Some("app")), backend_of(2, Some("odds"))];
        let a = attribute_by_user(&backends, &workloads);
        for shared in &a.per_workload[..2] {
            match shared {
                Measured::Unknown(why) => assert_eq!(
                    why,
                    r#"role "app" is shared by Deployment/web, Deployment/worker: User attribution cannot tell them apart"#
                ),
                known => panic!("expected unknown, got {known:?}"),
            }
        }
        assert_eq!(pids(&a.per_workload[2]), [2]);
        assert_eq!(a.ambiguous.len(), 1);
        assert_eq!(a.ambiguous[0].0.pid, 1);
        assert_eq!(a.ambiguous[0].1, ["Deployment/web", "Deployment/worker"]);
        assert!(a.unattributed.is_empty());
    }

    #[test]
    fn a_shared_role_is_unknown_even_without_backends() {
        let workloads = [workload("web", "app"), workload("worker", "app")];
        let a = attribute_by_user(&[], &workloads);
        assert!(a.per_workload.iter().all(|w| w.known().is_none()));
    }

    #[test]
    fn the_per_pod_modes_attribute_nothing_in_user_mode() {
        let pods = [pod("web-1", "10.0.0.1")];
        let backends = [backend(1, "web-1", Some("10.0.0.1"))];
        let a = attribute(Attribution::User, &backends, &pods);
        assert!(a.per_pod[0].is_empty());
        assert_eq!(a.unattributed.len(), 1);
    }

    #[test]
    fn client_address_and_auto() {
        let pods = [pod("web-1", "10.0.0.1"), pod("web-2", "10.0.0.2")];
        let backends = [backend(1, "", Some("10.0.0.2")), backend(2, "web-1", Some("10.9.9.9"))];
        let by_addr = attribute(Attribution::ClientAddress, &backends, &pods);
        assert_eq!(by_addr.per_pod[1].len(), 1);
        assert_eq!(by_addr.unattributed.len(), 1);
        let auto = attribute(Attribution::Auto, &backends, &pods);
        assert_eq!(
            (auto.per_pod[0].len(), auto.per_pod[1].len(), auto.unattributed.len()),
            (1, 1, 0)
        );
    }

    /// The search in order the index replaced: every pod for every backend.
    fn searched<'a>(mode: Attribution, backends: &'a [Backend], pods: &[PodKey]) -> Attributed<'a> {
        let mut out = Attributed {
            per_pod: vec![Vec::new(); pods.len()],
            ..Attributed::default()
        };
        for b in backends {
            let by_name = || -> Vec<usize> {
                let app = &b.application_name;
                if app.is_empty() {
                    return vec![];
                }
                if let Some(i) = pods.iter().position(|p| &p.name == app) {
                    return vec![i];
                }
                if app.len() < APPLICATION_NAME_MAX_BYTES {
                    return vec![];
                }
                (0..pods.len())
                    .filter(|&i| pods[i].name.len() > app.len() && clip(&pods[i].name) == app)
                    .collect()
            };
            let by_addr = || -> Vec<usize> {
                b.client_addr
                    .and_then(|a| pods.iter().position(|p| p.ip == Some(a)))
                    .into_iter()
                    .collect()
            };
            let owners = match mode {
                Attribution::ApplicationName => by_name(),
                Attribution::ClientAddress => by_addr(),
                Attribution::Auto => Some(by_name()).filter(|o| !o.is_empty()).unwrap_or_else(by_addr),
                Attribution::User => vec![],
            };
            match owners[..] {
                [] => out.unattributed.push(b),
                [i] => out.per_pod[i].push(b),
                _ => out
                    .ambiguous
                    .push((b, owners.iter().map(|&i| pods[i].name.clone()).collect())),
            }
        }
        out
    }

    /// Names from a few short ones and a few over PostgreSQL's cut, some sharing
    /// their first 63 bytes and some cut inside a multibyte character.
    fn names() -> impl Strategy<Value = String> {
        let long = "a".repeat(60);
        prop::sample::select(vec![
            "web-1".to_owned(),
            "web-2".to_owned(),
            format!("{long}bcd-1"),
            format!("{long}bcd-2"),
            format!("{long}bce-1"),
            format!("{long}bc"),
            format!("{long}bcd"),
            format!("{long}bé-1"),
            format!("{long}bé"),
            format!("{long}b"),
        ])
    }

    proptest! {
        #[test]
        fn the_index_attributes_as_searching_every_pod_did(
            pods in prop::collection::vec((names(), prop::option::of(0u8..4)), 0..8),
            backends in prop::collection::vec((prop_oneof![names(), Just(String::new())], prop::option::of(0u8..5), any::<bool>()), 0..16),
            mode in prop::sample::select(vec![Attribution::ApplicationName, Attribution::ClientAddress, Attribution::Auto, Attribution::User]),
        ) {
            let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
            let pods: Vec<PodKey> = pods.into_iter().map(|(name, n)| PodKey { name, ip: n.map(ip) }).collect();
            let backends: Vec<Backend> = backends
                .into_iter()
                .enumerate()
                .map(|(pid, (name, n, cut))| Backend {
                    pid: pid as i32,
                    // As PostgreSQL keeps it, or (an app setting it itself) whole.
                    application_name: if cut { clip(&name).to_owned() } else { name },
                    client_addr: n.map(ip),
                    ..Backend::default()
                })
                .collect();
            prop_assert_eq!(attribute(mode, &backends, &pods), searched(mode, &backends, &pods));
        }

        #[test]
        fn roles_indexed_attribute_as_searching_every_workload_did(
            workloads in prop::collection::vec(0u8..4, 0..8),
            users in prop::collection::vec(prop::option::of(0u8..5), 0..16),
        ) {
            let workloads: Vec<WorkloadKey> = workloads
                .iter()
                .enumerate()
                .map(|(i, u)| workload(&format!("w{i}"), &format!("role{u}")))
                .collect();
            let backends: Vec<Backend> = users
                .iter()
                .enumerate()
                .map(|(pid, u)| backend_of(pid as i32, u.map(|u| format!("role{u}")).as_deref()))
                .collect();
            let a = attribute_by_user(&backends, &workloads);
            // Searched: every workload of the backend's role.
            for (b, u) in backends.iter().zip(&users) {
                let owners: Vec<usize> = (0..workloads.len())
                    .filter(|&i| u.is_some_and(|u| workloads[i].user == format!("role{u}")))
                    .collect();
                match owners[..] {
                    [] => prop_assert!(a.unattributed.iter().any(|x| std::ptr::eq(*x, b))),
                    [i] => prop_assert!(a.per_workload[i].known().is_some_and(|m| m.iter().any(|x| std::ptr::eq(*x, b)))),
                    _ => prop_assert!(a.ambiguous.iter().any(|(x, _)| std::ptr::eq(*x, b))),
                }
            }
        }
    }
}
