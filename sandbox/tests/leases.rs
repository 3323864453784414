//! Leader election with kube-lease-manager works against the sandbox: one of two
//! candidates holds the Lease, and the other takes over when it is released.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube_lease_manager::LeaseManagerBuilder;
use poolwarden_sandbox::{Sandbox, SandboxOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_manager_elects_one_leader_and_hands_over() {
    let sandbox = Sandbox::start_with(SandboxOptions {
        run_workloads: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let build = |id: &str| {
        LeaseManagerBuilder::new(sandbox.client(), "poolwarden-leader")
            .with_identity(id)
            .with_duration(3)
            .with_grace(1)
            .build()
    };
    let a = build("a").await.unwrap();
    let b = build("b").await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(10), a.changed())
            .await
            .unwrap()
            .unwrap(),
        "a leads"
    );
    let lease = Api::<Lease>::default_namespaced(sandbox.client())
        .get("poolwarden-leader")
        .await
        .unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("a"));
    let b_wait = tokio::spawn(async move { tokio::time::timeout(Duration::from_secs(15), b.changed()).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.release().await.unwrap();
    assert!(b_wait.await.unwrap().unwrap().unwrap(), "b takes over");
}
