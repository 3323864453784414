//! Server-side apply on a Deployment's env: managers coexist on different
//! entries, conflict (409 naming the other manager) on the same one unless
//! forced, and an entry a manager stops applying is removed.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use poolwarden_sandbox::{Sandbox, SandboxOptions};
use serde_json::{Value, json};

fn apply_env(env: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "env": env}]}}}})
}

fn env_of(d: &Deployment) -> Vec<(String, String)> {
    d.spec.template.spec.as_ref().unwrap().containers[0]
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn managers_share_a_container_env_and_conflict_on_the_same_entry() {
    let sandbox = Sandbox::start_with(SandboxOptions {
        run_workloads: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let api: Api<Deployment> = Api::default_namespaced(sandbox.client());
    let base: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "x"}]}}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &base).await.unwrap();

    let argo = PatchParams::apply("argocd-controller");
    let pw = PatchParams::apply("poolwarden");
    api.patch(
        "web",
        &argo,
        &Patch::Apply(apply_env(json!([{"name": "DB_POOL_MAX", "value": "50"}]))),
    )
    .await
    .unwrap();
    let d = api
        .patch(
            "web",
            &pw,
            &Patch::Apply(apply_env(json!([{"name": "DB_POOL_MIN", "value": "0"}]))),
        )
        .await
        .unwrap();
    assert_eq!(
        env_of(&d),
        vec![("DB_POOL_MAX".into(), "50".into()), ("DB_POOL_MIN".into(), "0".into())]
    );
    let generation = d.metadata.generation;

    // Re-applying the same thing changes nothing: no new generation, no new version.
    let again = api
        .patch(
            "web",
            &pw,
            &Patch::Apply(apply_env(json!([{"name": "DB_POOL_MIN", "value": "0"}]))),
        )
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version, d.metadata.resource_version);

    let conflicting = apply_env(json!([{"name": "DB_POOL_MIN", "value": "0"}, {"name": "DB_POOL_MAX", "value": "20"}]));
    let err = api
        .patch("web", &pw, &Patch::Apply(conflicting.clone()))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}")
    };
    assert_eq!(status.code, 409);
    assert!(
        status.message.contains(
            r#"conflict with "argocd-controller" using apps/v1: .spec.template.spec.containers[name="app"].env[name="DB_POOL_MAX"].value"#
        ),
        "{}",
        status.message
    );

    let forced = api
        .patch("web", &pw.clone().force(), &Patch::Apply(conflicting))
        .await
        .unwrap();
    assert_eq!(
        env_of(&forced),
        vec![("DB_POOL_MAX".into(), "20".into()), ("DB_POOL_MIN".into(), "0".into())]
    );
    assert!(forced.metadata.generation > generation);
    let owners: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(owners.contains(&"poolwarden".to_string()));

    // poolwarden stops applying DB_POOL_MIN: it goes; DB_POOL_MAX (now poolwarden's) stays.
    let dropped = api
        .patch(
            "web",
            &pw,
            &Patch::Apply(apply_env(json!([{"name": "DB_POOL_MAX", "value": "20"}]))),
        )
        .await
        .unwrap();
    assert_eq!(env_of(&dropped), vec![("DB_POOL_MAX".into(), "20".into())]);
    // The image set by the creator (an Update manager) was never touched.
    assert_eq!(
        dropped.spec.template.spec.unwrap().containers[0].image.as_deref(),
        Some("x")
    );
}

#[tokio::test]
async fn apply_conflicts_with_fields_set_by_an_update() {
    let sandbox = Sandbox::start_with(SandboxOptions {
        run_workloads: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let api: Api<Deployment> = Api::default_namespaced(sandbox.client());
    let base: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "x", "env": [{"name": "A", "value": "1"}]}]}}}
    }))
    .unwrap();
    api.create(
        &PostParams {
            field_manager: Some("kubectl-create".into()),
            ..Default::default()
        },
        &base,
    )
    .await
    .unwrap();
    let err = api
        .patch(
            "web",
            &PatchParams::apply("poolwarden"),
            &Patch::Apply(apply_env(json!([{"name": "A", "value": "2"}]))),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.message.contains("kubectl-create")),
        "{err:?}"
    );
    // The status subresource: main writes ignore status.
    let d = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 7}})),
        )
        .await
        .unwrap();
    assert!(d.status.is_none_or(|s| s.replicas != Some(7)));
    let d = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(d.status.unwrap().replicas, Some(7));
}
