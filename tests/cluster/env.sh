# Sourced by build.sh and gen-replaces.sh: where the Go caches live, outside
# the clone, so a fresh clone (or CI's) reuses what an earlier one fetched and
# compiled.
POOLWARDEN_CLUSTER_CACHE=${POOLWARDEN_CLUSTER_CACHE:-/var/tmp/poolwarden-cluster}
export GOMODCACHE=${GOMODCACHE:-$POOLWARDEN_CLUSTER_CACHE/gomod}
export GOCACHE=${GOCACHE:-$POOLWARDEN_CLUSTER_CACHE/gocache}
# Go 1.26 is what the machines have and k8s.io/kubernetes v1.37 asks for
# go 1.26.0: never let the go command fetch another toolchain.
export GOTOOLCHAIN=local
export GOFLAGS=${GOFLAGS:--buildvcs=false}
export CGO_ENABLED=0
