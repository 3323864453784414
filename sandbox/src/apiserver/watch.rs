//! WATCH responses: newline-delimited JSON events, replayed from history and
//! then live, with BOOKMARKs when asked, an in-stream 410 `Expired` ERROR when
//! the requested version has left the history, and an end at `timeoutSeconds`.
//! See <https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes>.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::faults::Faults;
use super::resources::ResourceInfo;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Store, WatchEvent};

pub struct WatchRequest {
    pub res: ResourceInfo,
    pub namespace: Option<String>,
    pub from: Option<u64>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub timeout: Duration,
    pub bookmarks: bool,
    pub bookmark_interval: Duration,
}

impl WatchRequest {
    fn selects(&self, ev: &WatchEvent) -> bool {
        ev.group == self.res.group
            && ev.plural == self.res.plural
            && self.namespace.as_deref().is_none_or(|ns| ev.namespace() == ns)
            && self.labels.matches(&ev.object)
            && self.fields.matches(&ev.object)
    }
}

fn line(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

/// One event as a line, serialized from the stored object in place: `json!` would
/// deep-copy the object into a new value first, for every event of every watch.
#[derive(Serialize)]
struct EventLine<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    object: &'a Value,
}

fn event_line(ev: &WatchEvent) -> Bytes {
    let mut s = serde_json::to_vec(&EventLine {
        kind: ev.kind.as_str(),
        object: &ev.object,
    })
    .expect("a JSON value serializes into memory");
    s.push(b'\n');
    Bytes::from(s)
}

fn stream_response(rx: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Response {
    let mut resp = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    resp.headers_mut()
        .insert("content-type", axum::http::HeaderValue::from_static("application/json"));
    resp
}

pub fn serve(store: Arc<Store>, faults: Arc<Faults>, req: WatchRequest) -> Response {
    let (tx, rx) = mpsc::channel(256);
    let start = match store.watch_start(&req.res, req.namespace.as_deref(), req.from) {
        Ok(s) => s,
        Err(err) => {
            // The real server answers 200 and sends the 410 as an ERROR event.
            let _ = tx.try_send(Ok(line(&json!({"type": "ERROR", "object": err.to_status()}))));
            return stream_response(rx);
        }
    };
    let mut drops = faults.watch_drops();
    drops.mark_unchanged();
    tokio::spawn(async move {
        let mut last_rv = start.start_rv;
        for ev in &start.replay {
            last_rv = last_rv.max(ev.rv);
            if req.selects(ev) && tx.send(Ok(event_line(ev))).await.is_err() {
                return;
            }
        }
        let mut live = start.live;
        let deadline = tokio::time::sleep(req.timeout);
        tokio::pin!(deadline);
        let mut bookmark = tokio::time::interval(req.bookmark_interval);
        bookmark.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = drops.changed() => break,
                _ = tx.closed() => break,
                ev = live.recv() => match ev {
                    Ok(ev) => {
                        // Track every event, selected or not: a bookmark must never
                        // claim a version whose events this stream has not passed.
                        last_rv = last_rv.max(ev.rv);
                        if req.selects(&ev) && tx.send(Ok(event_line(&ev))).await.is_err() {
                            break;
                        }
                    }
                    // Fell behind: end the stream; the client resumes from its last
                    // version and the history fills the gap (or answers 410).
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = bookmark.tick(), if req.bookmarks => {
                    let obj = json!({"kind": req.res.kind, "apiVersion": req.res.api_version(),
                        "metadata": {"resourceVersion": last_rv.to_string()}});
                    if tx.send(Ok(line(&json!({"type": "BOOKMARK", "object": obj})))).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    stream_response(rx)
}
