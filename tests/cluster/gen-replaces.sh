#!/usr/bin/env bash
# Writes into go.mod a `replace k8s.io/X => k8s.io/X v0.MINOR.PATCH` for every
# staging module that k8s.io/kubernetes's own go.mod replaces with
# `=> ./staging/src/k8s.io/X` (the module zip holds no staging/, so a module
# that requires k8s.io/kubernetes must pin each one to its published release).
#
#   tests/cluster/gen-replaces.sh           rewrite go.mod's k8s.io replaces
#   tests/cluster/gen-replaces.sh --check   fail if go.mod's differ from them
#
# The Kubernetes version is the one go.mod requires (k8s.io/kubernetes vX.Y.Z);
# the staging modules are released as v0.Y.Z.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
. ./env.sh

check=false
case "${1-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

kube_version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v1\./ {print $2; exit}' go.mod)
if [[ -z $kube_version ]]; then
  echo "gen-replaces: go.mod requires no k8s.io/kubernetes v1.x" >&2
  exit 1
fi
staging_version=v0.${kube_version#v1.}

if ! json=$(go mod download -json "k8s.io/kubernetes@$kube_version" 2>&1); then
  echo "gen-replaces: go mod download k8s.io/kubernetes@$kube_version failed:" >&2
  echo "$json" >&2
  exit 1
fi
kube_gomod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p' <<<"$json")
if [[ ! -f $kube_gomod ]]; then
  echo "gen-replaces: no go.mod for k8s.io/kubernetes@$kube_version in:" >&2
  echo "$json" >&2
  exit 1
fi

# Both forms: inside a `replace (...)` block and a one-line `replace a => b`.
mapfile -t staging < <(
  sed -n 's#^[[:space:]]*\(replace[[:space:]]\{1,\}\)\{0,1\}\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/src/\2[[:space:]]*$#\2#p' \
    "$kube_gomod" | sort -u
)
if ((${#staging[@]} == 0)); then
  echo "gen-replaces: found no '=> ./staging/src/' lines in $kube_gomod" >&2
  exit 1
fi

want=$(for m in "${staging[@]}"; do echo "$m $m $staging_version"; done)
have=$(go mod edit -json | awk '
  /"Replace":/ {in_r = 1}
  in_r && /"Path":/ {gsub(/[",]/, "", $2); p[++n] = $2}
  in_r && /"Version":/ {gsub(/[",]/, "", $2); v = $2}
  in_r && /^[[:space:]]*}[[:space:]]*$/ && n >= 2 {print p[n-1], p[n], v; n = 0; v = ""}
' | grep '^k8s\.io/' | sort -u || true)

if $check; then
  if [[ $want != "$have" ]]; then
    echo "gen-replaces: go.mod's k8s.io replaces differ from k8s.io/kubernetes@$kube_version's staging modules:" >&2
    diff <(echo "$have") <(echo "$want") >&2 || true
    echo "run tests/cluster/gen-replaces.sh, then go mod tidy" >&2
    exit 1
  fi
  echo "gen-replaces: ${#staging[@]} staging modules replaced at $staging_version, as k8s.io/kubernetes@$kube_version's go.mod lists them"
  exit 0
fi

args=()
while read -r old _; do
  [[ -n $old ]] && args+=("-dropreplace=$old")
done <<<"$have"
for m in "${staging[@]}"; do
  args+=("-replace=$m=$m@$staging_version")
done
go mod edit "${args[@]}"
echo "gen-replaces: replaced ${#staging[@]} staging modules at $staging_version (from k8s.io/kubernetes@$kube_version's go.mod)"
