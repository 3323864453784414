# The commands README.md gives. CI (.ci/run) runs `make lint` and `make test`.
CARGO ?= cargo

.PHONY: test lint generate demo

## Run every test (needs PostgreSQL at $DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres).
test:
	$(CARGO) test --workspace --locked

## Formatting and clippy, warnings are errors.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## Regenerate files derived from the Rust types (the CRD and the policy reference).
generate:
	$(CARGO) run --quiet --locked -- crd > crds/poolpolicies.poolwarden.io.yaml
	$(CARGO) run --quiet --locked -- crd --reference > docs/policy-reference.md

## The seeds' story, live: the sandbox, the local PostgreSQL ($$DATABASE_URL), the
## controller; ends by itself in about a minute with a summary.
demo:
	$(CARGO) build --locked --workspace --bins
	$(CARGO) run --locked --quiet -p poolwarden-sandbox --bin poolwarden-demo
