#!/usr/bin/env bash
# Builds the real control plane — kube-apiserver, kube-controller-manager and
# etcd — from this module (go.mod, go.sum) into a cache outside the clone:
#
#   ${POOLWARDEN_CLUSTER_CACHE:-/var/tmp/poolwarden-cluster}/<k8s version>-<key>/bin/
#
# where <key> is a short hash of go.mod, go.sum, cmd/, build.sh and env.sh
# (all that decides the binaries: a change to any rebuilds, from the warm Go
# build cache). When all three binaries are there it builds nothing. Either way
# the bin dir is the last line on stdout (all else goes to stderr):
#
#   bindir=$(tests/cluster/build.sh | tail -1)
#
# The module cache and the Go build cache live under the same root (env.sh),
# so a fresh clone reuses what an earlier one downloaded and compiled.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
. ./env.sh

binaries=(kube-apiserver kube-controller-manager etcd)

say() { echo "build.sh: $*" >&2; }
die() { say "$*"; exit 1; }

command -v go >/dev/null || die "no go command on PATH (Go >= 1.26 is needed)"

kube_version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v1\./ {print $2; exit}' go.mod)
[[ -n $kube_version ]] || die "go.mod requires no k8s.io/kubernetes v1.x"
if [[ ! $kube_version =~ ^v1\.([0-9]+)\.[0-9]+$ ]]; then
  die "unexpected k8s.io/kubernetes version $kube_version in go.mod"
fi
kube_minor=${BASH_REMATCH[1]}

key=$(cat go.mod go.sum build.sh env.sh $(find cmd -type f -name "*.go" | LC_ALL=C sort) | sha256sum | cut -c1-12)
dir=$POOLWARDEN_CLUSTER_CACHE/$kube_version-$key
bindir=$dir/bin

have_all() {
  local b
  for b in "${binaries[@]}"; do [[ -x $bindir/$b ]] || return 1; done
}

if have_all; then
  say "cached: $bindir"
  echo "$bindir"
  exit 0
fi

mkdir -p "$POOLWARDEN_CLUSTER_CACHE"
# One build at a time per cache (a CI run and a developer's may overlap).
exec 9>"$POOLWARDEN_CLUSTER_CACHE/.build.lock"
if ! flock -n 9; then
  say "another build holds $POOLWARDEN_CLUSTER_CACHE/.build.lock; waiting"
  flock 9
fi
if have_all; then
  say "cached (built meanwhile): $bindir"
  echo "$bindir"
  exit 0
fi

go_version=$(go env GOVERSION)
say "building Kubernetes $kube_version control plane with $go_version into $bindir"

# Fetch every module first, so that a module the proxy refuses is named on
# its own rather than in the middle of a compile.
if ! out=$(go mod download 2>&1); then
  refused=$(grep -E '@v[^[:space:]]*:' <<<"$out" || true)
  say "fetching modules failed; the module(s) refused, with the error:"
  echo "${refused:-$out}" >&2
  if [[ -n $refused && $refused != "$out" ]]; then
    say "full output of go mod download:"
    echo "$out" >&2
  fi
  exit 1
fi
# go.mod's replaces must be the ones k8s.io/kubernetes's go.mod implies.
./gen-replaces.sh --check >&2 || die "go.mod is out of date with k8s.io/kubernetes@$kube_version"

# As Kubernetes' hack/lib/version.sh stamps both packages; the build date is
# the release's own (from the module's .info), so a rebuild is the same.
info=$GOMODCACHE/cache/download/k8s.io/kubernetes/@v/$kube_version.info
build_date=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info" 2>/dev/null || true)
build_date=${build_date:-1970-01-01T00:00:00Z}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$kube_version"
  ldflags+=" -X $pkg.gitMajor=1 -X $pkg.gitMinor=$kube_minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

partial=$dir/bin.partial.$$
rm -rf "$partial"
mkdir -p "$partial"
trap 'rm -rf "$partial"' EXIT
for b in "${binaries[@]}"; do
  start=$SECONDS
  say "go build ./cmd/$b"
  if ! go build -trimpath -ldflags "$ldflags" -o "$partial/$b" "./cmd/$b" >&2; then
    die "go build ./cmd/$b failed (see above)"
  fi
  say "built $b in $((SECONDS - start))s"
done
"$partial/kube-apiserver" --version >&2
"$partial/etcd" --version >&2
# Publish only a whole set, so that an interrupted build is never "cached".
mkdir -p "$bindir"
for b in "${binaries[@]}"; do mv -f "$partial/$b" "$bindir/$b"; done
say "done: $bindir"
echo "$bindir"
