# syntax=docker/dockerfile:1
# The sidecar image (ghcr.io/example/sidecar in k8s/: push it to your own registry).
#   docker build -t ghcr.io/example/sidecar:0.1.0 .
# Not built or tested in this project's development sandbox or CI (no container runtime, no
# registry access there): kept conventional and small on purpose.

# Debian 12 in both stages, so the binary's glibc and libstdc++ match the runtime's.
FROM rust:1-bookworm AS build
# BoringSSL is built from source by the `boring` crate: cmake, and clang/libclang for bindgen.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake clang libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the BoringSSL build between builds; the binary is copied out
# of the cached target directory, which is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && cp target/release/sidecar /sidecar

# glibc, libgcc and libstdc++ (which BoringSSL needs), CA certificates, a nonroot user; no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /sidecar /usr/local/bin/sidecar
# The default config and local store. It listens on 127.0.0.1 only (the pod sidecar form):
# for `docker run -p`, mount a config listening on 0.0.0.0. Kubernetes mounts its own (k8s/).
COPY conf/ /etc/sidecar/
# The system roots, for providers and the database: BoringSSL looks for /etc/ssl/cert.pem or
# hashed links in /etc/ssl/certs by default, and distroless ships only this bundle file.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
EXPOSE 4000 9901
ENTRYPOINT ["/usr/local/bin/sidecar"]
CMD ["-c", "/etc/sidecar/gateway.yaml"]
