//! Field ownership (`metadata.managedFields`, `FieldsV1` format) and server-side
//! apply on top of it.
//!
//! A field set is a set of paths; a path ends at a leaf (a scalar, an atomic
//! list or an empty map) or at a list-map item (`k:{"name":"app"}`, the item's
//! own "." entry in FieldsV1). Lists whose field name has a merge key
//! ([`super::patch::merge_key`]) are list-maps, all others are atomic.
//! See <https://kubernetes.io/docs/reference/using-api/server-side-apply/>.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::patch::merge_key;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathElement {
    Field(String),
    /// Canonical JSON of the item's key fields, e.g. `{"name":"app"}`.
    Key(String),
}

pub type FieldPath = Vec<PathElement>;
pub type FieldSet = BTreeSet<FieldPath>;

/// Which part of an object a write may touch: the main resource (everything but
/// status when the type has a status subresource) or the status subresource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Main { status_subresource: bool },
    Status,
}

impl Scope {
    pub fn subresource(self) -> Option<&'static str> {
        match self {
            Scope::Status => Some("status"),
            Scope::Main { .. } => None,
        }
    }

    /// Whether a top-level key of an object is written through this scope.
    fn includes(self, key: &str) -> bool {
        match self {
            Scope::Status => key == "status",
            Scope::Main { status_subresource } => {
                !(matches!(key, "apiVersion" | "kind") || (status_subresource && key == "status"))
            }
        }
    }
}

/// Metadata fields that belong to the user (and so to field managers).
const OWNED_METADATA: &[&str] = &["labels", "annotations", "finalizers", "ownerReferences"];

pub fn render_path(path: &FieldPath) -> String {
    let mut out = String::new();
    for e in path {
        match e {
            PathElement::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            PathElement::Key(k) => {
                let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                    .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                    .unwrap_or_else(|_| vec![k.clone()]);
                out.push_str(&format!("[{}]", parts.join(",")));
            }
        }
    }
    out
}

fn key_element(field: &str, item: &Value) -> Option<PathElement> {
    let key = merge_key(field)?;
    let kv = item.get(key)?;
    Some(PathElement::Key(json!({ key: kv }).to_string()))
}

fn is_list_map(field: &str, items: &[Value]) -> bool {
    merge_key(field).is_some_and(|k| items.iter().all(|i| i.get(k).is_some()))
}

fn walk(v: &Value, field: &str, path: &mut FieldPath, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(PathElement::Field(k.clone()));
                walk(child, k, path, out);
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() && is_list_map(field, items) => {
            for item in items {
                let Some(ke) = key_element(field, item) else { continue };
                path.push(ke);
                out.insert(path.clone());
                if let Some(m) = item.as_object() {
                    for (k, child) in m {
                        path.push(PathElement::Field(k.clone()));
                        walk(child, k, path, out);
                        path.pop();
                    }
                }
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The fields an object sets within a scope.
pub fn flatten(obj: &Value, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(m) = obj.as_object() else { return out };
    for (k, v) in m {
        if !scope.includes(k) {
            continue;
        }
        if k == "metadata" {
            for mk in OWNED_METADATA {
                if let Some(mv) = v.get(*mk) {
                    let mut path = vec![PathElement::Field("metadata".into()), PathElement::Field((*mk).into())];
                    walk(mv, mk, &mut path, &mut out);
                }
            }
            continue;
        }
        let mut path = vec![PathElement::Field(k.clone())];
        walk(v, k, &mut path, &mut out);
    }
    out
}

fn item_matches(item: &Value, key: &str) -> bool {
    serde_json::from_str::<Map<String, Value>>(key)
        .map(|m| m.iter().all(|(k, v)| item.get(k) == Some(v)))
        .unwrap_or(false)
}

pub fn value_at<'a>(v: &'a Value, path: &[PathElement]) -> Option<&'a Value> {
    let mut cur = v;
    for e in path {
        cur = match e {
            PathElement::Field(f) => cur.get(f)?,
            PathElement::Key(k) => cur.as_array()?.iter().find(|i| item_matches(i, k))?,
        };
    }
    Some(cur)
}

fn value_at_mut<'a>(v: &'a mut Value, path: &[PathElement]) -> Option<&'a mut Value> {
    let mut cur = v;
    for e in path {
        cur = match e {
            PathElement::Field(f) => cur.get_mut(f)?,
            PathElement::Key(k) => cur.as_array_mut()?.iter_mut().find(|i| item_matches(i, k))?,
        };
    }
    Some(cur)
}

fn remove_at(v: &mut Value, path: &[PathElement]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let Some(parent) = value_at_mut(v, parent_path) else {
        return;
    };
    match last {
        PathElement::Field(f) => {
            if let Some(m) = parent.as_object_mut() {
                m.remove(f);
            }
        }
        PathElement::Key(k) => {
            if let Some(a) = parent.as_array_mut() {
                a.retain(|i| !item_matches(i, k));
            }
        }
    }
}

fn insert_path(node: &mut Map<String, Value>, path: &[PathElement], has_children: bool) {
    let Some((first, rest)) = path.split_first() else {
        if has_children {
            node.insert(".".into(), Value::Object(Map::new()));
        }
        return;
    };
    let key = match first {
        PathElement::Field(f) => format!("f:{f}"),
        PathElement::Key(k) => format!("k:{k}"),
    };
    if let Value::Object(child) = node.entry(key).or_insert_with(|| Value::Object(Map::new())) {
        insert_path(child, rest, has_children);
    }
}

fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    let paths: Vec<&FieldPath> = set.iter().collect();
    for (i, path) in paths.iter().enumerate() {
        // Sorted order puts every extension of a path right after it.
        let has_children = paths
            .get(i + 1)
            .is_some_and(|next| next.len() > path.len() && next.starts_with(path));
        insert_path(&mut root, path, has_children);
    }
    Value::Object(root)
}

fn from_fields_v1(node: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
    let Some(m) = node.as_object() else { return };
    for (k, child) in m {
        let elem = if k == "." {
            out.insert(prefix.clone());
            continue;
        } else if let Some(f) = k.strip_prefix("f:") {
            PathElement::Field(f.into())
        } else if let Some(key) = k.strip_prefix("k:") {
            let canonical = serde_json::from_str::<Value>(key)
                .map(|v| v.to_string())
                .unwrap_or_else(|_| key.into());
            PathElement::Key(canonical)
        } else {
            // `v:` (set members) and `i:` (indices) do not occur in the types we serve.
            PathElement::Field(k.clone())
        };
        prefix.push(elem);
        if child.as_object().is_some_and(Map::is_empty) {
            out.insert(prefix.clone());
        } else {
            from_fields_v1(child, prefix, out);
        }
        prefix.pop();
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ManagerEntry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

impl ManagerEntry {
    fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager && self.operation == operation && self.subresource.as_deref() == subresource
    }
}

pub fn read_managed(obj: &Value) -> Vec<ManagerEntry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let mut fields = FieldSet::new();
            from_fields_v1(&e["fieldsV1"], &mut Vec::new(), &mut fields);
            ManagerEntry {
                manager: e["manager"].as_str().unwrap_or_default().into(),
                operation: e["operation"].as_str().unwrap_or("Update").into(),
                api_version: e["apiVersion"].as_str().unwrap_or_default().into(),
                time: e["time"].as_str().unwrap_or_default().into(),
                subresource: e["subresource"].as_str().map(str::to_string),
                fields,
            }
        })
        .collect()
}

pub fn write_managed(obj: &mut Value, entries: &[ManagerEntry]) {
    let rendered: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if let (Some(sub), Some(m)) = (&e.subresource, v.as_object_mut()) {
                m.insert("subresource".into(), json!(sub));
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if rendered.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(rendered));
        }
    }
}

/// Records an Update operation (create, PUT, non-apply PATCH): the manager takes
/// the fields whose values it changed; fields it removed leave every manager.
pub fn record_update(old: Option<&Value>, new: &mut Value, manager: &str, api_version: &str, scope: Scope, now: &str) {
    let mut entries = old.map(read_managed).unwrap_or_default();
    let new_fields = flatten(new, scope);
    let changed: FieldSet = new_fields
        .iter()
        .filter(|p| match old {
            None => true,
            Some(o) => match p.last() {
                Some(PathElement::Key(_)) => value_at(o, p).is_none(),
                _ => value_at(o, p) != value_at(new, p),
            },
        })
        .cloned()
        .collect();
    let removed: FieldSet = old
        .map(|o| flatten(o, scope))
        .unwrap_or_default()
        .difference(&new_fields)
        .cloned()
        .collect();
    let sub = scope.subresource();
    for e in entries.iter_mut() {
        let before = e.fields.len();
        let is_self = e.is(manager, "Update", sub);
        e.fields
            .retain(|p| !removed.contains(p) && (is_self || !changed.contains(p)));
        if e.fields.len() != before {
            e.time = now.to_string();
        }
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| e.is(manager, "Update", sub)) {
            Some(e) => {
                e.fields.extend(changed);
                e.time = now.to_string();
                e.api_version = api_version.to_string();
            }
            None => entries.push(ManagerEntry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: api_version.to_string(),
                time: now.to_string(),
                subresource: sub.map(str::to_string),
                fields: changed,
            }),
        }
    }
    write_managed(new, &entries);
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApplyConflict {
    pub manager: String,
    pub api_version: String,
    pub path: FieldPath,
}

/// Merges an applied configuration into the live object: maps recursively,
/// list-maps by key (live order kept, new items appended), everything else replaced.
fn merge_applied(live: &mut Value, applied: &Value, field: &str) {
    match (live, applied) {
        (Value::Object(lm), Value::Object(am)) => {
            for (k, av) in am {
                match lm.get_mut(k) {
                    Some(lv) if !av.is_null() => merge_applied(lv, av, k),
                    _ => {
                        lm.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(litems), Value::Array(aitems)) if is_list_map(field, aitems) && is_list_map(field, litems) => {
            let Some(key) = merge_key(field) else { return };
            for ai in aitems {
                match litems.iter_mut().find(|li| li.get(key) == ai.get(key)) {
                    Some(li) => merge_applied(li, ai, field),
                    None => litems.push(ai.clone()),
                }
            }
        }
        (live, applied) => *live = applied.clone(),
    }
}

pub struct ApplyRequest<'a> {
    pub manager: &'a str,
    pub force: bool,
    pub api_version: &'a str,
    pub scope: Scope,
    pub now: &'a str,
}

/// Server-side apply of `applied` onto `live` (an empty skeleton when creating).
/// Returns the new object with its managedFields, or the conflicts.
pub fn server_side_apply(live: &Value, applied: &Value, req: &ApplyRequest<'_>) -> Result<Value, Vec<ApplyConflict>> {
    let sub = req.scope.subresource();
    let mut entries = read_managed(live);
    let new_set = flatten(applied, req.scope);
    let own_index = entries.iter().position(|e| e.is(req.manager, "Apply", sub));
    let old_set = own_index.map(|i| entries[i].fields.clone()).unwrap_or_default();

    let mut conflicts = Vec::new();
    let mut conflicting = FieldSet::new();
    for path in &new_set {
        if matches!(path.last(), Some(PathElement::Key(_))) {
            continue;
        }
        let live_value = value_at(live, path);
        if live_value.is_none() || live_value == value_at(applied, path) {
            continue;
        }
        for (i, e) in entries.iter().enumerate() {
            if Some(i) != own_index && e.fields.contains(path) {
                conflicts.push(ApplyConflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    path: path.clone(),
                });
                conflicting.insert(path.clone());
            }
        }
    }
    if !conflicts.is_empty() && !req.force {
        return Err(conflicts);
    }
    // Forced: the other managers lose the fields whose values we override.
    for (i, e) in entries.iter_mut().enumerate() {
        if Some(i) != own_index && e.fields.iter().any(|p| conflicting.contains(p)) {
            e.fields.retain(|p| !conflicting.contains(p));
            e.time = req.now.to_string();
        }
    }

    let mut obj = live.clone();
    // Fields this manager applied before and no longer does are removed unless
    // another manager still owns them (or, for an item, something inside it).
    let others: FieldSet = entries
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != own_index)
        .flat_map(|(_, e)| e.fields.iter().cloned())
        .collect();
    let dropped: Vec<&FieldPath> = old_set.difference(&new_set).collect();
    for path in dropped.iter().rev() {
        let kept_by_others = others.iter().any(|o| o.starts_with(path));
        let still_applied_below = new_set.iter().any(|n| n.starts_with(path));
        if !kept_by_others && !still_applied_below {
            remove_at(&mut obj, path);
        }
    }

    if let (Some(om), Some(am)) = (obj.as_object_mut(), applied.as_object()) {
        for (k, av) in am {
            if !req.scope.includes(k) {
                continue;
            }
            if k == "metadata" {
                let meta = om.entry("metadata").or_insert_with(|| json!({}));
                for mk in OWNED_METADATA {
                    if let (Some(mv), Some(mm)) = (av.get(*mk), meta.as_object_mut()) {
                        match mm.get_mut(*mk) {
                            Some(lv) => merge_applied(lv, mv, mk),
                            None => {
                                mm.insert((*mk).to_string(), mv.clone());
                            }
                        }
                    }
                }
                continue;
            }
            match om.get_mut(k) {
                Some(lv) => merge_applied(lv, av, k),
                None => {
                    om.insert(k.clone(), av.clone());
                }
            }
        }
    }

    match own_index {
        Some(i) => {
            if entries[i].fields != new_set {
                entries[i].fields = new_set;
                entries[i].time = req.now.to_string();
            }
            entries[i].api_version = req.api_version.to_string();
        }
        None => entries.push(ManagerEntry {
            manager: req.manager.to_string(),
            operation: "Apply".into(),
            api_version: req.api_version.to_string(),
            time: req.now.to_string(),
            subresource: sub.map(str::to_string),
            fields: new_set,
        }),
    }
    write_managed(&mut obj, &entries);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(manager: &str, force: bool) -> ApplyRequest<'_> {
        ApplyRequest {
            manager,
            force,
            api_version: "apps/v1",
            scope: Scope::Main {
                status_subresource: true,
            },
            now: "t",
        }
    }

    fn deploy(env: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "env": env}]}}}})
    }

    #[test]
    fn fields_v1_round_trips() {
        let set = flatten(
            &deploy(json!([{"name": "A", "value": "1"}])),
            Scope::Main {
                status_subresource: true,
            },
        );
        let tree = to_fields_v1(&set);
        let mut back = FieldSet::new();
        from_fields_v1(&tree, &mut Vec::new(), &mut back);
        assert_eq!(set, back);
        assert!(tree["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]["."].is_object());
    }

    #[test]
    fn conflict_names_other_manager_and_field() {
        let live = server_side_apply(
            &json!({}),
            &deploy(json!([{"name": "A", "value": "1"}])),
            &req("argo", false),
        )
        .unwrap();
        let err =
            server_side_apply(&live, &deploy(json!([{"name": "A", "value": "2"}])), &req("pw", false)).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].manager, "argo");
        assert_eq!(
            render_path(&err[0].path),
            ".spec.template.spec.containers[name=\"app\"].env[name=\"A\"].value"
        );
    }
}
