//! kube-runtime's watcher and reflector against the sandbox stay consistent
//! when the server drops every watch and when it expires its history (410).

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use poolwarden_sandbox::{Sandbox, SandboxOptions};

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"v": v}})).unwrap()
}

async fn converged(api: &Api<ConfigMap>, reader: &reflector::Store<ConfigMap>) -> bool {
    for _ in 0..100 {
        let mut want: Vec<(String, String)> = api
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|c| (c.metadata.name.clone().unwrap(), c.data.as_ref().unwrap()["v"].clone()))
            .collect();
        let mut have: Vec<(String, String)> = reader
            .state()
            .iter()
            .map(|c| (c.metadata.name.clone().unwrap(), c.data.as_ref().unwrap()["v"].clone()))
            .collect();
        want.sort();
        have.sort();
        if want == have {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn reflector_stays_consistent_through_dropped_watches_and_expired_history() {
    let opts = SandboxOptions {
        run_workloads: false,
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    };
    let sandbox = Sandbox::start_with(opts).await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(sandbox.client());
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("a{i}"), "1"))
            .await
            .unwrap();
    }
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api.clone(), watcher::Config::default().any_semantic()).default_backoff(),
    )
    .applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    assert!(converged(&api, &reader).await, "initial list");

    sandbox.drop_watches();
    api.create(&PostParams::default(), &cm("b0", "1")).await.unwrap();
    api.replace("a0", &PostParams::default(), &{
        let mut c = api.get("a0").await.unwrap();
        c.data = Some([("v".to_string(), "2".to_string())].into());
        c
    })
    .await
    .unwrap();
    assert!(converged(&api, &reader).await, "after dropped watches");

    // Events made while no watch is open, then the history is gone: the watcher
    // must get 410 on resume, relist, and see the deletion and the creation.
    sandbox.drop_watches();
    api.delete("a1", &DeleteParams::default()).await.unwrap();
    api.create(&PostParams::default(), &cm("c0", "1")).await.unwrap();
    sandbox.expire_history();
    api.create(&PostParams::default(), &cm("c1", "1")).await.unwrap();
    assert!(converged(&api, &reader).await, "after expired history");
    assert!(sandbox.requests("configmaps", "list") >= 2, "the watcher relisted");
    task.abort();
}

#[tokio::test]
async fn watch_from_expired_version_gets_410_in_stream() {
    let sandbox = Sandbox::start_with(SandboxOptions {
        run_workloads: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(sandbox.client());
    api.create(&PostParams::default(), &cm("x", "1")).await.unwrap();
    sandbox.expire_history();
    let mut events = api
        .watch(&kube::api::WatchParams::default().timeout(5), "1")
        .await
        .unwrap()
        .boxed();
    match events.next().await {
        Some(Ok(kube::api::WatchEvent::Error(e))) => assert_eq!(e.code, 410),
        Some(Err(kube::Error::Api(s))) => assert_eq!(s.code, 410),
        other => panic!("expected a 410 error event, got {other:?}"),
    }
}

#[tokio::test]
async fn injected_faults_answer_the_next_matching_requests() {
    let sandbox = Sandbox::start_with(SandboxOptions {
        run_workloads: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(sandbox.client());
    sandbox.fail_next(Some("create"), Some("configmaps"), 500, 1);
    let err = api.create(&PostParams::default(), &cm("x", "1")).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 500));
    api.create(&PostParams::default(), &cm("x", "1")).await.unwrap();
    let err = api.create(&PostParams::default(), &cm("x", "1")).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"));
    assert_eq!(sandbox.writes("configmaps"), 3);
    let err = api.get("missing").await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"));
}
