//! The HTTP surface: turns Kubernetes REST paths and query parameters into store
//! calls, and store results into JSON responses or `Status` errors.
//! See <https://kubernetes.io/docs/reference/using-api/api-concepts/>.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Serialize;
use serde_json::{Value, json};

use super::discovery;
use super::faults::Faults;
use super::patch::PatchType;
use super::resources::ResourceInfo;
use super::selector::{FieldSelector, LabelSelector};
use super::status::{ApiError, ApiResult};
use super::store::{DeleteOptions, PageQuery, Store, WriteOptions};
use super::watch::{self, WatchRequest};

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub faults: Arc<Faults>,
    pub address: String,
    pub bookmark_interval: Duration,
}

struct Target {
    res: ResourceInfo,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn ok_json(code: StatusCode, v: Value) -> Response {
    (code, axum::Json(v)).into_response()
}

fn parse_query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| url_decode_pairs(q).into_iter().collect())
        .unwrap_or_default()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) if hex.len() == 2 => {
                        out.push(b);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn url_decode_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key)
        .is_some_and(|v| v == "true" || v == "1" || (key == "dryRun" && v == "All"))
}

fn resolve(store: &Store, group: &str, version: &str, rest: &[&str]) -> ApiResult<Target> {
    let registry = store.registry();
    let not_found = || ApiError::new(404, "NotFound", "the server could not find the requested resource");
    if rest.len() >= 3 && rest[0] == "namespaces" {
        if let Some(res) = registry.lookup(group, version, rest[2]).filter(|r| r.namespaced) {
            if rest.len() > 5 {
                return Err(not_found());
            }
            return Ok(Target {
                res,
                namespace: Some(rest[1].to_string()),
                name: rest.get(3).map(|s| s.to_string()),
                subresource: rest.get(4).map(|s| s.to_string()),
            });
        }
    }
    let plural = rest.first().ok_or_else(not_found)?;
    let res = registry.lookup(group, version, plural).ok_or_else(not_found)?;
    if rest.len() > 3 {
        return Err(not_found());
    }
    Ok(Target {
        res,
        namespace: None,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

fn verb_of(method: &Method, t: &Target, q: &HashMap<String, String>) -> &'static str {
    match (method.as_str(), &t.name) {
        ("GET", None) if flag(q, "watch") => "watch",
        ("GET", None) => "list",
        ("GET", Some(_)) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", None) => "deletecollection",
        ("DELETE", Some(_)) => "delete",
        _ => "unknown",
    }
}

fn parse_body(body: &Bytes, content_type: &str) -> ApiResult<Value> {
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        // JSON (and YAML) only; client-go falls back to JSON on 415.
        return Err(ApiError::unsupported_media_type(content_type));
    }
    if content_type.starts_with("application/apply-patch+yaml") || content_type.contains("yaml") {
        // A JSON document is YAML too, and what client-go and kube-rs send for an
        // apply: the JSON parser reads it in a fraction of the YAML parser's time.
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            return Ok(v);
        }
        let text = std::str::from_utf8(body).map_err(|e| ApiError::bad_request(format!("body is not UTF-8: {e}")))?;
        return serde_saphyr::from_str::<Value>(text).map_err(|e| ApiError::bad_request(format!("invalid YAML: {e}")));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Continue tokens: the collection version and the last (namespace, name) served.
/// A continue token: the list's resourceVersion, the (namespace, name) its last page
/// ended at and how many objects the pages so far held.
struct Continue {
    rv: u64,
    namespace: String,
    name: String,
    served: usize,
}

fn encode_continue(c: &Continue) -> String {
    let Continue {
        rv,
        namespace,
        name,
        served,
    } = c;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{rv}\u{0}{served}\u{0}{namespace}\u{0}{name}"))
}

fn decode_continue(token: &str) -> ApiResult<Continue> {
    let bad = || ApiError::bad_request("invalid continue token");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let mut parts = text.splitn(4, '\u{0}');
    Ok(Continue {
        rv: parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?,
        served: parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?,
        namespace: parts.next().ok_or_else(bad)?.to_string(),
        name: parts.next().ok_or_else(bad)?.to_string(),
    })
}

fn list(state: &AppState, t: &Target, q: &HashMap<String, String>) -> ApiResult<Response> {
    let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))?;
    let after = match q.get("continue").filter(|s| !s.is_empty()) {
        Some(token) => Some(decode_continue(token)?),
        None => None,
    };
    let limit = q.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
    let served = after.as_ref().map_or(0, |c| c.served);
    let page = state.store.list_page(
        &t.res,
        t.namespace.as_deref(),
        &PageQuery {
            labels: &labels,
            fields: &fields,
            after: after.as_ref().map(|c| (c.namespace.as_str(), c.name.as_str())),
            served,
            limit,
        },
    );
    let rv = after.as_ref().map(|c| c.rv).unwrap_or(page.clock);
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if page.more
        && let Some(last) = page.items.last()
    {
        metadata["continue"] = json!(encode_continue(&Continue {
            rv,
            namespace: last["metadata"]["namespace"].as_str().unwrap_or_default().to_owned(),
            name: last["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
            served: served + page.items.len(),
        }));
        if let Some(remaining) = page.remaining {
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    let list = List {
        kind: format!("{}List", t.res.kind),
        api_version: t.res.api_version(),
        metadata,
        items: page.items.iter().map(AsRef::as_ref).collect(),
    };
    Ok((StatusCode::OK, axum::Json(list)).into_response())
}

/// A list response, serialized from the page's objects in place (`json!` would
/// deep-copy every item into a new value first).
#[derive(Serialize)]
struct List<'a> {
    kind: String,
    #[serde(rename = "apiVersion")]
    api_version: String,
    metadata: Value,
    items: Vec<&'a Value>,
}

fn write_options(q: &HashMap<String, String>, headers: &HeaderMap) -> WriteOptions {
    let field_manager = q.get("fieldManager").cloned().unwrap_or_else(|| {
        // Like the real server: default the manager from the User-Agent's product.
        headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_string()
    });
    WriteOptions {
        field_manager,
        force: flag(q, "force"),
        dry_run: flag(q, "dryRun"),
    }
}

async fn serve_resource(
    state: &AppState,
    method: &Method,
    t: Target,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let ns = t.namespace.clone().unwrap_or_default();
    if t.res.namespaced && t.name.is_some() && t.namespace.is_none() {
        return Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    let status = match t.subresource.as_deref() {
        None => false,
        Some("status") if t.res.status_subresource => true,
        Some("eviction") if t.res.group.is_empty() && t.res.plural == "pods" && method == Method::POST => {
            let name = t.name.clone().unwrap_or_default();
            let eviction = parse_body(body, "application/json").unwrap_or(Value::Null);
            let dry_run = eviction["deleteOptions"]["dryRun"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
                || flag(q, "dryRun");
            state.store.evict(&ns, &name, dry_run)?;
            return Ok(ok_json(
                StatusCode::CREATED,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ));
        }
        Some(other) => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({other})"),
            ));
        }
    };
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let opts = write_options(q, headers);
    match (method.as_str(), t.name.as_deref()) {
        ("GET", None) if flag(q, "watch") => {
            let from = q.get("resourceVersion").filter(|s| !s.is_empty()).map(|s| {
                s.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))
            });
            let timeout = q
                .get("timeoutSeconds")
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(1800);
            let req = WatchRequest {
                res: t.res.clone(),
                namespace: t.namespace.clone(),
                from: from.transpose()?,
                labels: LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?,
                fields: FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))?,
                timeout: Duration::from_secs(timeout),
                bookmarks: flag(q, "allowWatchBookmarks"),
                bookmark_interval: state.bookmark_interval,
            };
            Ok(watch::serve(state.store.clone(), state.faults.clone(), req))
        }
        ("GET", None) => list(state, &t, q),
        ("GET", Some(name)) => {
            let obj = state.store.get_shared(&t.res, &ns, name)?;
            Ok((StatusCode::OK, axum::Json(&*obj)).into_response())
        }
        ("POST", None) => {
            let obj = parse_body(body, content_type)?;
            Ok(ok_json(
                StatusCode::CREATED,
                state.store.create(&t.res, &ns, obj, &opts)?,
            ))
        }
        ("PUT", Some(name)) => {
            let obj = parse_body(body, content_type)?;
            Ok(ok_json(
                StatusCode::OK,
                state.store.update(&t.res, &ns, name, obj, status, &opts)?,
            ))
        }
        ("PATCH", Some(name)) => {
            let ptype = PatchType::from_content_type(content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
            let patch = parse_body(body, content_type)?;
            let existed = state.store.get_shared(&t.res, &ns, name).is_ok();
            let obj = state.store.patch(&t.res, &ns, name, ptype, &patch, status, &opts)?;
            let code = if existed { StatusCode::OK } else { StatusCode::CREATED };
            Ok(ok_json(code, obj))
        }
        ("DELETE", Some(name)) => {
            let del = if body.is_empty() {
                Value::Null
            } else {
                parse_body(body, "application/json").unwrap_or(Value::Null)
            };
            let opts = DeleteOptions {
                dry_run: flag(q, "dryRun") || del["dryRun"].as_array().is_some_and(|a| !a.is_empty()),
                precondition_uid: del["preconditions"]["uid"].as_str().map(str::to_string),
                precondition_rv: del["preconditions"]["resourceVersion"].as_str().map(str::to_string),
            };
            Ok(ok_json(StatusCode::OK, state.store.delete(&t.res, &ns, name, &opts)?))
        }
        ("DELETE", None) => {
            let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?;
            let fields = FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))?;
            let (_, items) = state.store.list(&t.res, t.namespace.as_deref(), &labels, &fields);
            let mut deleted = Vec::new();
            for item in items {
                let item_ns = item["metadata"]["namespace"].as_str().unwrap_or_default();
                let item_name = item["metadata"]["name"].as_str().unwrap_or_default();
                deleted.push(
                    state
                        .store
                        .delete(&t.res, item_ns, item_name, &DeleteOptions::default())?,
                );
            }
            Ok(ok_json(
                StatusCode::OK,
                json!({"kind": format!("{}List", t.res.kind), "apiVersion": t.res.api_version(),
                    "metadata": {"resourceVersion": state.store.current_rv().to_string()}, "items": deleted}),
            ))
        }
        _ => Err(ApiError::method_not_allowed(format!("{method} is not supported here"))),
    }
}

async fn serve_api(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let path = uri.path().trim_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let registry = state.store.registry();
    let not_found = || ApiError::new(404, "NotFound", "the server could not find the requested resource");
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["version"] => return Ok(ok_json(StatusCode::OK, discovery::version())),
        ["healthz"] | ["readyz"] | ["livez"] => return Ok((StatusCode::OK, "ok").into_response()),
        ["openapi", "v3"] => return Ok(ok_json(StatusCode::OK, discovery::openapi_v3_root(&registry))),
        ["openapi", "v3", "api", v] => {
            return discovery::openapi_v3_group_version(&registry, "", v)
                .map(|d| ok_json(StatusCode::OK, d))
                .ok_or_else(not_found);
        }
        ["openapi", "v3", "apis", g, v] => {
            return discovery::openapi_v3_group_version(&registry, g, v)
                .map(|d| ok_json(StatusCode::OK, d))
                .ok_or_else(not_found);
        }
        ["api"] => return Ok(ok_json(StatusCode::OK, discovery::core_versions(&state.address))),
        ["apis"] => return Ok(ok_json(StatusCode::OK, discovery::group_list(&registry))),
        ["api", v] => {
            return discovery::resource_list(&registry, "", v)
                .map(|d| ok_json(StatusCode::OK, d))
                .ok_or_else(not_found);
        }
        ["apis", g] => {
            return discovery::group(&registry, g)
                .map(|d| ok_json(StatusCode::OK, d))
                .ok_or_else(not_found);
        }
        ["apis", g, v] => {
            return discovery::resource_list(&registry, g, v)
                .map(|d| ok_json(StatusCode::OK, d))
                .ok_or_else(not_found);
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found()),
    };
    let target = resolve(&state.store, group, version, rest)?;
    let q = parse_query(uri);
    let verb = verb_of(method, &target, &q);
    let resource = match &target.subresource {
        Some(sub) => format!("{}/{sub}", target.res.plural),
        None => target.res.plural.clone(),
    };
    state.faults.count(verb, &resource);
    let delay = state.faults.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = state.faults.take_fault(verb, &resource) {
        let reason = match code {
            409 => "Conflict",
            429 => "TooManyRequests",
            404 => "NotFound",
            410 => "Expired",
            503 => "ServiceUnavailable",
            _ => "InternalError",
        };
        return Err(ApiError::new(
            code,
            reason,
            format!("injected fault for {verb} {resource}"),
        ));
    }
    serve_resource(state, method, target, &q, headers, body).await
}

pub async fn handle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match serve_api(&state, &method, &uri, &headers, &body).await {
        Ok(resp) => resp,
        Err(err) => {
            tracing::debug!(%method, %uri, code = err.code, reason = err.reason, "request failed");
            err.into_response()
        }
    }
}
