//! The object store: every object as JSON keyed by (group, plural, namespace,
//! name), one monotonic resourceVersion clock, and the event history watches
//! replay from. All writes go through here, from HTTP and from the in-process
//! controllers alike, so both see the same semantics:
//! - a write that changes nothing bumps nothing and emits no event;
//! - `generation` moves only when something outside metadata and status changes;
//! - main writes keep status, status writes keep everything else
//!   (<https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions>).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::apply::{self, ApplyRequest, Scope, render_path};
use super::disruption::admit_eviction;
use super::objects::{self, ObjKey, Objects};
use super::patch::{self, PatchType};
use super::resources::{Registry, ResourceInfo};
use super::selector::{FieldSelector, LabelSelector};
use super::status::{ApiError, ApiResult};

const HISTORY_LIMIT: usize = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub rv: u64,
    pub group: String,
    pub plural: String,
    pub kind: EventKind,
    pub object: Arc<Value>,
}

impl WatchEvent {
    pub fn namespace(&self) -> &str {
        self.object["metadata"]["namespace"].as_str().unwrap_or_default()
    }
}

/// What a new watch needs: events to replay, the live feed after them, and the
/// version the watch starts at (for bookmarks before any event arrives).
pub struct WatchStart {
    pub replay: Vec<Arc<WatchEvent>>,
    pub live: broadcast::Receiver<Arc<WatchEvent>>,
    pub start_rv: u64,
}

impl ObjKey {
    fn new(res: &ResourceInfo, ns: &str, name: &str) -> Self {
        ObjKey {
            group: res.group.clone(),
            plural: res.plural.clone(),
            namespace: if res.namespaced { ns.to_string() } else { String::new() },
            name: name.to_string(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub field_manager: String,
    pub force: bool,
    pub dry_run: bool,
}

impl WriteOptions {
    pub fn manager(name: &str) -> Self {
        WriteOptions {
            field_manager: name.to_string(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

struct Inner {
    clock: u64,
    objects: Objects,
    history: VecDeque<Arc<WatchEvent>>,
    /// Watches may resume from any resourceVersion >= this; older ones get 410.
    history_start: u64,
    registry: Registry,
}

/// What one list page asks for.
pub struct PageQuery<'a> {
    pub labels: &'a LabelSelector,
    pub fields: &'a FieldSelector,
    /// The (namespace, name) the previous page ended at.
    pub after: Option<(&'a str, &'a str)>,
    /// How many objects the previous pages held.
    pub served: usize,
    pub limit: Option<usize>,
}

/// One list page: its objects, whether more follow and, when known, how many.
pub struct ListPage {
    pub clock: u64,
    pub items: Vec<Arc<Value>>,
    pub more: bool,
    pub remaining: Option<usize>,
}

pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<WatchEvent>>,
    evictions: Mutex<Vec<Eviction>>,
}

/// One eviction the server carried out: the server's own record, for tests that
/// check a controller's budgets against what really happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    pub at: std::time::SystemTime,
    pub namespace: String,
    pub pod: String,
    /// The pod's workload (`Deployment`/`StatefulSet` and name), through its
    /// ReplicaSet when it has one.
    pub owner: Option<(String, String)>,
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn random_suffix(len: usize) -> String {
    // The alphabet Kubernetes uses for generated names (no vowels, no look-alikes).
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..len)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Whether anything outside metadata and status differs: a change there bumps
/// `generation`. Compared in place, by key (so it holds whatever order the maps
/// keep), as every write does it.
fn spec_differs(a: &Value, b: &Value) -> bool {
    fn spec(o: &Value) -> impl Iterator<Item = (&String, &Value)> {
        o.as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind"))
    }
    spec(a).count() != spec(b).count() || spec(a).any(|(k, v)| b.get(k) != Some(v))
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj["metadata"][field].as_str().filter(|s| !s.is_empty())
}

fn finalizers_empty(obj: &Value) -> bool {
    obj["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty)
}

fn set_meta(obj: &mut Value, field: &str, v: Value) {
    if !obj["metadata"].is_object()
        && let Some(m) = obj.as_object_mut()
    {
        m.insert("metadata".into(), json!({}));
    }
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if v.is_null() {
            m.remove(field);
        } else {
            m.insert(field.into(), v);
        }
    }
}

fn crd_status(crd: &Value) -> Value {
    let storage: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"].as_bool().unwrap_or(false))
        .map(|v| v["name"].clone())
        .collect();
    let cond = |t: &str, reason: &str| json!({"type": t, "status": "True", "reason": reason, "message": "", "lastTransitionTime": crd["metadata"]["creationTimestamp"]});
    json!({
        "acceptedNames": crd["spec"]["names"],
        "conditions": [cond("NamesAccepted", "NoConflicts"), cond("Established", "InitialNamesAccepted")],
        "storedVersions": storage,
    })
}

impl Store {
    pub fn new() -> Arc<Self> {
        let (events, _) = broadcast::channel(8192);
        let store = Arc::new(Store {
            inner: Mutex::new(Inner {
                clock: 1,
                objects: Objects::default(),
                history: VecDeque::new(),
                history_start: 1,
                registry: Registry::new(),
            }),
            events,
            evictions: Mutex::new(Vec::new()),
        });
        if let Some(ns) = store.resource("", "v1", "namespaces") {
            for name in ["default", "kube-system", "kube-public"] {
                let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
                    "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
                let _ = store.create(&ns, "", obj, &WriteOptions::manager("kube-apiserver"));
            }
        }
        store
    }

    /// A namespaced object may be created only in a namespace that exists and is
    /// not being deleted, as the NamespaceLifecycle admission plugin enforces
    /// (<https://kubernetes.io/docs/reference/access-authn-authz/admission-controllers/#namespacelifecycle>).
    fn require_namespace(inner: &Inner, ns: &str) -> ApiResult<()> {
        let key = ObjKey {
            group: String::new(),
            plural: "namespaces".into(),
            namespace: String::new(),
            name: ns.to_string(),
        };
        match inner.objects.get(&key) {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(namespace) if !namespace["metadata"]["deletionTimestamp"].is_null() => Err(ApiError::new(
                403,
                "Forbidden",
                format!("unable to create new content in namespace {ns} because it is being terminated"),
            )),
            Some(_) => Ok(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn registry(&self) -> Registry {
        self.lock().registry.clone()
    }

    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ResourceInfo> {
        self.lock().registry.lookup(group, version, plural)
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().clock
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.events.subscribe()
    }

    fn emit(&self, inner: &mut Inner, res: &ResourceInfo, kind: EventKind, object: Arc<Value>) {
        let ev = Arc::new(WatchEvent {
            rv: inner.clock,
            group: res.group.clone(),
            plural: res.plural.clone(),
            kind,
            object,
        });
        inner.history.push_back(ev.clone());
        while inner.history.len() > HISTORY_LIMIT {
            if let Some(old) = inner.history.pop_front() {
                inner.history_start = old.rv;
            }
        }
        let _ = self.events.send(ev);
    }

    /// Forget the event history, so every watch resuming from a version seen so
    /// far gets 410 Expired and must relist.
    pub fn expire_history(&self) {
        let mut inner = self.lock();
        inner.clock += 1;
        inner.history.clear();
        inner.history_start = inner.clock;
    }

    fn versioned(res: &ResourceInfo, obj: &Value) -> Value {
        let mut o = obj.clone();
        if let Some(m) = o.as_object_mut() {
            m.insert("apiVersion".into(), json!(res.api_version()));
            m.insert("kind".into(), json!(res.kind));
        }
        o
    }

    /// A stored object as served for `res`: the shared copy itself when it already
    /// says `res`'s apiVersion and kind (every write stores it so), else a stamped copy.
    fn shared_versioned(res: &ResourceInfo, obj: &Arc<Value>) -> Arc<Value> {
        if obj["kind"] == res.kind.as_str() && obj["apiVersion"] == res.api_version().as_str() {
            obj.clone()
        } else {
            Arc::new(Self::versioned(res, obj))
        }
    }

    pub fn get(&self, res: &ResourceInfo, ns: &str, name: &str) -> ApiResult<Value> {
        self.get_shared(res, ns, name).map(Arc::unwrap_or_clone)
    }

    /// The stored object itself, shared: a read that only looks costs no copy.
    pub fn get_shared(&self, res: &ResourceInfo, ns: &str, name: &str) -> ApiResult<Arc<Value>> {
        let inner = self.lock();
        inner
            .objects
            .get_shared(&ObjKey::new(res, ns, name))
            .map(|o| Self::shared_versioned(res, o))
            .ok_or_else(|| ApiError::not_found(&res.group, &res.plural, name))
    }

    fn range_scope<'a>(res: &'a ResourceInfo, ns: Option<&'a str>) -> objects::Scope<'a> {
        objects::Scope {
            group: &res.group,
            plural: &res.plural,
            namespace: ns.filter(|_| res.namespaced),
        }
    }

    fn matching<'a>(
        inner: &'a Inner,
        res: &'a ResourceInfo,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Arc<Value>> + 'a {
        inner.objects.range(Self::range_scope(res, ns), None)
    }

    /// Objects of a resource in (namespace, name) order, with the collection's
    /// resourceVersion.
    pub fn list(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> (u64, Vec<Value>) {
        let inner = self.lock();
        let items = Self::matching(&inner, res, ns)
            .filter(|o| labels.matches(o) && fields.matches(o))
            .map(|o| Self::versioned(res, o))
            .collect();
        (inner.clock, items)
    }

    /// One page of a list: the matching objects after `after` (namespace, name), at
    /// most `limit` of them. A page is a range read of the ordered objects, so it
    /// costs the objects it reads (with a selector, also the ones it skips), not the
    /// whole store. `served` is how many the earlier pages held: the remaining count
    /// is the scope's count minus what was served, and is given (as the real server
    /// does) only for a list without selectors.
    pub fn list_page(&self, res: &ResourceInfo, ns: Option<&str>, query: &PageQuery<'_>) -> ListPage {
        let inner = self.lock();
        let mut matching = inner
            .objects
            .range(Self::range_scope(res, ns), query.after)
            .filter(|o| query.labels.matches(o) && query.fields.matches(o));
        let items: Vec<Arc<Value>> = matching
            .by_ref()
            .take(query.limit.unwrap_or(usize::MAX))
            .map(|o| Self::shared_versioned(res, o))
            .collect();
        let more = query.limit.is_some() && matching.next().is_some();
        let remaining = (more && query.labels.is_empty() && query.fields.is_empty()).then(|| {
            inner
                .objects
                .count(Self::range_scope(res, ns))
                .saturating_sub(query.served + items.len())
        });
        ListPage {
            clock: inner.clock,
            items,
            more,
            remaining,
        }
    }

    /// Starts a watch: the events to replay and a receiver for what follows,
    /// taken under one lock so nothing falls between them. `from` None or 0
    /// means "current state as ADDED, then changes".
    pub fn watch_start(&self, res: &ResourceInfo, ns: Option<&str>, from: Option<u64>) -> ApiResult<WatchStart> {
        let inner = self.lock();
        let rx = self.events.subscribe();
        let replay = match from {
            None | Some(0) => Self::matching(&inner, res, ns)
                .map(|o| {
                    Arc::new(WatchEvent {
                        rv: o["metadata"]["resourceVersion"]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0),
                        group: res.group.clone(),
                        plural: res.plural.clone(),
                        kind: EventKind::Added,
                        object: Self::shared_versioned(res, o),
                    })
                })
                .collect(),
            Some(rv) if rv < inner.history_start => {
                return Err(ApiError::expired(format!(
                    "too old resource version: {rv} ({})",
                    inner.history_start
                )));
            }
            Some(rv) => inner
                .history
                .iter()
                .filter(|e| e.rv > rv && e.group == res.group && e.plural == res.plural)
                .cloned()
                .collect(),
        };
        Ok(WatchStart {
            replay,
            live: rx,
            start_rv: from.filter(|rv| *rv > 0).unwrap_or(inner.clock),
        })
    }

    pub fn create(&self, res: &ResourceInfo, ns: &str, obj: Value, opts: &WriteOptions) -> ApiResult<Value> {
        let mut inner = self.lock();
        self.create_locked(&mut inner, res, ns, obj, opts, true)
    }

    fn create_locked(
        &self,
        inner: &mut Inner,
        res: &ResourceInfo,
        ns: &str,
        obj: Value,
        opts: &WriteOptions,
        track_update: bool,
    ) -> ApiResult<Value> {
        let mut obj = Self::versioned(res, &obj);
        super::defaults::apply(res, &mut obj);
        if !obj.is_object() {
            return Err(ApiError::bad_request("object must be a JSON object"));
        }
        let name = match (meta_str(&obj, "name"), meta_str(&obj, "generateName")) {
            (Some(n), _) => n.to_string(),
            (None, Some(prefix)) => format!("{prefix}{}", random_suffix(5)),
            (None, None) => {
                return Err(ApiError::invalid(
                    &res.group,
                    &res.kind,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        };
        if res.namespaced {
            if let Some(body_ns) = meta_str(&obj, "namespace")
                && body_ns != ns
            {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({ns})"
                )));
            }
            set_meta(&mut obj, "namespace", json!(ns));
            Self::require_namespace(inner, ns)?;
        } else {
            set_meta(&mut obj, "namespace", Value::Null);
        }
        let key = ObjKey::new(res, ns, &name);
        if inner.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&res.group, &res.plural, &name));
        }
        let now = now_rfc3339();
        set_meta(&mut obj, "name", json!(name));
        set_meta(&mut obj, "uid", json!(uuid::Uuid::new_v4().to_string()));
        set_meta(&mut obj, "creationTimestamp", json!(now));
        // Only types with a spec/status split carry a generation (ConfigMaps, Secrets, ... don't).
        if res.status_subresource || res.custom {
            set_meta(&mut obj, "generation", json!(1));
        } else {
            set_meta(&mut obj, "generation", Value::Null);
        }
        set_meta(&mut obj, "deletionTimestamp", Value::Null);
        if res.custom
            && res.status_subresource
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        if track_update {
            let manager = if opts.field_manager.is_empty() {
                "unknown"
            } else {
                opts.field_manager.as_str()
            };
            apply::record_update(
                None,
                &mut obj,
                manager,
                &res.api_version(),
                Scope::Main {
                    status_subresource: res.status_subresource,
                },
                &now,
            );
        }
        if res.group == "apiextensions.k8s.io"
            && let Some(m) = obj.as_object_mut()
        {
            let status = crd_status(&Value::Object(m.clone()));
            m.insert("status".into(), status);
        }
        if opts.dry_run {
            return Ok(obj);
        }
        inner.clock += 1;
        set_meta(&mut obj, "resourceVersion", json!(inner.clock.to_string()));
        if res.group == "apiextensions.k8s.io" {
            inner.registry.set_crd(&name, Some(&obj));
        }
        let stored = inner.objects.insert(key, obj);
        self.emit(inner, res, EventKind::Added, stored.clone());
        Ok(Arc::unwrap_or_clone(stored))
    }

    /// Stores `new` as the next state of an existing object, applying the rules
    /// in the module doc. `track` says whose Update this is for managedFields
    /// (None: managedFields were computed by server-side apply).
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        inner: &mut Inner,
        res: &ResourceInfo,
        old: &Value,
        new: Value,
        scope: Scope,
        track: Option<&str>,
        dry_run: bool,
    ) -> ApiResult<Value> {
        let name = meta_str(old, "name").unwrap_or_default().to_string();
        let ns = meta_str(old, "namespace").unwrap_or_default().to_string();
        if let Some(rv) = meta_str(&new, "resourceVersion")
            && Some(rv) != meta_str(old, "resourceVersion")
        {
            return Err(ApiError::conflict(
                &res.group,
                &res.plural,
                &name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        if let Some(uid) = meta_str(&new, "uid")
            && Some(uid) != meta_str(old, "uid")
        {
            return Err(ApiError::conflict(
                &res.group,
                &res.plural,
                &name,
                "Precondition failed: UID in precondition does not match",
            ));
        }
        let mut next = match scope {
            Scope::Status => {
                let mut n = old.clone();
                if let Some(m) = n.as_object_mut() {
                    match new.get("status") {
                        Some(s) if !s.is_null() => m.insert("status".into(), s.clone()),
                        _ => m.remove("status"),
                    };
                }
                if track.is_none() {
                    set_meta(&mut n, "managedFields", new["metadata"]["managedFields"].clone());
                }
                n
            }
            Scope::Main { status_subresource } => {
                let mut n = Self::versioned(res, &new);
                super::defaults::apply(res, &mut n);
                if let Some(m) = n.as_object_mut() {
                    if status_subresource {
                        match old.get("status") {
                            Some(s) => m.insert("status".into(), s.clone()),
                            None => m.remove("status"),
                        };
                    }
                }
                for field in [
                    "name",
                    "namespace",
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                ] {
                    set_meta(&mut n, field, old["metadata"][field].clone());
                }
                if track.is_some() {
                    set_meta(&mut n, "managedFields", old["metadata"]["managedFields"].clone());
                }
                n
            }
        };
        set_meta(&mut next, "resourceVersion", old["metadata"]["resourceVersion"].clone());
        let now = now_rfc3339();
        if let Some(manager) = track {
            apply::record_update(Some(old), &mut next, manager, &res.api_version(), scope, &now);
        }
        if res.group == "apiextensions.k8s.io"
            && let Some(m) = next.as_object_mut()
        {
            let status = crd_status(&Value::Object(m.clone()));
            m.insert("status".into(), status);
        }
        // `next` carries `old`'s resourceVersion (set above), so equal means the
        // write changes nothing.
        if next == *old {
            return Ok(old.clone());
        }
        if spec_differs(&next, old) && !old["metadata"]["generation"].is_null() {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            set_meta(&mut next, "generation", json!(generation));
        }
        if dry_run {
            return Ok(next);
        }
        inner.clock += 1;
        set_meta(&mut next, "resourceVersion", json!(inner.clock.to_string()));
        let key = ObjKey::new(res, &ns, &name);
        if meta_str(&next, "deletionTimestamp").is_some() && finalizers_empty(&next) {
            // The last finalizer is gone: the object goes away now.
            self.remove_locked(inner, res, key, next.clone());
            return Ok(next);
        }
        if res.group == "apiextensions.k8s.io" {
            inner.registry.set_crd(&name, Some(&next));
        }
        let stored = inner.objects.insert(key, next);
        self.emit(inner, res, EventKind::Modified, stored.clone());
        Ok(Arc::unwrap_or_clone(stored))
    }

    fn existing(inner: &Inner, res: &ResourceInfo, ns: &str, name: &str) -> ApiResult<Value> {
        inner
            .objects
            .get(&ObjKey::new(res, ns, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&res.group, &res.plural, name))
    }

    fn scope(res: &ResourceInfo, status: bool) -> Scope {
        if status {
            Scope::Status
        } else {
            Scope::Main {
                status_subresource: res.status_subresource,
            }
        }
    }

    /// PUT: replace the object (or its status).
    pub fn update(
        &self,
        res: &ResourceInfo,
        ns: &str,
        name: &str,
        obj: Value,
        status: bool,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        if meta_str(&obj, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let mut inner = self.lock();
        let old = Self::existing(&inner, res, ns, name)?;
        let manager = if opts.field_manager.is_empty() {
            "unknown"
        } else {
            opts.field_manager.as_str()
        };
        self.commit(
            &mut inner,
            res,
            &old,
            obj,
            Self::scope(res, status),
            Some(manager),
            opts.dry_run,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        res: &ResourceInfo,
        ns: &str,
        name: &str,
        ptype: PatchType,
        body: &Value,
        status: bool,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let mut inner = self.lock();
        let scope = Self::scope(res, status);
        if ptype == PatchType::Apply {
            return self.apply_locked(&mut inner, res, ns, name, body, scope, opts);
        }
        let old = Self::existing(&inner, res, ns, name)?;
        let mut doc = Self::versioned(res, &old);
        match ptype {
            PatchType::Merge => patch::apply_merge_patch(&mut doc, body),
            PatchType::Json => patch::apply_json_patch(&mut doc, body)?,
            PatchType::Strategic if res.custom => {
                return Err(ApiError::unsupported_media_type(
                    "application/strategic-merge-patch+json",
                ));
            }
            PatchType::Strategic => patch::apply_strategic_merge_patch(&mut doc, body)?,
            PatchType::Apply => {}
        }
        let manager = if opts.field_manager.is_empty() {
            "unknown"
        } else {
            opts.field_manager.as_str()
        };
        self.commit(&mut inner, res, &old, doc, scope, Some(manager), opts.dry_run)
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_locked(
        &self,
        inner: &mut Inner,
        res: &ResourceInfo,
        ns: &str,
        name: &str,
        body: &Value,
        scope: Scope,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        if opts.field_manager.is_empty() {
            return Err(ApiError::bad_request(
                "PATCH, application/apply-patch+yaml requires fieldManager to be set",
            ));
        }
        if meta_str(body, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        // Shared, not copied: apply reads the live object and builds a new one.
        let existing = inner.objects.get_shared(&ObjKey::new(res, ns, name)).cloned();
        if existing.is_none() && res.namespaced {
            Self::require_namespace(inner, ns)?;
        }
        let empty = json!({"metadata": {}});
        let live = existing.as_deref().unwrap_or(&empty);
        let now = now_rfc3339();
        let api_version = res.api_version();
        let req = ApplyRequest {
            manager: &opts.field_manager,
            force: opts.force,
            api_version: &api_version,
            scope,
            now: &now,
        };
        let merged = apply::server_side_apply(live, body, &req).map_err(|conflicts| {
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|c| {
                    json!({"reason": "FieldManagerConflict",
                        "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version),
                        "field": render_path(&c.path)})
                })
                .collect();
            let lines: Vec<String> = conflicts
                .iter()
                .map(|c| {
                    format!(
                        "conflict with \"{}\" using {}: {}",
                        c.manager,
                        c.api_version,
                        render_path(&c.path)
                    )
                })
                .collect();
            let n = conflicts.len();
            let msg = if n == 1 {
                format!("Apply failed with 1 conflict: {}", lines.join(""))
            } else {
                format!("Apply failed with {n} conflicts: {}", lines.join("\n"))
            };
            ApiError::new(409, "Conflict", msg)
                .with_details(json!({"name": name, "group": res.group, "kind": res.plural, "causes": causes}))
        })?;
        match existing {
            None => {
                if scope == Scope::Status {
                    return Err(ApiError::not_found(&res.group, &res.plural, name));
                }
                let mut obj = merged;
                set_meta(&mut obj, "name", json!(name));
                self.create_locked(inner, res, ns, obj, opts, false)
            }
            Some(old) => {
                let mut next = merged;
                // Apply bodies rarely carry a resourceVersion; when they do it is a precondition.
                set_meta(
                    &mut next,
                    "resourceVersion",
                    body["metadata"]["resourceVersion"].clone(),
                );
                if meta_str(&next, "resourceVersion").is_none() {
                    set_meta(&mut next, "resourceVersion", old["metadata"]["resourceVersion"].clone());
                }
                self.commit(inner, res, &old, next, scope, None, opts.dry_run)
            }
        }
    }

    fn remove_locked(&self, inner: &mut Inner, res: &ResourceInfo, key: ObjKey, mut obj: Value) {
        inner.objects.remove(&key);
        inner.clock += 1;
        set_meta(&mut obj, "resourceVersion", json!(inner.clock.to_string()));
        self.emit(inner, res, EventKind::Deleted, Arc::new(obj));
        if res.group == "apiextensions.k8s.io" {
            // Deleting a CRD deletes its custom resources.
            let crd_name = key.name.clone();
            let doomed: Vec<ObjKey> = inner
                .objects
                .keys()
                .filter(|k| format!("{}.{}", k.plural, k.group) == crd_name)
                .cloned()
                .collect();
            let served: Vec<ResourceInfo> = inner
                .registry
                .all()
                .iter()
                .filter(|r| r.custom && format!("{}.{}", r.plural, r.group) == crd_name)
                .cloned()
                .collect();
            for k in doomed {
                if let (Some(o), Some(r)) = (inner.objects.get(&k).cloned(), served.first()) {
                    self.remove_locked(inner, &r.clone(), k, o);
                }
            }
            inner.registry.set_crd(&crd_name, None);
        }
        if res.group.is_empty() && res.plural == "namespaces" {
            let doomed: Vec<ObjKey> = inner
                .objects
                .keys()
                .filter(|k| k.namespace == key.name)
                .cloned()
                .collect();
            for k in doomed {
                let r = inner
                    .registry
                    .all()
                    .iter()
                    .find(|r| r.group == k.group && r.plural == k.plural)
                    .cloned();
                if let (Some(o), Some(r)) = (inner.objects.get(&k).cloned(), r) {
                    self.remove_locked(inner, &r, k, o);
                }
            }
        }
    }

    /// DELETE: objects with finalizers get a deletionTimestamp and stay until the
    /// last finalizer is removed; the others go at once.
    pub fn delete(&self, res: &ResourceInfo, ns: &str, name: &str, opts: &DeleteOptions) -> ApiResult<Value> {
        let mut inner = self.lock();
        let old = Self::existing(&inner, res, ns, name)?;
        if opts
            .precondition_uid
            .as_deref()
            .is_some_and(|u| Some(u) != meta_str(&old, "uid"))
            || opts
                .precondition_rv
                .as_deref()
                .is_some_and(|r| Some(r) != meta_str(&old, "resourceVersion"))
        {
            return Err(ApiError::conflict(&res.group, &res.plural, name, "Precondition failed"));
        }
        if opts.dry_run {
            return Ok(old);
        }
        let key = ObjKey::new(res, ns, name);
        if finalizers_empty(&old) {
            let mut gone = old.clone();
            self.remove_locked(&mut inner, res, key, old);
            set_meta(&mut gone, "resourceVersion", json!(inner.clock.to_string()));
            return Ok(Self::versioned(res, &gone));
        }
        if meta_str(&old, "deletionTimestamp").is_some() {
            return Ok(old);
        }
        let mut next = old.clone();
        set_meta(&mut next, "deletionTimestamp", json!(now_rfc3339()));
        set_meta(&mut next, "deletionGracePeriodSeconds", json!(0));
        inner.clock += 1;
        set_meta(&mut next, "resourceVersion", json!(inner.clock.to_string()));
        let stored = inner.objects.insert(key, next);
        self.emit(&mut inner, res, EventKind::Modified, stored.clone());
        Ok(Arc::unwrap_or_clone(stored))
    }

    /// Every eviction carried out so far, oldest first.
    pub fn evictions(&self) -> Vec<Eviction> {
        self.evictions.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The controlling owner of `obj`, followed through a ReplicaSet to its Deployment.
    fn workload_of(inner: &Inner, registry: &Registry, ns: &str, obj: &Value) -> Option<(String, String)> {
        let controller = |o: &Value| -> Option<(String, String)> {
            let refs = o["metadata"]["ownerReferences"].as_array()?;
            let r = refs.iter().find(|r| r["controller"].as_bool() == Some(true))?;
            Some((r["kind"].as_str()?.to_string(), r["name"].as_str()?.to_string()))
        };
        let (kind, name) = controller(obj)?;
        if kind != "ReplicaSet" {
            return Some((kind, name));
        }
        let rs = registry
            .lookup("apps", "v1", "replicasets")
            .and_then(|res| Self::existing(inner, &res, ns, &name).ok());
        Some(rs.as_ref().and_then(controller).unwrap_or((kind, name)))
    }

    /// The Eviction subresource: refuse (429) when a PodDisruptionBudget selecting
    /// the pod allows no disruption (see [`admit_eviction`]), else delete the pod.
    pub fn evict(&self, ns: &str, name: &str, dry_run: bool) -> ApiResult<()> {
        let registry = self.registry();
        let (Some(pods), Some(pdbs)) = (
            registry.lookup("", "v1", "pods"),
            registry.lookup("policy", "v1", "poddisruptionbudgets"),
        ) else {
            return Err(ApiError::internal("pods or poddisruptionbudgets not served"));
        };
        let owner;
        {
            let mut inner = self.lock();
            let pod = Self::existing(&inner, &pods, ns, name)?;
            owner = Self::workload_of(&inner, &registry, ns, &pod);
            let all_pods: Vec<Arc<Value>> = Self::matching(&inner, &pods, Some(ns)).cloned().collect();
            let pod_refs: Vec<&Value> = all_pods.iter().map(AsRef::as_ref).collect();
            let budgets: Vec<Value> = Self::matching(&inner, &pdbs, Some(ns))
                .map(|b| Value::clone(b))
                .collect();
            let spent = admit_eviction(&pod, &pod_refs, &budgets)?;
            if !dry_run {
                // Spend the disruption now, as the real server does, so two
                // evictions racing the disruption controller cannot both pass.
                for (pdb, next) in spent {
                    self.commit(
                        &mut inner,
                        &pdbs,
                        pdb,
                        next,
                        Scope::Status,
                        Some("kube-apiserver"),
                        false,
                    )?;
                }
            }
        }
        if dry_run {
            return Ok(());
        }
        self.delete(&pods, ns, name, &DeleteOptions::default())?;
        self.evictions.lock().unwrap_or_else(|e| e.into_inner()).push(Eviction {
            at: std::time::SystemTime::now(),
            namespace: ns.to_string(),
            pod: name.to_string(),
            owner,
        });
        Ok(())
    }

    /// Read-modify-write for the in-process controllers; a no-op closure writes nothing.
    pub fn modify(
        &self,
        res: &ResourceInfo,
        ns: &str,
        name: &str,
        status: bool,
        manager: &str,
        f: impl FnOnce(&mut Value),
    ) -> ApiResult<Value> {
        let mut inner = self.lock();
        let old = Self::existing(&inner, res, ns, name)?;
        let mut next = old.clone();
        f(&mut next);
        self.commit(
            &mut inner,
            res,
            &old,
            next,
            Self::scope(res, status),
            Some(manager),
            false,
        )
    }
}
