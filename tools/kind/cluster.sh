# shellcheck shell=bash
# The kind cluster of scripts/kind-demo and the kind suite (sourced after tools/kind/images.sh):
# create and delete it, install the chart, read what the operator published.

KIND_CLUSTER="${KIND_CLUSTER_NAME:-podkeeper-kind}"
KIND_KUBECONFIG="$KIND_STATE/kubeconfig-$KIND_CLUSTER"
KIND_NAMESPACE=podkeeper-system
KIND_RELEASE=podkeeper # the chart names everything after the release: deploy/podkeeper
KIND_ZK_SERVICE=$KIND_RELEASE-zookeeper
KIND_ZK_CONNECT=$KIND_ZK_SERVICE.$KIND_NAMESPACE.svc:2181

# Our builds first (kind v0.33, kubectl and helm of tools/build.sh), then PATH.
kind_tool() {
  local t="$1"
  if [[ -x "$KIND_BIN/$t" ]]; then echo "$KIND_BIN/$t"
  elif [[ -x "$PODKEEPER_TOOLS_BIN/$t" ]]; then echo "$PODKEEPER_TOOLS_BIN/$t"
  elif command -v "$t" >/dev/null; then command -v "$t"
  else pk_die "$t not found (scripts/kind-image builds kind; tools/build.sh kubectl and helm)"; fi
}
k() { "$(kind_tool kubectl)" --kubeconfig "$KIND_KUBECONFIG" "$@"; }
kind_helm() { "$(kind_tool helm)" --kubeconfig "$KIND_KUBECONFIG" "$@"; }
kind_cli() { "$(kind_tool kind)" "$@"; }

kind_cluster_exists() { kind_cli get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; }

# The cluster config. Workarounds only where the machine needs them.
kind_config() {
  echo "kind: Cluster"
  echo "apiVersion: kind.x-k8s.io/v1alpha4"
  if [[ "$(kind_mode)" == local ]]; then
    # One node: the local node image's bridge CNI does not route between nodes.
    cat <<EOF
networking:
  disableDefaultCNI: true
nodes:
  - role: control-plane
    image: $NODE_IMAGE
    labels:
      topology.kubernetes.io/zone: zone-a
EOF
  else
    cat <<'EOF'
nodes:
  - role: control-plane
  - role: worker
    labels:
      topology.kubernetes.io/zone: zone-a
  - role: worker
    labels:
      topology.kubernetes.io/zone: zone-b
EOF
  fi
  if [[ ! -f /sys/fs/cgroup/cgroup.controllers ]]; then
    # cgroup v1 host: kubelet >= 1.35 refuses to start unless told otherwise.
    cat <<'EOF'
kubeadmConfigPatches:
  - |
    kind: KubeletConfiguration
    failCgroupV1: false
EOF
  fi
}

kind_app_images() {
  echo "$PODKEEPER_IMAGE" "$DEMO_APP_IMAGE"
  [[ "$(kind_mode)" == local ]] && echo "$ZK_IMAGE"
  return 0
}

kind_cluster_up() {
  local timeout="${1:-300}" t=$SECONDS
  mkdir -p "$KIND_STATE"
  if kind_cluster_exists; then
    log "kind cluster $KIND_CLUSTER exists; reusing it"
    kind_cli export kubeconfig --name "$KIND_CLUSTER" --kubeconfig "$KIND_KUBECONFIG" >/dev/null 2>&1
  else
    log "creating kind cluster $KIND_CLUSTER ($(kind_mode) images)"
    kind_config >"$KIND_STATE/kind-config.yaml"
    if ! kind_cli create cluster --name "$KIND_CLUSTER" --kubeconfig "$KIND_KUBECONFIG" \
        --wait "${timeout}s" --config "$KIND_STATE/kind-config.yaml"; then
      kind_cli export logs "$KIND_STATE/logs/kind-$KIND_CLUSTER" --name "$KIND_CLUSTER" >/dev/null 2>&1 || true
      pk_die "kind create cluster failed (node logs in $KIND_STATE/logs/kind-$KIND_CLUSTER)"
    fi
    log "cluster created in $((SECONDS - t)) s"
  fi
  log "loading $(kind_app_images | tr '\n' ' ')"
  # shellcheck disable=SC2046
  kind_cli load docker-image --name "$KIND_CLUSTER" $(kind_app_images) >/dev/null
  k wait --for=condition=Ready nodes --all --timeout="${timeout}s" >/dev/null
  k -n kube-system rollout status deploy/coredns --timeout="${timeout}s" >/dev/null
}

# kind_metrics_server_up: metrics-server serving metrics.k8s.io (APIService
# v1beta1.metrics.k8s.io) from tools/kind/metrics-server.yaml. Its image is loaded where it was
# built here; elsewhere the node pulls upstream's. Returns without waiting for the first scrape.
kind_metrics_server_up() {
  local image; image="$(metrics_server_image)"
  log "metrics-server ($image)"
  if [[ "$(kind_mode)" == local ]]; then
    kind_cli load docker-image --name "$KIND_CLUSTER" "$image" >/dev/null || return 1
  fi
  sed "s|image: IMAGE|image: $image|" tools/kind/metrics-server.yaml | k apply -f - >/dev/null
}

# kind_chart_args: the helm values of this machine's images.
kind_chart_args() {
  local repo="${PODKEEPER_IMAGE%:*}" tag="${PODKEEPER_IMAGE##*:}"
  echo --set image.repository="$repo" --set image.tag="$tag" --set image.pullPolicy=Never
  echo --set zookeeper.embedded.enabled=true --set operator.logFormat=text --set operator.clusterId=kind
  if [[ "$(kind_mode)" == local ]]; then
    echo --set zookeeper.embedded.image.repository="${ZK_IMAGE%:*}" \
      --set zookeeper.embedded.image.tag="${ZK_IMAGE##*:}" --set zookeeper.embedded.image.pullPolicy=Never
  fi
}

# kind_install_chart <timeout> [helm args...]
kind_install_chart() {
  local timeout="${1:-300}"
  shift || true
  # Helm installs crds/ only once and never upgrades them: apply the current CRD first.
  log "applying the ServiceRegistration CRD"
  k apply --server-side -f charts/podkeeper/crds/ >/dev/null
  log "helm upgrade --install $KIND_RELEASE (namespace $KIND_NAMESPACE, embedded ZooKeeper)"
  # shellcheck disable=SC2046
  kind_helm upgrade --install "$KIND_RELEASE" charts/podkeeper --namespace "$KIND_NAMESPACE" \
    --create-namespace $(kind_chart_args) "$@" >/dev/null
  k -n "$KIND_NAMESPACE" rollout status "statefulset/$KIND_ZK_SERVICE" --timeout="${timeout}s" >/dev/null
  k -n "$KIND_NAMESPACE" rollout status "deployment/$KIND_RELEASE" --timeout="${timeout}s" >/dev/null
  log "operator and ZooKeeper are ready"
}

kind_cluster_down() {
  if kind_cluster_exists; then
    log "deleting kind cluster $KIND_CLUSTER"
    kind_cli delete cluster --name "$KIND_CLUSTER" --kubeconfig "$KIND_KUBECONFIG"
  else
    log "no kind cluster $KIND_CLUSTER"
  fi
  rm -f "$KIND_KUBECONFIG"
}

show_tree() {
  # The image has no shell: run the binary itself; it reads PODKEEPER_ZK_CONNECT from the
  # container's environment.
  k -n "$KIND_NAMESPACE" exec "deploy/$KIND_RELEASE" -- /podkeeper tree /podkeeper
}

# resolve_in_pod <resolve args...>: `podkeeper resolve` in a throwaway client pod (its log is
# read after it ends: attaching to so short a container loses the output).
resolve_in_pod() {
  local name="podkeeper-client-$$-$RANDOM" rc=0
  k -n "$KIND_NAMESPACE" run "$name" --restart=Never --image="$PODKEEPER_IMAGE" --image-pull-policy=Never \
    --env="PODKEEPER_ZK_CONNECT=$KIND_ZK_CONNECT" -- resolve "$@" >/dev/null
  k -n "$KIND_NAMESPACE" wait "pod/$name" --for=jsonpath='{.status.phase}'=Succeeded --timeout=60s >/dev/null || rc=1
  k -n "$KIND_NAMESPACE" logs "pod/$name"
  k -n "$KIND_NAMESPACE" delete pod "$name" --wait=false >/dev/null
  return "$rc"
}

# zk_port_forward: forwards a free loopback port to the embedded ZooKeeper; sets ZK_PF_PID and
# ZK_PF_PORT. Stop it with zk_port_forward_stop.
zk_port_forward() {
  ZK_PF_PORT="$(pk_free_port 21810)"
  k -n "$KIND_NAMESPACE" port-forward --address 127.0.0.1 "svc/$KIND_ZK_SERVICE" "$ZK_PF_PORT:2181" \
    >"$KIND_STATE/logs/port-forward.log" 2>&1 &
  ZK_PF_PID=$!
  pk_wait_until 30 0.2 pk_port_open "$ZK_PF_PORT" || { zk_port_forward_stop; pk_die "port-forward to ZooKeeper failed"; }
}
zk_port_forward_stop() {
  [[ -n "${ZK_PF_PID:-}" ]] && kill "$ZK_PF_PID" 2>/dev/null && wait "$ZK_PF_PID" 2>/dev/null
  ZK_PF_PID=""
  return 0
}

# resolve_from_host <resolve args...>: the host's release binary through a port-forward.
resolve_from_host() {
  local bin; bin="$(kind_target_dir)/release/podkeeper"; local rc=0
  [[ -x "$bin" ]] || return 1
  zk_port_forward
  PODKEEPER_ZK_CONNECT="127.0.0.1:$ZK_PF_PORT" "$bin" resolve "$@" || rc=$?
  zk_port_forward_stop
  return "$rc"
}
