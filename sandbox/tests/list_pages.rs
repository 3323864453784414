//! Paged lists (`limit` and `continue`), as kube's watcher and client-go page: every
//! object exactly once, in (namespace, name) order, with `remainingItemCount`.

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{ListParams, ObjectList},
};
use poolwarden_sandbox::{Sandbox, SandboxOptions, manifests};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_cover_the_collection_once_in_order() {
    let sandbox = Sandbox::start_with(SandboxOptions {
        run_workloads: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut expected = Vec::new();
    for (ns, n) in [("a", 25), ("b", 5)] {
        manifests::apply_object(
            sandbox.store(),
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .unwrap();
        for i in 0..n {
            let name = format!("p{i:02}");
            manifests::apply_object(
                sandbox.store(),
                &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
                        "spec": {"containers": [{"name": "c", "image": "x"}]}}),
            )
            .unwrap();
            expected.push(format!("{ns}/{name}"));
        }
    }
    let pods: Api<Pod> = Api::all(sandbox.client());
    let mut seen = Vec::new();
    let mut remaining = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(10);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page: ObjectList<Pod> = pods.list(&lp).await.unwrap();
        assert!(page.items.len() <= 10);
        seen.extend(page.items.iter().map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or_default(),
                p.metadata.name.as_deref().unwrap_or_default()
            )
        }));
        remaining.push(page.metadata.remaining_item_count);
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, expected);
    assert_eq!(remaining, vec![Some(20), Some(10), None]);
    sandbox.shutdown().await;
}
