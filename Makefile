# The commands README.md gives. CI (.ci/run) runs `make lint`, `make check-packaging`
# and `make test`.
CARGO ?= cargo

.PHONY: test test-postgres lint check-packaging generate demo postgres test-cluster demo-cluster image release-artifacts

## Install what the suite needs (.ci/setup: Debian's PostgreSQL, promtool and
## Prometheus, PgBouncer, Lua 5.1; nothing when it is there), then make sure a
## PostgreSQL answers at $DATABASE_URL (default
## postgres://postgres@127.0.0.1:5432/postgres): uses the one there, or starts a
## cluster of its own under /var/tmp/poolwarden-pg (trust on 127.0.0.1 only).
postgres:
	bash .ci/setup
	bash .ci/ensure-postgres

## Set up (.ci/setup), then run every test binary against the system's PostgreSQL,
## report every failure, exit non-zero on any. `make test PG=all` (or PG="14 18")
## also runs the PostgreSQL-facing tests against each other supported major, each
## installed and started on its own port (.ci/test-postgres, .ci/postgres-versions).
PG ?=
test:
	bash .ci/test $(PG)

## The PostgreSQL-facing tests only, against one major: `make test-postgres PG=16`.
test-postgres:
	bash .ci/test-postgres $(PG)

## The controller image as an OCI image layout, without a container engine: the
## release binary on a distroless-like base made of pinned Debian packages
## (tools/image/build.sh says what is in it). Writes $$CARGO_TARGET_DIR/image/oci
## (target/image/oci by default; POOLWARDEN_IMAGE_OUT to change), tags 0.1.0 and dev.
## Needs root (umoci records file owners); installs Debian's umoci when missing.
image:
	bash tools/image/build.sh

## Formatting and clippy, warnings are errors; cargo-deny's licence, ban and source
## checks of Cargo.lock against deny.toml (cargo-deny as .ci/tool-versions pins it,
## built once per machine by .ci/ensure-tool).
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	PATH="$$(dirname "$$(bash .ci/ensure-tool cargo-deny)"):$$PATH" $(CARGO) deny --locked check licenses bans sources

## Lint and render the Helm chart and the kustomize base, validate every object
## against Kubernetes' schemas (strict) and check the RBAC (no Secret read cluster-wide).
## Needs python3 and kubectl; installs its Python tools into a cached virtualenv.
check-packaging:
	bash .ci/check-packaging

## Regenerate files derived from the Rust types (the CRD, with its copies in the Helm
## chart and the kustomize base, the policy reference, and the JSON Schema published
## for kubeconform in the CRDs-catalog layout).
generate:
	$(CARGO) run --quiet --locked -- crd > crds/poolpolicies.poolwarden.io.yaml
	cp crds/poolpolicies.poolwarden.io.yaml charts/poolwarden/crds/poolpolicies.poolwarden.io.yaml
	cp crds/poolpolicies.poolwarden.io.yaml config/crd/poolpolicies.poolwarden.io.yaml
	$(CARGO) run --quiet --locked -- crd --reference > docs/policy-reference.md
	mkdir -p schemas/poolwarden.io
	$(CARGO) run --quiet --locked -- crd --json-schema > schemas/poolwarden.io/poolpolicy_v1alpha1.json

## The seeds' story, live: the sandbox, the local PostgreSQL ($$DATABASE_URL), the
## controller; ends by itself in about a minute with a summary.
demo: postgres
	$(CARGO) build --locked --workspace --bins
	$(CARGO) run --locked --quiet -p poolwarden-sandbox --bin poolwarden-demo

## The real Kubernetes control plane: builds it once (tests/cluster/build.sh, cached
## under /var/tmp/poolwarden-cluster), starts it with `poolwarden-cluster` (etcd,
## kube-apiserver, kube-controller-manager, a process node agent), runs the e2e
## tests against it with POOLWARDEN_E2E_KUBECONFIG, and prints the count passed.
## The chart's RBAC test needs the Helm SDK of `make check-packaging`'s virtualenv.
test-cluster: postgres
	bash tests/cluster/test-cluster.sh

## `make demo` on the real control plane.
demo-cluster: postgres
	$(CARGO) build --locked --workspace --bins
	POOLWARDEN_CLUSTER_BIN=$$(tests/cluster/build.sh | tail -1) \
	  $(CARGO) run --locked --quiet -p poolwarden-sandbox --bin poolwarden-demo

## Everything a release ships, signed: the image (OCI layout), SBOMs of the binary and
## the image, the chart's .tgz, the krew archive and manifest, SHA256SUMS, cosign
## signatures (.ci/release-artifacts says which). Needs COSIGN_KEY and COSIGN_PASSWORD.
DIST ?= dist
release-artifacts:
	bash .ci/release-artifacts $(DIST)
