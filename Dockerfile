# The podkeeper image: one binary on a distroless base, no shell, user 65532; the chart runs it
# with a read-only root filesystem. Build from the repository root (BuildKit, the default
# builder of current Docker, is needed for the cache mounts and to skip unused stages):
#
#   docker build -t podkeeper:dev .
#
# Build arguments; the defaults are the upstream images:
#   BUILDER_IMAGE  Rust image of the build stage                  rust:1-bookworm
#   RUNTIME_IMAGE  base of the final image                        gcr.io/distroless/static-debian12:nonroot
#   BINARY_FROM    build: compile a static musl binary in BUILDER_IMAGE;
#                  prebuilt: take the file `podkeeper` from the build context instead (a binary
#                  built on the host; scripts/kind-image does this on machines that cannot pull
#                  images, with a glibc RUNTIME_IMAGE made from Debian's packages to match)
ARG BUILDER_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot
ARG BINARY_FROM=build

FROM ${BUILDER_IMAGE} AS build
# ring, aws-lc-sys (zookeeper-client's TLS) and mimalloc compile C code: the musl target needs
# musl-gcc, and aws-lc-sys falls back to cmake where its cc build does not cover the target. The binary uses mimalloc
# (feature `mimalloc`) instead of musl's malloc, which cannot be measured on the machines the
# figures come from: mimalloc kept the least memory in round 2 of docs/PERFORMANCE.md; since
# round 6 glibc's malloc keeps less than mimalloc, but glibc is no option in this image, so the
# pick wants a measurement of this image itself.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools cmake \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
# The whole tree (less .dockerignore): Cargo.toml names benches and tests that must exist.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl --bin podkeeper --features mimalloc \
 && cp target/x86_64-unknown-linux-musl/release/podkeeper /podkeeper

FROM scratch AS prebuilt
COPY podkeeper /podkeeper

FROM ${BINARY_FROM} AS binary

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="podkeeper" \
      org.opencontainers.image.description="Kubernetes operator that mirrors ready pods into Apache ZooKeeper" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binary /podkeeper /podkeeper
USER 65532:65532
# /healthz, /readyz and /metrics (PODKEEPER_HEALTH_ADDR).
EXPOSE 8080
ENTRYPOINT ["/podkeeper"]
CMD ["run"]
