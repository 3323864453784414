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

# `make image` (tools/image/build.sh) builds the same image without an engine, from
# Debian packages; tests/image.rs checks that both set the same labels, env, working
# directory, user, port, entrypoint and command (those distroless sets are repeated here).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /poolwarden /poolwarden
LABEL org.opencontainers.image.title=poolwarden \
      org.opencontainers.image.version=0.1.0 \
      org.opencontainers.image.licenses=Apache-2.0
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
WORKDIR /home/nonroot
USER 65532:65532
# /metrics, /healthz, /readyz
EXPOSE 8080
ENTRYPOINT ["/poolwarden"]
CMD ["controller"]
