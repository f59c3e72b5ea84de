# shellcheck shell=bash
# Image builders for scripts/kind-image (sourced; needs scripts/lib.sh). Each builder hashes its
# inputs, compares the hash with the label podkeeper.kind.inputs of the image it would make and
# returns at once when they match.

KIND_STATE="${PODKEEPER_KIND_STATE:-$HOME/.cache/podkeeper-kind}"
KIND_BIN="$KIND_STATE/bin"            # kind, kubelet, kubeadm, containerd... (local mode)
K8S_VERSION=v1.37.2
DEBIAN_SUITE=bookworm
LABEL=podkeeper.kind.inputs

# Image names. Only local mode builds the first four; the app images exist in both modes.
BASE_IMAGE=podkeeper-kind/debian:$DEBIAN_SUITE
RUNTIME_IMAGE=podkeeper-kind/runtime:$DEBIAN_SUITE
NODE_IMAGE=podkeeper-kind/node:$K8S_VERSION
PODKEEPER_IMAGE="${PODKEEPER_IMAGE:-podkeeper:dev}"
ZK_IMAGE="${PODKEEPER_ZK_IMAGE:-podkeeper-zookeeper:dev}"
DEMO_APP_IMAGE="${PODKEEPER_DEMO_APP_IMAGE:-podkeeper-demo-app:dev}"
METRICS_SERVER_VERSION=v0.8.0 # as tools/metrics-server/go.mod
LOCAL_METRICS_SERVER=podkeeper-kind/metrics-server:$METRICS_SERVER_VERSION
# Upstream images (upstream mode).
UPSTREAM_RUNTIME=gcr.io/distroless/static-debian12:nonroot
UPSTREAM_METRICS_SERVER=registry.k8s.io/metrics-server/metrics-server:$METRICS_SERVER_VERSION

log() { pk_log kind-image "$@"; }

# inputs_hash <file or literal...>: sha256 over the named files' contents (directories
# recursively) and any literal strings, e.g. versions.
inputs_hash() {
  local x
  for x in "$@"; do
    if [[ -d "$x" ]]; then
      find "$x" -type f | LC_ALL=C sort | xargs sha256sum
    elif [[ -f "$x" ]]; then
      printf '%s %s\n' "$(sha256sum <"$x" | cut -d' ' -f1)" "${x##*/}" # content, not where it lies
    else
      printf 'literal %s\n' "$x"
    fi
  done | sha256sum | cut -c1-16
}

# image_current <image> <hash>: true when the image exists with that inputs label.
image_current() {
  (( ${PK_KIND_FORCE:-0} == 0 )) || return 1
  [[ "$(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null)" == "$2" ]]
}

# kind_mode: prints upstream or local (decided once per state dir and machine boot).
kind_mode() {
  local m="${PODKEEPER_KIND_IMAGES:-auto}" f="$KIND_STATE/mode"
  if [[ "$m" == auto ]]; then
    if [[ -f "$f" && "$(sed -n 2p "$f")" == "$(cat /proc/sys/kernel/random/boot_id)" ]]; then
      m="$(sed -n 1p "$f")"
    else
      if docker image inspect "$UPSTREAM_RUNTIME" >/dev/null 2>&1 \
        || timeout 60 docker pull -q "$UPSTREAM_RUNTIME" >/dev/null 2>&1; then
        m=upstream
      else
        m=local
      fi
      mkdir -p "$KIND_STATE"
      printf '%s\n%s\n' "$m" "$(cat /proc/sys/kernel/random/boot_id)" >"$f"
    fi
  fi
  [[ "$m" == upstream || "$m" == local ]] || pk_die "PODKEEPER_KIND_IMAGES must be auto, upstream or local"
  echo "$m"
}

# The Debian mirror apt already uses (none named here: debootstrap's default otherwise).
debian_mirror() {
  cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | awk '/^URIs:/ {u=$2} /^Suites:/ && $0 ~ /(^| )'"$DEBIAN_SUITE"'( |$)/ && u !~ /security/ {print u; exit}'
}

# A minimal Debian base from debootstrap (local mode's stand-in for debian:bookworm-slim).
build_base() {
  local hash mirror tmp
  hash="$(inputs_hash "$DEBIAN_SUITE" "$(declare -f build_base)")"
  image_current "$BASE_IMAGE" "$hash" && { log "$BASE_IMAGE is current"; return; }
  command -v debootstrap >/dev/null || pk_die "debootstrap is missing (apt-get install -y debootstrap)"
  mirror="$(debian_mirror)"
  tmp="$(mktemp -d /var/tmp/podkeeper-debootstrap.XXXXXX)"
  log "debootstrap --variant=minbase $DEBIAN_SUITE (about 80 s)"
  local t=$SECONDS
  if ! debootstrap --variant=minbase "$DEBIAN_SUITE" "$tmp/root" ${mirror:+"$mirror"} >"$tmp/log" 2>&1; then
    tail -20 "$tmp/log" >&2; rm -rf "$tmp"; pk_die "debootstrap failed"
  fi
  # Images stay small: no apt lists, caches or docs.
  chroot "$tmp/root" apt-get clean
  rm -rf "$tmp/root"/var/lib/apt/lists/* "$tmp/root"/usr/share/doc/* "$tmp/root"/usr/share/man/*
  tar -C "$tmp/root" --numeric-owner -c . \
    | docker import --change "LABEL $LABEL=$hash" --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$tmp"
  log "built $BASE_IMAGE in $((SECONDS - t)) s"
}

# The docker CLI that builds: one with buildx, else Debian's docker.io client (20.10), which
# talks BuildKit itself. Other commands use `docker` from PATH.
build_cli() {
  if docker buildx version >/dev/null 2>&1; then echo docker
  elif [[ -x /usr/bin/docker ]]; then echo /usr/bin/docker
  else echo docker; fi
}

# docker_build <image> <hash> <context> [docker build args...]
docker_build() {
  local image="$1" hash="$2" ctx="$3"; shift 3
  local out
  if ! out="$(DOCKER_BUILDKIT=1 "$(build_cli)" build --progress=plain --label "$LABEL=$hash" -t "$image" "$@" "$ctx" 2>&1)"; then
    printf '%s\n' "$out" | tail -40 >&2
    pk_die "docker build of $image failed"
  fi
  # The image this one replaced under the same tag is left untagged: drop ours only (our label).
  docker image prune -f --filter "label=$LABEL" >/dev/null 2>&1 || true
}

# Where the host's release binary is built: CARGO_TARGET_DIR, else a directory beside the
# other caches, outside the clone (a fresh clone reuses the compiled dependencies).
kind_target_dir() { echo "${CARGO_TARGET_DIR:-$KIND_STATE/target}"; }

go_tools() {
  tools/kind/build-go.sh "$(kind_mode)" >&2
}

# The runtime base of the podkeeper image in local mode (tools/kind/images/runtime).
build_runtime() {
  local hash
  hash="$(inputs_hash tools/kind/images/runtime "$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")")"
  image_current "$RUNTIME_IMAGE" "$hash" && return
  log "building $RUNTIME_IMAGE"
  docker_build "$RUNTIME_IMAGE" "$hash" tools/kind/images/runtime --build-arg BASE="$BASE_IMAGE"
}

# The release binary, built on the host (local mode), then the repository's Dockerfile with
# BINARY_FROM=prebuilt on the glibc runtime. Upstream mode builds the Dockerfile as users do.
build_podkeeper() {
  local hash
  if [[ "$(kind_mode)" == upstream ]]; then
    hash="$(inputs_hash Dockerfile Cargo.toml Cargo.lock src)"
    image_current "$PODKEEPER_IMAGE" "$hash" && { log "$PODKEEPER_IMAGE is current"; return; }
    log "building $PODKEEPER_IMAGE with the Dockerfile's defaults (compiles every dependency)"
    docker_build "$PODKEEPER_IMAGE" "$hash" .
    return
  fi
  # Keyed by the sources, so that an unchanged tree skips cargo entirely (a fresh clone too).
  local target; target="$(kind_target_dir)"
  hash="$(inputs_hash Dockerfile Cargo.toml Cargo.lock src "$(rustc --version)" \
    "$(docker image inspect -f '{{.Id}}' "$RUNTIME_IMAGE")")"
  image_current "$PODKEEPER_IMAGE" "$hash" && { log "$PODKEEPER_IMAGE is current"; return; }
  local t=$SECONDS
  log "cargo build --release --bin podkeeper (target dir $target)"
  CARGO_TARGET_DIR="$target" nice -n 10 cargo build --release --locked --bin podkeeper --quiet
  local ctx; ctx="$(mktemp -d)"
  cp "$target/release/podkeeper" "$ctx/podkeeper"
  log "building $PODKEEPER_IMAGE from the host's release binary (cargo took $((SECONDS - t)) s)"
  docker_build "$PODKEEPER_IMAGE" "$hash" "$ctx" -f "$PODKEEPER_ROOT/Dockerfile" \
    --build-arg BINARY_FROM=prebuilt --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE"
  rm -rf "$ctx"
}

build_zookeeper() {
  [[ "$(kind_mode)" == local ]] || return 0 # upstream: the chart's default, the official image
  local hash
  hash="$(inputs_hash tools/kind/images/zookeeper "$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")")"
  image_current "$ZK_IMAGE" "$hash" && { log "$ZK_IMAGE is current"; return; }
  log "building $ZK_IMAGE from Debian's zookeeper package"
  docker_build "$ZK_IMAGE" "$hash" tools/kind/images/zookeeper --build-arg BASE="$BASE_IMAGE"
}

# static_image <image> <binary> <path in image> <key>: FROM scratch, one static binary, which
# is also the entrypoint. <key> names the binary's inputs (a build stamp), so that the image
# stays current in a fresh clone where the same inputs were relinked.
static_image() {
  local image="$1" bin="$2" path="$3" key="$4" hash ctx
  hash="$(inputs_hash "$key" "$path" "$(declare -f static_image)")"
  image_current "$image" "$hash" && return
  ctx="$(mktemp -d)"
  cp "$bin" "$ctx/$(basename "$path")"
  cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM scratch
COPY $(basename "$path") $path
ENV PATH=/usr/local/bin:/usr/bin:/bin
ENTRYPOINT ["$path"]
DOCKERFILE
  docker_build "$image" "$hash" "$ctx"
  rm -rf "$ctx"
}

# The metrics-server image of the kind cluster: built here in local mode, upstream's otherwise.
metrics_server_image() {
  if [[ "$(kind_mode)" == local ]]; then echo "$LOCAL_METRICS_SERVER"; else echo "$UPSTREAM_METRICS_SERVER"; fi
}

# Local mode: tools/build.sh's metrics-server on the runtime base (upstream mode pulls upstream's).
build_metrics_server() {
  [[ "$(kind_mode)" == local ]] || return 0
  tools/build.sh >&2
  local hash ctx
  hash="$(inputs_hash tools/kind/images/metrics-server "tools/build.sh $(cat "$PODKEEPER_TOOLS_BIN/../stamp")" \
    "$(docker image inspect -f '{{.Id}}' "$RUNTIME_IMAGE")")"
  image_current "$LOCAL_METRICS_SERVER" "$hash" && { log "$LOCAL_METRICS_SERVER is current"; return; }
  log "building $LOCAL_METRICS_SERVER from tools/build.sh's binary"
  ctx="$(mktemp -d)"
  cp tools/kind/images/metrics-server/Dockerfile "$PODKEEPER_TOOLS_BIN/metrics-server" "$ctx/"
  docker_build "$LOCAL_METRICS_SERVER" "$hash" "$ctx" --build-arg RUNTIME="$RUNTIME_IMAGE"
  rm -rf "$ctx"
}

build_demo_app() {
  static_image "$DEMO_APP_IMAGE" "$KIND_BIN/demo-app" /demo-app "$(cat "$KIND_BIN/stamp")"
  log "$DEMO_APP_IMAGE ready"
}

build_app_images() {
  go_tools
  if [[ "$(kind_mode)" == local ]]; then
    build_base
    build_runtime
  fi
  build_podkeeper
  build_zookeeper
  build_demo_app
  build_metrics_server
}

# The images kubeadm v1.37.2 asks for, under the names `kubeadm config images list` prints.
build_k8s_images() {
  local list name ref tag tools_key kind_key
  tools_key="tools/build.sh $(cat "$PODKEEPER_TOOLS_BIN/../stamp" 2>/dev/null)"
  kind_key="tools/kind $(cat "$KIND_BIN/stamp")"
  list="$("$KIND_BIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null)"
  [[ -n "$list" ]] || pk_die "kubeadm config images list printed nothing"
  K8S_IMAGES=()
  for ref in $list; do
    name="${ref##*/}"; name="${name%%:*}"
    case "$name" in
      kube-apiserver|kube-controller-manager|kube-scheduler)
        static_image "$ref" "$PODKEEPER_TOOLS_BIN/$name" "/usr/local/bin/$name" "$tools_key" ;;
      etcd) static_image "$ref" "$PODKEEPER_TOOLS_BIN/etcd" /usr/local/bin/etcd "$tools_key" ;;
      coredns) static_image "$ref" "$KIND_BIN/coredns" /coredns "$kind_key" ;;
      pause) static_image "$ref" "$KIND_BIN/pause" /pause "$kind_key" ;;
      kube-proxy)
        local hash ctx
        hash="$(inputs_hash tools/kind/images/kube-proxy "$kind_key" \
          "$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")")"
        if ! image_current "$ref" "$hash"; then
          ctx="$(mktemp -d)"
          cp tools/kind/images/kube-proxy/Dockerfile "$KIND_BIN/kube-proxy" "$ctx/"
          docker_build "$ref" "$hash" "$ctx" --build-arg BASE="$BASE_IMAGE"
          rm -rf "$ctx"
        fi ;;
      *) pk_die "no recipe for image $ref" ;;
    esac
    K8S_IMAGES+=("$ref")
  done
  log "Kubernetes images ready: ${K8S_IMAGES[*]}"
}

build_node_image() {
  go_tools
  build_base
  log "control-plane binaries (tools/build.sh, cached)"
  tools/build.sh >&2
  build_k8s_images
  local ids hash ctx ref
  ids="$(for ref in "${K8S_IMAGES[@]}"; do docker image inspect -f '{{.Id}}' "$ref"; done)"
  hash="$(inputs_hash tools/kind/node tools/kind/images/node tools/kind/runc-drop-caps "$K8S_VERSION" \
    "$KIND_BIN/stamp" "$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")" "$ids")"
  image_current "$NODE_IMAGE" "$hash" && { log "$NODE_IMAGE is current"; return; }
  log "building $NODE_IMAGE"
  local t=$SECONDS
  ctx="$(mktemp -d /var/tmp/podkeeper-node.XXXXXX)"
  mkdir -p "$ctx/bin" "$ctx/kube" "$ctx/images"
  cp -a tools/kind/node/rootfs "$ctx/rootfs"
  cp tools/kind/images/node/Dockerfile "$ctx/"
  cp "$KIND_BIN"/{containerd,containerd-shim-runc-v2,ctr,crictl} tools/kind/runc-drop-caps "$ctx/bin/"
  cp "$KIND_BIN"/{kubelet,kubeadm} "$PODKEEPER_TOOLS_BIN/kubectl" "$ctx/kube/"
  docker save "${K8S_IMAGES[@]}" -o "$ctx/images/kubernetes.tar"
  docker_build "$NODE_IMAGE" "$hash" "$ctx" --build-arg BASE="$BASE_IMAGE" --build-arg K8S_VERSION="$K8S_VERSION"
  rm -rf "$ctx"
  log "built $NODE_IMAGE in $((SECONDS - t)) s"
}
