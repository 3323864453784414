#!/usr/bin/env bash
# Installs the real-library apps of tests/libraries (see README.md there), each cached
# under ${POOLWARDEN_LIBRARIES_CACHE:-/var/tmp/poolwarden-libraries} and keyed by the
# hash of what decides it (lockfiles and sources), so a fresh clone reuses them and a
# warm run does no work:
#   python   venv-<key>/            psycopg_pool + SQLAlchemy (requirements.txt, exact versions)
#   pgx      pgx-<key>/pgx-app      `go build` (go.mod, go.sum, *.go); GOMODCACHE/GOCACHE beside
#   spring   springboot-<key>/springboot-app.jar   `mvn package` (pom.xml, src/), repository m2/
#   node     node-<key>/            `npm ci` (package.json, package-lock.json) with app.js
# Idempotent; one install at a time (flock). Progress goes to stderr; stdout is only
# the lines NAME=PATH that the tests read:
#   LIBAPP_PYTHON LIBAPP_PSYCOPG_APP LIBAPP_SQLALCHEMY_APP LIBAPP_PGX LIBAPP_JAVA
#   LIBAPP_SPRINGBOOT_JAR LIBAPP_NODE LIBAPP_NODE_APP
# Needs python3 (3.9+), go, java 17+ with mvn, node 18+ with npm: a missing one is
# named and the script fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=${POOLWARDEN_LIBRARIES_CACHE:-/var/tmp/poolwarden-libraries}
mkdir -p "$root"
exec 9>"$root/.install.lock"
flock 9

say() { echo "libraries/install.sh: $*" >&2; }
need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { say "$tool is not installed (needed by tests/libraries)"; exit 1; }
  done
}
# key FILE... : the first 12 hex digits of the sha256 over the files' names and contents.
key() {
  (cd "$here" && for f in "$@"; do echo "== $f"; cat "$f"; done) | sha256sum | cut -c1-12
}
timed() {
  local what=$1 t0=$SECONDS
  shift
  "$@"
  say "$what: $((SECONDS - t0)) s"
}

# --- Python: one venv for psycopg_pool and SQLAlchemy -----------------------------
need python3
pyver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
venv=$root/venv-py$pyver-$(key python/requirements.txt)
install_python() {
  rm -rf "$venv.partial"
  python3 -m venv "$venv.partial"
  "$venv.partial/bin/pip" install --quiet --disable-pip-version-check --no-deps \
    --cache-dir "$root/pip-cache" -r "$here/python/requirements.txt" >&2
  "$venv.partial/bin/python" -c 'import psycopg, psycopg_pool, sqlalchemy' >&2
  # A venv's scripts name its directory: build in place under the final name.
  mv "$venv.partial" "$venv"
  sed -i "s|$venv.partial|$venv|g" "$venv"/bin/* 2>/dev/null || true
}
[[ -x $venv/bin/python ]] || timed "python venv ($venv)" install_python

# --- Go: pgx v5 ------------------------------------------------------------------
need go
pgx=$root/pgx-$(key pgx/go.mod pgx/go.sum pgx/main.go pgx/traffic.go)
build_pgx() {
  rm -rf "$pgx.partial" && mkdir -p "$pgx.partial"
  (cd "$here/pgx" && GOMODCACHE=$root/gomod GOCACHE=$root/gocache GOFLAGS=-modcacherw \
    GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -o "$pgx.partial/pgx-app" .) >&2
  mv "$pgx.partial" "$pgx"
}
[[ -x $pgx/pgx-app ]] || timed "pgx app ($pgx)" build_pgx

# --- Java: Spring Boot + HikariCP --------------------------------------------------
need java mvn
spring_files=(springboot/pom.xml $(cd "$here" && find springboot/src -type f | sort))
spring=$root/springboot-$(key "${spring_files[@]}")
build_spring() {
  local src=$spring.partial
  rm -rf "$src" && mkdir -p "$src"
  cp -r "$here/springboot/pom.xml" "$here/springboot/src" "$src/"
  # Offline once the repository holds this pom's artifacts (marker keyed by the pom).
  local marker=$root/m2/.complete-$(key springboot/pom.xml) offline=()
  [[ -f $marker ]] && offline=(-o)
  (cd "$src" && mvn -q -B "${offline[@]}" -Dmaven.repo.local="$root/m2" -DskipTests package) >&2
  touch "$marker"
  mkdir -p "$src/out" && mv "$src/target/springboot-app.jar" "$src/out/"
  rm -rf "$src/target" "$src/src" "$src/pom.xml"
  mv "$src/out" "$spring"
  rm -rf "$src"
}
[[ -f $spring/springboot-app.jar ]] || timed "spring boot app ($spring)" build_spring

# --- Node: node-postgres 8 ---------------------------------------------------------
need node npm
node_dir=$root/node-$(key node/package.json node/package-lock.json node/app.js)
install_node() {
  rm -rf "$node_dir.partial" && mkdir -p "$node_dir.partial"
  cp "$here/node/package.json" "$here/node/package-lock.json" "$here/node/app.js" "$node_dir.partial/"
  (cd "$node_dir.partial" && npm ci --quiet --no-audit --no-fund --cache "$root/npm-cache") >&2
  mv "$node_dir.partial" "$node_dir"
}
[[ -f $node_dir/node_modules/pg/package.json ]] || timed "node app ($node_dir)" install_node

cat <<OUT
LIBAPP_PYTHON=$venv/bin/python
LIBAPP_PSYCOPG_APP=$here/python/psycopg_pool_app.py
LIBAPP_SQLALCHEMY_APP=$here/python/sqlalchemy_app.py
LIBAPP_PGX=$pgx/pgx-app
LIBAPP_JAVA=$(command -v java)
LIBAPP_SPRINGBOOT_JAR=$spring/springboot-app.jar
LIBAPP_NODE=$(command -v node)
LIBAPP_NODE_APP=$node_dir/app.js
OUT
