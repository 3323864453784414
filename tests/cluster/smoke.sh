#!/usr/bin/env bash
# Smoke test of the real control plane that build.sh builds: starts etcd,
# kube-apiserver and kube-controller-manager on 127.0.0.1 with certificates
# made here by openssl, checks the API server is ready, and that the
# controllers we run do their work (a Deployment gets a ReplicaSet and Pods,
# a StatefulSet its Pod, a PDB its status, the garbage collector removes what
# a deleted Deployment owned, the namespace controller empties a namespace).
# Pods stay Pending: there is no node.
#
#   tests/cluster/smoke.sh [BINDIR]    (default: what build.sh prints)
#
# Environment: SMOKE_ETCD_PORT (23790), SMOKE_ETCD_PEER_PORT (23800),
# SMOKE_APISERVER_PORT (26443), SMOKE_KCM_PORT (20257), SMOKE_KEEP=1 keeps the
# temp dir (certs, kubeconfigs, logs). Every process it starts it stops by its
# PID on exit; everything it writes is in one temp dir.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

bindir=${1:-$("$here/build.sh" | tail -1)}
for b in etcd kube-apiserver kube-controller-manager; do
  [[ -x $bindir/$b ]] || { echo "smoke: no $bindir/$b (run tests/cluster/build.sh)" >&2; exit 1; }
done
for c in openssl kubectl curl; do
  command -v "$c" >/dev/null || { echo "smoke: $c is needed" >&2; exit 1; }
done

etcd_port=${SMOKE_ETCD_PORT:-23790}
etcd_peer_port=${SMOKE_ETCD_PEER_PORT:-23800}
api_port=${SMOKE_APISERVER_PORT:-26443}
kcm_port=${SMOKE_KCM_PORT:-20257}
host=127.0.0.1

tmp=$(mktemp -d "${TMPDIR:-/tmp}/poolwarden-smoke.XXXXXX")
pids=()
passed=0
failed=0

cleanup() {
  local rc=$? pid i
  # Stop in reverse order of start, each by its own PID.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[i]}
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ ${SMOKE_KEEP:-} == 1 || $rc != 0 ]]; then
    echo "smoke: logs, certs and kubeconfigs kept in $tmp" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say() { echo "smoke: $*" >&2; }
port_free() { ! (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; }
for p in "$etcd_port" "$etcd_peer_port" "$api_port" "$kcm_port"; do
  port_free "$p" || { say "port $host:$p is in use (set SMOKE_*_PORT)"; exit 1; }
done

# wait_for SECONDS DESCRIPTION COMMAND...: retry until COMMAND succeeds.
wait_for() {
  local secs=$1 what=$2 deadline=$((SECONDS + $1))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      say "timed out after ${secs}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
}
check() {
  local what=$1
  shift
  if "$@"; then
    passed=$((passed + 1)); say "ok: $what"
  else
    failed=$((failed + 1)); say "FAILED: $what"
  fi
}
# wait_up SECONDS PID NAME COMMAND...: as wait_for, but give up at once (with
# the end of its log) when process NAME dies.
wait_up() {
  local secs=$1 pid=$2 name=$3 deadline=$(($1 + SECONDS))
  shift 3
  until "$@" >/dev/null 2>&1; do
    alive "$pid" "$name"
    if ((SECONDS >= deadline)); then
      say "timed out after ${secs}s waiting for $name; the end of its log:"
      tail -30 "$tmp/$name.log" >&2
      exit 1
    fi
    sleep 0.5
  done
}
alive() {
  local pid=$1 name=$2
  kill -0 "$pid" 2>/dev/null && return 0
  say "$name exited; the end of its log:"
  tail -30 "$tmp/$name.log" >&2
  exit 1
}

# ---- certificates -----------------------------------------------------------
pki=$tmp/pki
mkdir -p "$pki"
ssl() { openssl "$@" 2>>"$tmp/openssl.log"; }
ssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=poolwarden-smoke-ca" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt"
# sign NAME SUBJECT EXTENSIONS
sign() {
  ssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr"
  printf '%s\n' "$3" >"$pki/$1.ext"
  ssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 2 -extfile "$pki/$1.ext" -out "$pki/$1.crt"
}
sign apiserver "/CN=kube-apiserver" \
  "keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
client_ext="keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
sign admin "/O=system:masters/CN=poolwarden-admin" "$client_ext"
sign kcm "/CN=system:kube-controller-manager" "$client_ext"
# The front-proxy CA and client (as kubeadm makes them): the API server
# publishes the CA in kube-system/extension-apiserver-authentication, which
# the controller manager's own authentication reads.
ssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=poolwarden-smoke-front-proxy-ca" \
  -keyout "$pki/front-proxy-ca.key" -out "$pki/front-proxy-ca.crt"
ssl req -newkey rsa:2048 -nodes -subj "/CN=front-proxy-client" \
  -keyout "$pki/front-proxy-client.key" -out "$pki/front-proxy-client.csr"
printf '%s\n' "$client_ext" >"$pki/front-proxy-client.ext"
ssl x509 -req -in "$pki/front-proxy-client.csr" -CA "$pki/front-proxy-ca.crt" -CAkey "$pki/front-proxy-ca.key" \
  -CAcreateserial -days 2 -extfile "$pki/front-proxy-client.ext" -out "$pki/front-proxy-client.crt"
ssl genrsa -out "$pki/sa.key" 2048
ssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

# kubeconfig FILE USER
kubeconfig() {
  local k=$tmp/$1.kubeconfig
  kubectl --kubeconfig "$k" config set-cluster smoke --server "https://$host:$api_port" \
    --certificate-authority "$pki/ca.crt" --embed-certs >/dev/null
  kubectl --kubeconfig "$k" config set-credentials "$1" --client-certificate "$pki/$1.crt" \
    --client-key "$pki/$1.key" --embed-certs >/dev/null
  kubectl --kubeconfig "$k" config set-context smoke --cluster smoke --user "$1" >/dev/null
  kubectl --kubeconfig "$k" config use-context smoke >/dev/null
}
kubeconfig admin
kubeconfig kcm
k() { kubectl --kubeconfig "$tmp/admin.kubeconfig" "$@"; }

# ---- etcd -------------------------------------------------------------------
say "starting etcd on $host:$etcd_port"
"$bindir/etcd" --name smoke --data-dir "$tmp/etcd" --unsafe-no-fsync \
  --listen-client-urls "http://$host:$etcd_port" --advertise-client-urls "http://$host:$etcd_port" \
  --listen-peer-urls "http://$host:$etcd_peer_port" --initial-advertise-peer-urls "http://$host:$etcd_peer_port" \
  --initial-cluster "smoke=http://$host:$etcd_peer_port" --initial-cluster-state new \
  --log-level warn >"$tmp/etcd.log" 2>&1 &
etcd_pid=$!
pids+=("$etcd_pid")
wait_up 30 "$etcd_pid" etcd curl -fsS "http://$host:$etcd_port/health"

# ---- kube-apiserver ---------------------------------------------------------
say "starting kube-apiserver on $host:$api_port"
"$bindir/kube-apiserver" \
  --etcd-servers "http://$host:$etcd_port" \
  --bind-address "$host" --advertise-address "$host" --secure-port "$api_port" \
  --endpoint-reconciler-type none \
  --cert-dir "$tmp/apiserver" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --requestheader-client-ca-file "$pki/front-proxy-ca.crt" \
  --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User \
  --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --proxy-client-cert-file "$pki/front-proxy-client.crt" \
  --proxy-client-key-file "$pki/front-proxy-client.key" \
  --service-account-issuer "https://kubernetes.default.svc" \
  --service-account-key-file "$pki/sa.pub" \
  --service-account-signing-key-file "$pki/sa.key" \
  --authorization-mode Node,RBAC \
  --service-cluster-ip-range 10.0.0.0/24 \
  >"$tmp/kube-apiserver.log" 2>&1 &
api_pid=$!
pids+=("$api_pid")
start=$SECONDS
wait_up 120 "$api_pid" kube-apiserver k get --raw /readyz
say "kube-apiserver ready in $((SECONDS - start))s"
check "GET /readyz answers ok" test "$(k get --raw /readyz)" = ok
check "kubectl get ns lists default and kube-system" \
  bash -c '[[ $(kubectl --kubeconfig "$0" get ns -o name | sort | tr "\n" " ") == *namespace/default*namespace/kube-system* ]]' \
  "$tmp/admin.kubeconfig"
check "the server says it is $(k get --raw /version | sed -n 's/.*"gitVersion": "\([^"]*\)".*/\1/p')" \
  bash -c '[[ $(kubectl --kubeconfig "$0" get --raw /version) == *"\"gitVersion\": \"v1."* ]]' "$tmp/admin.kubeconfig"

# ---- kube-controller-manager ------------------------------------------------
controllers=deployment-controller,replicaset-controller,statefulset-controller,disruption-controller,garbage-collector-controller,namespace-controller,serviceaccount-controller
say "starting kube-controller-manager (--controllers=$controllers)"
"$bindir/kube-controller-manager" \
  --kubeconfig "$tmp/kcm.kubeconfig" \
  --authentication-kubeconfig "$tmp/kcm.kubeconfig" \
  --authorization-kubeconfig "$tmp/kcm.kubeconfig" \
  --bind-address "$host" --secure-port "$kcm_port" --cert-dir "$tmp/kcm" \
  --controllers "$controllers" \
  --service-account-private-key-file "$pki/sa.key" \
  --root-ca-file "$pki/ca.crt" \
  --use-service-account-credentials \
  --leader-elect=false \
  >"$tmp/kube-controller-manager.log" 2>&1 &
kcm_pid=$!
pids+=("$kcm_pid")
wait_up 60 "$kcm_pid" kube-controller-manager curl -fsSk "https://$host:$kcm_port/healthz"

ns=smoke
k create namespace "$ns" >/dev/null
check "serviceaccount-controller creates $ns/default" wait_for 60 "serviceaccount default" k -n "$ns" get serviceaccount default

k -n "$ns" create deployment web --image=none.invalid/web:0 --replicas=2 >/dev/null
rs_count() { [[ $(k -n "$ns" get rs -l app=web -o name | wc -l) -ge 1 ]]; }
check "deployment-controller creates a ReplicaSet" wait_for 60 "ReplicaSet of web" rs_count
pods_of_web() { [[ $(k -n "$ns" get pods -l app=web -o name | wc -l) -eq 2 ]]; }
check "replicaset-controller creates 2 Pods" wait_for 60 "2 Pods of web" pods_of_web
check "the Pods are Pending (no node)" \
  bash -c '[[ $(kubectl --kubeconfig "$0" -n "$1" get pods -l app=web -o jsonpath="{.items[*].status.phase}") == "Pending Pending" ]]' \
  "$tmp/admin.kubeconfig" "$ns"
check "the Pods are owned by the ReplicaSet" \
  bash -c '[[ $(kubectl --kubeconfig "$0" -n "$1" get pods -l app=web -o jsonpath="{.items[*].metadata.ownerReferences[0].kind}") == "ReplicaSet ReplicaSet" ]]' \
  "$tmp/admin.kubeconfig" "$ns"

k -n "$ns" create poddisruptionbudget web --selector=app=web --min-available=1 >/dev/null
pdb_status() {
  [[ $(k -n "$ns" get pdb web -o jsonpath='{.status.observedGeneration}/{.status.expectedPods}/{.status.disruptionsAllowed}') == 1/2/0 ]]
}
check "disruption-controller computes the PDB (2 expected, 0 allowed: none ready)" wait_for 60 "PDB status" pdb_status

k -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: none.invalid/db:0}]}
EOF
check "statefulset-controller creates db-0" wait_for 60 "Pod db-0" k -n "$ns" get pod db-0

k -n "$ns" delete deployment web --wait=false >/dev/null
web_gone() { [[ -z $(k -n "$ns" get rs,pods -l app=web -o name) ]]; }
check "garbage-collector-controller deletes the ReplicaSet and Pods of a deleted Deployment" \
  wait_for 60 "web's ReplicaSet and Pods to go" web_gone

# Pods with no node are deleted at once (no kubelet to wait for).
k delete namespace "$ns" --wait=false >/dev/null
ns_gone() { ! k get namespace "$ns"; }
check "namespace-controller empties and removes namespace $ns" wait_for 90 "namespace $ns to go" ns_gone

for name in etcd kube-apiserver kube-controller-manager; do
  pid=${pids[0]}
  case $name in kube-apiserver) pid=$api_pid ;; kube-controller-manager) pid=$kcm_pid ;; esac
  check "$name still running" kill -0 "$pid"
done

echo "smoke: $passed passed, $failed failed"
((failed == 0))
