//! kubectl, an independent client, can apply, get, patch and delete against the
//! sandbox's kubeconfig, custom resources of a CRD created in it included.

use poolwarden_sandbox::{Sandbox, SandboxOptions, kubectl::kubectl};

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.io}
spec:
  group: example.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_gets_patches_and_deletes() {
    let sandbox = Sandbox::start_with(SandboxOptions {
        run_workloads: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let kc = sandbox.kubeconfig_path().to_path_buf();
    let run = move |args: Vec<&'static str>, stdin: Option<&'static str>| {
        let kc = kc.clone();
        tokio::task::spawn_blocking(move || kubectl(&kc, &args, stdin))
    };
    let (ok, out) = run(vec!["apply", "-f", "-"], Some(CRD)).await.unwrap();
    assert!(ok, "{out}");
    let widget = "apiVersion: example.io/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 1}\n";
    let (ok, out) = run(vec!["apply", "-f", "-"], Some(widget)).await.unwrap();
    assert!(ok && out.contains("created"), "{out}");
    let (ok, out) = run(vec!["get", "wd", "w1", "-o", "jsonpath={.spec.size}"], None)
        .await
        .unwrap();
    assert!(ok && out == "1", "{out}");
    let (ok, out) = run(
        vec!["patch", "widget", "w1", "--type=merge", "-p", r#"{"spec":{"size":2}}"#],
        None,
    )
    .await
    .unwrap();
    assert!(ok, "{out}");

    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c1}\ndata: {a: \"1\"}\n";
    let (ok, out) = run(vec!["apply", "-f", "-"], Some(cm)).await.unwrap();
    assert!(ok, "{out}");
    let cm2 = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c1}\ndata: {a: \"2\"}\n";
    let (ok, out) = run(vec!["apply", "-f", "-"], Some(cm2)).await.unwrap();
    assert!(ok && out.contains("configured"), "{out}");
    let (ok, out) = run(vec!["patch", "configmap", "c1", "-p", r#"{"data":{"b":"x"}}"#], None)
        .await
        .unwrap();
    assert!(ok, "{out}");
    let (ok, out) = run(
        vec!["get", "configmap", "c1", "-o", "jsonpath={.data.a}{.data.b}"],
        None,
    )
    .await
    .unwrap();
    assert!(ok && out == "2x", "{out}");
    let (ok, out) = run(vec!["apply", "--server-side", "-f", "-"], Some(cm)).await.unwrap();
    assert!(
        !ok && out.contains("conflict"),
        "server-side apply over a client-side apply conflicts: {out}"
    );
    let (ok, out) = run(vec!["delete", "configmap", "c1"], None).await.unwrap();
    assert!(ok, "{out}");
    let (ok, out) = run(vec!["get", "configmap", "c1"], None).await.unwrap();
    assert!(!ok && out.contains("NotFound"), "{out}");
    let (ok, out) = run(vec!["get", "pods"], None).await.unwrap();
    assert!(ok, "{out}");
    let (ok, out) = run(vec!["delete", "crd", "widgets.example.io"], None).await.unwrap();
    assert!(ok, "{out}");
}
