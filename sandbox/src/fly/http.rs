//! The HTTP surface: fly-go's paths under `/v1/apps/{app}/...`, the gate every
//! request passes (auth, app, counting, injected faults, rate limits) and the
//! translation of `ops` results into JSON or `{"error": ...}` responses.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::ops::{API_OWNER, ApiError, ApiResult, Change, ListFilter, RequestRecord, Shared};

/// fly-go's `flaps.NonceHeader`.
pub const NONCE_HEADER: &str = "fly-machine-lease-nonce";

type S = State<Arc<Shared>>;
type Pairs = Query<Vec<(String, String)>>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (code, axum::Json(json!({"error": self.message}))).into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

fn reply(r: ApiResult<Value>) -> Response {
    match r {
        Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn no_content(r: ApiResult<()>) -> Response {
    match r {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

fn body_json(b: &Bytes) -> ApiResult<Value> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(b).map_err(|e| ApiError::new(400, format!("invalid JSON body: {e}")))
}

/// A machine config as a request carries it. The OpenAPI document declares no field
/// nullable (`init.cmd` is an array, never null), so a null anywhere is refused, as a
/// validating proxy on the document refuses it. (Fly's Go server would read a null as
/// "unset"; the stricter reading is the one a client must meet.)
fn config_without_nulls(body: &Value) -> ApiResult<()> {
    fn find(v: &Value, path: &str) -> Option<String> {
        match v {
            Value::Null => Some(path.to_owned()),
            Value::Object(o) => o.iter().find_map(|(k, v)| find(v, &format!("{path}.{k}"))),
            Value::Array(a) => a.iter().enumerate().find_map(|(i, v)| find(v, &format!("{path}[{i}]"))),
            _ => None,
        }
    }
    match body.as_object() {
        Some(o) => match o.iter().find_map(|(k, v)| find(v, k)) {
            Some(at) => Err(ApiError::new(
                400,
                format!("{at}: null is not allowed (the Machines API's OpenAPI document declares no field nullable)"),
            )),
            None => Ok(()),
        },
        None => Ok(()),
    }
}

fn nonce(h: &HeaderMap) -> Option<&str> {
    h.get(NONCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|n| !n.is_empty())
}

fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn flag(q: &[(String, String)], key: &str) -> bool {
    param(q, key).is_some_and(|v| v.is_empty() || v == "true" || v == "1")
}

pub fn router(shared: Arc<Shared>) -> Router {
    let m = "/v1/apps/{app}/machines/{id}";
    Router::new()
        .route("/v1/apps/{app}/machines", get(list).post(create))
        .route(m, get(get_machine).post(update).delete(destroy))
        .route(&format!("{m}/start"), post(start))
        .route(&format!("{m}/stop"), post(stop))
        .route(&format!("{m}/restart"), post(restart))
        .route(&format!("{m}/signal"), post(signal))
        .route(&format!("{m}/cordon"), post(cordon))
        .route(&format!("{m}/uncordon"), post(cordon))
        .route(&format!("{m}/wait"), get(wait))
        .route(
            &format!("{m}/lease"),
            get(lease_get).post(lease_acquire).delete(lease_release),
        )
        .route(&format!("{m}/metadata"), get(metadata_get))
        .route(
            &format!("{m}/metadata/{{key}}"),
            post(metadata_set).delete(metadata_delete),
        )
        .route("/v1/apps/{app}/secrets", get(secrets_list).post(secrets_update))
        .route(
            "/v1/apps/{app}/secrets/{name}",
            get(secret_get).post(secret_set).delete(secret_delete),
        )
        .route_layer(middleware::from_fn_with_state(shared.clone(), gate))
        .fallback(|| async { ApiError::new(404, "not found") })
        .with_state(shared)
}

/// Every routed request: a valid token (`Bearer` or `FlyV1`), then counted and
/// recorded, then the app must be ours, then injected faults, then the rate limit of
/// its action (method and route) on its machine; after the API has acted, an answer
/// set to be lost is replaced by a 502 (Fly's proxy losing its connection to flyd).
async fn gate(State(s): S, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("FlyV1 "))
        .map(str::trim);
    if token != Some(s.token.as_str()) {
        return ApiError::new(401, "Authenticate: token validation error").into_response();
    }
    *s.counts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry((method.clone(), route.clone()))
        .or_default() += 1;
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 16 << 20).await else {
        return ApiError::new(400, "unreadable body").into_response();
    };
    s.requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(RequestRecord {
            method: method.clone(),
            uri: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
            route: route.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
            nonce: parts.headers.contains_key(NONCE_HEADER),
        });
    let req = Request::from_parts(parts, axum::body::Body::from(body));
    let segments: Vec<&str> = req.uri().path().split('/').collect();
    // ["", "v1", "apps", app, "machines", id, ...]
    if segments.get(3) != Some(&s.app.as_str()) {
        return ApiError::new(404, "app not found").into_response();
    }
    let fault = s.faults.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
    if let Some(code) = fault {
        return ApiError::new(code, format!("injected fault: {code}")).into_response();
    }
    let machine = match segments.get(4) {
        Some(&"machines") => segments.get(5).copied().unwrap_or_default(),
        _ => "",
    };
    let limit = if method == "GET" && route.ends_with("/machines/{id}") {
        s.get_rate
    } else {
        s.rate
    };
    if let Err(wait) = s
        .limiter
        .take((format!("{method} {route}"), machine.to_string()), limit)
    {
        s.throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut e = ApiError::new(429, "rate limit exceeded");
        e.retry_after = Some(wait);
        return e.into_response();
    }
    let response = next.run(req).await;
    if response.status().is_success() && take_lost_answer(&s, &method, &route) {
        return ApiError::new(502, "the answer was lost on its way back").into_response();
    }
    response
}

fn take_lost_answer(s: &Shared, method: &str, route: &str) -> bool {
    let mut lost = s.lost_answers.lock().unwrap_or_else(|e| e.into_inner());
    match lost
        .iter_mut()
        .find(|(m, suffix, n)| m == method && route.ends_with(suffix.as_str()) && *n > 0)
    {
        Some((_, _, n)) => {
            *n -= 1;
            true
        }
        None => false,
    }
}

async fn list(State(s): S, Query(q): Pairs) -> Response {
    axum::Json(s.list(&ListFilter::from_query(&q))).into_response()
}

async fn create(State(s): S, body: Bytes) -> Response {
    match body_json(&body).and_then(|b| config_without_nulls(&b).map(|()| b)) {
        Ok(b) => reply(s.create(&b).await),
        Err(e) => e.into_response(),
    }
}

async fn get_machine(State(s): S, Path((_, id)): Path<(String, String)>) -> Response {
    reply(s.machine_json(&id))
}

async fn update(State(s): S, Path((_, id)): Path<(String, String)>, h: HeaderMap, body: Bytes) -> Response {
    match body_json(&body).and_then(|b| config_without_nulls(&b).map(|()| b)) {
        Ok(b) => reply(s.update(&id, &b, nonce(&h)).await),
        Err(e) => e.into_response(),
    }
}

async fn destroy(State(s): S, Path((_, id)): Path<(String, String)>, Query(q): Pairs, h: HeaderMap) -> Response {
    let force = flag(&q, "force") || flag(&q, "kill");
    reply(s.destroy(&id, force, nonce(&h)).await)
}

async fn start(State(s): S, Path((_, id)): Path<(String, String)>, h: HeaderMap) -> Response {
    reply(s.start(&id, nonce(&h)).await)
}

async fn stop(State(s): S, Path((_, id)): Path<(String, String)>, h: HeaderMap, body: Bytes) -> Response {
    match body_json(&body) {
        Ok(b) => reply(s.stop(&id, &b, nonce(&h)).await),
        Err(e) => e.into_response(),
    }
}

async fn restart(
    State(s): S,
    Path((_, id)): Path<(String, String)>,
    Query(q): Pairs,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    // The document declares no request body for a restart (a validating proxy answers
    // 415 to one); its options are the `timeout` and `signal` query parameters.
    if !body.is_empty() {
        return ApiError::new(415, "restart takes no request body").into_response();
    }
    let signal = param(&q, "signal").map(|v| json!(v));
    let timeout = param(&q, "timeout").map(|v| json!(v));
    reply(
        s.restart(
            &id,
            flag(&q, "force_stop"),
            signal.as_ref(),
            timeout.as_ref(),
            nonce(&h),
        )
        .await,
    )
}

async fn signal(State(s): S, Path((_, id)): Path<(String, String)>, body: Bytes) -> Response {
    reply(body_json(&body).and_then(|b| s.signal(&id, &b)))
}

async fn cordon(State(s): S, Path((_, id)): Path<(String, String)>, h: HeaderMap) -> Response {
    reply(s.cordon(&id, nonce(&h)))
}

async fn wait(State(s): S, Path((_, id)): Path<(String, String)>, Query(q): Pairs) -> Response {
    let states: Vec<String> = q
        .iter()
        .filter(|(k, v)| k == "state" && !v.is_empty())
        .map(|(_, v)| v.clone())
        .collect();
    let version = param(&q, "version")
        .or_else(|| param(&q, "instance_id"))
        .filter(|v| !v.is_empty());
    reply(s.wait(&id, &states, param(&q, "timeout"), version).await)
}

async fn lease_get(State(s): S, Path((_, id)): Path<(String, String)>) -> Response {
    reply(s.lease_get(&id))
}

async fn lease_acquire(
    State(s): S,
    Path((_, id)): Path<(String, String)>,
    Query(q): Pairs,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match body_json(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let ttl = param(&q, "ttl")
        .and_then(|t| t.parse().ok())
        .or_else(|| body["ttl"].as_u64());
    let description = body["description"].as_str().unwrap_or_default();
    let change = s.before_lease.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    let changed = match change {
        Some(Change::Start) => s.start(&id, None).await.map(drop),
        Some(Change::Stop) => s.stop(&id, &json!({}), None).await.map(drop),
        None => Ok(()),
    };
    if let Err(e) = changed {
        return e.into_response();
    }
    match s.lease_acquire(&id, ttl, description, nonce(&h), API_OWNER) {
        Ok((code, v)) => (StatusCode::from_u16(code).unwrap_or(StatusCode::OK), axum::Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn lease_release(State(s): S, Path((_, id)): Path<(String, String)>, h: HeaderMap) -> Response {
    reply(s.lease_release(&id, nonce(&h)))
}

async fn metadata_get(State(s): S, Path((_, id)): Path<(String, String)>) -> Response {
    reply(s.metadata_get(&id))
}

async fn metadata_set(State(s): S, Path((_, id, key)): Path<(String, String, String)>, body: Bytes) -> Response {
    no_content(body_json(&body).and_then(|b| s.metadata_set(&id, &key, &b)))
}

async fn metadata_delete(State(s): S, Path((_, id, key)): Path<(String, String, String)>) -> Response {
    no_content(s.metadata_delete(&id, &key))
}

/// `GET /v1/apps/{app}/secrets`: names and digests; `show_secrets` is ignored,
/// values are never shown.
async fn secrets_list(State(s): S) -> Response {
    axum::Json(s.secrets_list()).into_response()
}

/// `POST /v1/apps/{app}/secrets` with `{"values": {"NAME": "value" | null}}`
/// (fly-go `UpdateAppSecrets`: null deletes).
async fn secrets_update(State(s): S, body: Bytes) -> Response {
    let body = match body_json(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let Some(values) = body["values"].as_object() else {
        return ApiError::new(400, "values: an object of name to value (or null) is required").into_response();
    };
    let values: Vec<(String, Option<String>)> = values
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
        .collect();
    reply(s.secrets_update(&values).map(|version| {
        let mut out = s.secrets_list();
        out["version"] = json!(version);
        out
    }))
}

async fn secret_get(State(s): S, Path((_, name)): Path<(String, String)>) -> Response {
    reply(s.secret_get(&name))
}

/// `POST /v1/apps/{app}/secrets/{name}` with `{"value": ...}` (fly-go `SetAppSecret`).
async fn secret_set(State(s): S, Path((_, name)): Path<(String, String)>, body: Bytes) -> Response {
    let body = match body_json(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let Some(value) = body["value"].as_str() else {
        return ApiError::new(400, "value: a string is required").into_response();
    };
    reply(
        s.secrets_update(&[(name.clone(), Some(value.to_string()))])
            .and_then(|version| {
                let mut out = s.secret_get(&name)?;
                out["version"] = json!(version);
                Ok(out)
            }),
    )
}

async fn secret_delete(State(s): S, Path((_, name)): Path<(String, String)>) -> Response {
    reply(s.secret_delete(&name).map(|version| json!({"version": version})))
}
