//! The Helm chart and the kustomize base ship the CRD the binary generates: their
//! copies of it are refreshed by `make generate` and must never drift.

const COPIES: [&str; 2] = [
    "charts/poolwarden/crds/poolpolicies.poolwarden.io.yaml",
    "config/crd/poolpolicies.poolwarden.io.yaml",
];

fn assert_is_the_generated_crd(path: &str) {
    let committed = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(
        committed == poolwarden::crd::crd_yaml(),
        "{path} is stale: run `make generate`"
    );
}

#[test]
fn the_helm_chart_crd_is_the_generated_one() {
    assert_is_the_generated_crd(COPIES[0]);
}

#[test]
fn the_kustomize_crd_is_the_generated_one() {
    assert_is_the_generated_crd(COPIES[1]);
}
