# The poolwarden controller image.
#
#   docker build -t poolwarden:0.1.0 .
#
# The build stage uses the Rust release CI uses (1.95) and, like CI, honours
# Cargo.lock (--locked); the final stage is distroless (glibc, CA certificates, no
# shell) and runs as the unprivileged uid/gid 65532. TLS is rustls with ring, so no
# OpenSSL is needed at run time.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole workspace is needed to resolve the lock file (sandbox/ is a member,
# benches/ are declared targets); .dockerignore keeps the rest out.
COPY . .
# Cache mounts keep the crate downloads and the target directory between builds
# (BuildKit); the binary is copied out because the target cache is not in the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin poolwarden \
    && install -m 0755 target/release/poolwarden /poolwarden

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /poolwarden /poolwarden
USER 65532:65532
# /metrics, /healthz, /readyz
EXPOSE 8080
ENTRYPOINT ["/poolwarden"]
CMD ["controller"]
