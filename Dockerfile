# syntax=docker/dockerfile:1
# The podkeeper image: one static (musl) binary on distroless, no shell, user 65532.
# Build from the repository root:  docker build -t podkeeper:dev .
# Needs BuildKit (the default builder of current Docker) for the cache mounts.

FROM rust:1-bookworm AS build
# ring compiles C code: the musl target needs musl-gcc.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
# The whole tree (less .dockerignore): Cargo.toml names benches and tests that must exist.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl --bin podkeeper \
 && cp target/x86_64-unknown-linux-musl/release/podkeeper /podkeeper

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="podkeeper" \
      org.opencontainers.image.description="Kubernetes operator that mirrors ready pods into Apache ZooKeeper" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /podkeeper /podkeeper
USER 65532:65532
# /healthz, /readyz and /metrics (PODKEEPER_HEALTH_ADDR).
EXPOSE 8080
ENTRYPOINT ["/podkeeper"]
CMD ["run"]
