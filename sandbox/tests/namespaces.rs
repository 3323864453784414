//! Like a real API server (the NamespaceLifecycle admission plugin), the sandbox
//! refuses to create a namespaced object in a namespace that does not exist, by
//! create and by server-side apply alike.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, Patch, PatchParams, PostParams};
use poolwarden_sandbox::Sandbox;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"v": "1"}})).unwrap()
}

#[tokio::test]
async fn objects_in_a_missing_namespace_are_refused_until_it_exists() {
    let sandbox = Sandbox::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(sandbox.client(), "billing");
    let created = api.create(&PostParams::default(), &cm("a")).await;
    match created {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"), "{s:?}");
            assert_eq!(s.message, "namespaces \"billing\" not found");
        }
        other => panic!("expected 404 NotFound, got {other:?}"),
    }
    let applied = api
        .patch("b", &PatchParams::apply("test"), &Patch::Apply(cm("b")))
        .await;
    assert!(
        matches!(&applied, Err(kube::Error::Api(s)) if s.code == 404),
        "{applied:?}"
    );

    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": "billing"}})).unwrap();
    Api::<Namespace>::all(sandbox.client())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
    api.patch("b", &PatchParams::apply("test"), &Patch::Apply(cm("b")))
        .await
        .unwrap();
    sandbox.shutdown().await;
}
