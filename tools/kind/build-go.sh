#!/usr/bin/env bash
# Builds the Go programs of the kind setup into $PODKEEPER_KIND_STATE/bin (default
# ~/.cache/podkeeper-kind/bin, outside the clone), like tools/build.sh: from the Go module
# proxy, CGO off, rebuilt only when the inputs' hash (Go version, the go.mod/go.sum/*.go under
# tools/kind, this script) changes.
#
# Usage: tools/kind/build-go.sh upstream|local
#   upstream  demo-app and kind (a laptop that pulls kind's stock node image)
#   local     also everything the local node image needs: kubelet, kubeadm, kube-proxy
#             (tools/kind/k8s-node, version-stamped like tools/build.sh), containerd 2 with its shim and
#             ctr, crictl, CoreDNS with kubeadm's plugins, pause
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${PODKEEPER_KIND_STATE:-$HOME/.cache/podkeeper-kind}/bin"
K8S_VERSION=v1.37.2
mode="${1:-local}"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
export GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly"

hash_inputs() {
  (
    cd "$ROOT"
    "$GO" version
    echo "$mode"
    find tools/kind -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) \
      | LC_ALL=C sort | xargs sha256sum
    sha256sum tools/kind/build-go.sh
  ) | sha256sum | cut -d' ' -f1
}
want="$(hash_inputs)"
mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9
if [[ -f "$OUT/stamp" && "$(cat "$OUT/stamp")" == "$want" ]]; then
  echo "kind-go: up to date ($OUT)"
  exit 0
fi
rm -f "$OUT/stamp"
T0=$SECONDS

# build <module dir under tools> <output> <package> [ldflags...]
build() {
  local dir="$1" name="$2" pkg="$3"; shift 3
  local t=$SECONDS
  (cd "$ROOT/tools/$dir" && nice -n 10 "$GO" build -p 2 -trimpath -tags "no_btrfs no_devmapper no_zfs" \
    -ldflags "-s -w $*" -o "$OUT/.$name.tmp" "$pkg")
  mv -f "$OUT/.$name.tmp" "$OUT/$name"
  echo "kind-go: [$((SECONDS - T0))s] $name in $((SECONDS - t))s"
}

build kind/cmd demo-app ./demo-app
build kind/cmd zkstat ./zkstat
kind_version="$(cd "$ROOT/tools/kind/kind" && "$GO" list -m -f '{{.Version}}' sigs.k8s.io/kind)"
build kind/kind kind sigs.k8s.io/kind
if [[ "$mode" == local ]]; then
  build kind/cmd pause ./pause
  # kubeadm refuses unversioned binaries: stamp them as tools/build.sh does.
  major="${K8S_VERSION#v}"; major="${major%%.*}"
  minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
  stamp=()
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    stamp+=("-X $pkg.gitVersion=$K8S_VERSION" "-X $pkg.gitMajor=$major" "-X $pkg.gitMinor=$minor"
      "-X $pkg.gitTreeState=clean")
  done
  for c in kubelet kubeadm kube-proxy; do
    build kind/k8s-node "$c" "k8s.io/kubernetes/cmd/$c" "${stamp[@]}"
  done
  cd_version="$(cd "$ROOT/tools/kind/containerd" && "$GO" list -m -f '{{.Version}}' github.com/containerd/containerd/v2)"
  for c in containerd containerd-shim-runc-v2 ctr; do
    build kind/containerd "$c" "github.com/containerd/containerd/v2/cmd/$c" \
      "-X github.com/containerd/containerd/v2/version.Version=$cd_version"
  done
  build kind/crictl crictl sigs.k8s.io/cri-tools/cmd/crictl
  build kind/coredns coredns .
fi
echo "$want" >"$OUT/stamp"
echo "kind-go: built in $((SECONDS - T0))s ($kind_version)"
