#!/usr/bin/env bash
# `make test-cluster`: the e2e suite against the real control plane. Builds (or
# reuses) kube-apiserver, kube-controller-manager and etcd, starts them with
# `poolwarden-cluster`, runs every tests/e2e_*.rs with POOLWARDEN_E2E_KUBECONFIG
# set, stops the cluster, and ends with "test-cluster: N passed, N failed".
# Pods are local processes run by the node agent: each container's `command` is
# the program (the tests use the leaky-app binary), except the controller image
# `make image` builds (poolwarden:dev), which the agent runs under runc: the Helm
# chart's test (tests/e2e_chart.rs) installs it. POOLWARDEN_IMAGE_LAYOUT names an
# already built layout instead of building one.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo=${CARGO:-cargo}

t0=$SECONDS
bindir=$(tests/cluster/build.sh | tail -1)
echo "test-cluster: control plane binaries in $bindir ($((SECONDS - t0))s)" >&2

t1=$SECONDS
$cargo build --locked -p poolwarden-sandbox --bin poolwarden-cluster --bin leaky-app >&2
$cargo build --locked --bin poolwarden >&2
$cargo test --locked --no-run --test 'e2e_*' >&2
if [[ -n ${POOLWARDEN_IMAGE_LAYOUT:-} ]]; then
  layout=$POOLWARDEN_IMAGE_LAYOUT
else
  layout=$(bash tools/image/build.sh | tail -1)
fi
[[ -f $layout/index.json ]] || { echo "test-cluster: no OCI image layout at $layout" >&2; exit 1; }
image=poolwarden:dev
echo "test-cluster: built the launcher, the tests and the image $image ($layout) ($((SECONDS - t1))s)" >&2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/poolwarden-test-cluster.XXXXXX")
target=$($cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
t2=$SECONDS
"$target/debug/poolwarden-cluster" --bin-dir "$bindir" --kubeconfig "$tmp/kubeconfig" \
  --data-dir "$tmp/data" --image "$image=$layout" >"$tmp/launcher.out" 2>"$tmp/launcher.log" &
launcher=$!
cleanup() {
  local rc=$?
  kill -TERM "$launcher" 2>/dev/null && wait "$launcher" 2>/dev/null || true
  if ((rc != 0)); then
    echo "test-cluster: the cluster's logs are kept in $tmp/data (launcher: $tmp/launcher.log)" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
until [[ -f $tmp/kubeconfig ]]; do
  if ! kill -0 "$launcher" 2>/dev/null; then
    echo "test-cluster: poolwarden-cluster exited:" >&2
    tail -30 "$tmp/launcher.log" >&2
    exit 1
  fi
  ((SECONDS - t2 < 180)) || { echo "test-cluster: the cluster was not ready in 180 s" >&2; exit 1; }
  sleep 0.2
done
echo "test-cluster: control plane ready ($((SECONDS - t2))s)" >&2

t3=$SECONDS
set +e
POOLWARDEN_E2E_KUBECONFIG=$tmp/kubeconfig POOLWARDEN_E2E_CONTROLLER_IMAGE=$image \
  POOLWARDEN_E2E_CLUSTER_DIR=$tmp/data $cargo test --locked --no-fail-fast --test 'e2e_*' 2>&1 | tee "$tmp/tests.log"
rc=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$tmp/tests.log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$tmp/tests.log" | awk '{s+=$1} END {print s+0}')
echo "test-cluster: the e2e suite against the real control plane took $((SECONDS - t3))s" >&2
echo "test-cluster: $passed passed, $failed failed"
exit "$rc"
