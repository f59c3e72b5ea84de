#!/usr/bin/env bash
# Builds the local test control plane from the Go module proxy into
# .cache/tools/bin/ (git-ignored):
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
#   kwok, helm, metrics-server
#
# Usage: tools/build.sh [--force] [--check]
#   --force  rebuild even if the stamp matches
#   --check  exit 0 if up to date, 1 if a build is needed (builds nothing)
#
# Rebuilds only when the wrapper modules under tools/ but tools/kind (go.mod, go.sum,
# *.go, this script) or the Go version change: their hash is kept in
# .cache/tools/stamp. Go's default GOCACHE/GOMODCACHE are used unless set.
# Env: PODKEEPER_TOOLS_DIR (default <repo>/.cache/tools), GO (default: go on
# PATH, else /usr/local/go/bin/go).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_SRC="$ROOT/tools"
OUT="${PODKEEPER_TOOLS_DIR:-$ROOT/.cache/tools}"
BIN="$OUT/bin"
STAMP="$OUT/stamp"

K8S_VERSION=v1.37.2
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm metrics-server)

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
[[ -x "$GO" ]] || { echo "tools/build.sh: go not found (set GO=...)" >&2; exit 1; }
export GOTOOLCHAIN=local CGO_ENABLED=0
# -mod=readonly: the committed go.sum must be complete; never edit go.mod here.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly"

force=0 check=0
for a in "$@"; do
  case "$a" in
    --force) force=1 ;;
    --check) check=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
  esac
done

hash_inputs() {
  (
    cd "$ROOT"
    "$GO" version
    # tools/kind is tools/kind/build-go.sh's (its own stamp): a change to the kind programs
    # must not relink the control plane.
    find tools -path tools/kind -prune -o -type f \( -name go.mod -o -name go.sum -o -name '*.go' -o -name build.sh \) -print \
      | LC_ALL=C sort | xargs sha256sum
  ) | sha256sum | cut -d' ' -f1
}

want="$(hash_inputs)"
up_to_date() {
  [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] || return 1
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done
}

if (( check )); then
  up_to_date && { echo "tools: up to date ($BIN)"; exit 0; }
  echo "tools: build needed"; exit 1
fi

# One build at a time (e.g. scripts/cluster up racing a manual build).
mkdir -p "$BIN"
exec 9>"$OUT/.lock"
if ! flock -n 9; then
  echo "tools: another tools/build.sh is running; waiting for it ..."
  flock 9
fi
if up_to_date && (( !force )); then
  echo "tools: up to date ($BIN)"
  exit 0
fi
rm -f "$STAMP"
T0=$SECONDS
LOG="$OUT/build.log"
: >"$LOG"
echo "tools: Go's output goes to $LOG"

# build <module dir> <output name> <package> [ldflags...]
build() {
  local dir="$1" name="$2" pkg="$3"; shift 3
  local t=$SECONDS
  echo "tools: [$((SECONDS - T0))s] building $name ($pkg) ..."
  # Go's own output (hundreds of "go: downloading" lines on a cold cache) goes to the log;
  # a failure shows its end.
  if ! (cd "$TOOLS_SRC/$dir" && "$GO" build -p 2 -trimpath -ldflags "-s -w $*" \
      -o "$BIN/.$name.tmp" "$pkg") >>"$LOG" 2>&1; then
    tail -n 40 "$LOG" >&2
    echo "tools: building $name failed; the whole output is in $LOG" >&2
    exit 1
  fi
  mv -f "$BIN/.$name.tmp" "$BIN/$name"
  echo "tools: [$((SECONDS - T0))s] built $name in $((SECONDS - t))s"
}

# module_time <module dir> <module@version>: the release's commit time from the
# module proxy (a reproducible build date), 1970-01-01T00:00:00Z if unknown.
module_time() {
  local t
  t="$(cd "$TOOLS_SRC/$1" && "$GO" mod download -json "$2" 2>/dev/null \
    | sed -n 's/.*"Info": "\(.*\)".*/\1/p' | xargs -r cat | sed -n 's/.*"Time":"\([^"]*\)".*/\1/p')"
  echo "${t:-1970-01-01T00:00:00Z}"
}

# Version stamping as in kubernetes' hack/lib/version.sh, for both
# component-base (servers) and client-go (kubectl client version).
k8s_ldflags=()
build_date="$(module_time k8s "k8s.io/kubernetes@$K8S_VERSION")"
major="${K8S_VERSION#v}"; major="${major%%.*}"
minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=(
    "-X $pkg.gitVersion=$K8S_VERSION"
    "-X $pkg.gitMajor=$major"
    "-X $pkg.gitMinor=$minor"
    "-X $pkg.gitTreeState=clean"
    "-X $pkg.buildDate=$build_date"
  )
done

build etcd etcd .
for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  build k8s "$c" "k8s.io/kubernetes/cmd/$c" "${k8s_ldflags[@]}"
done
build kwok kwok sigs.k8s.io/kwok/cmd/kwok
helm_version="$(cd "$TOOLS_SRC/helm" && "$GO" list -m -f '{{.Version}}' helm.sh/helm/v4)"
build helm helm helm.sh/helm/v4/cmd/helm \
  "-X helm.sh/helm/v4/internal/version.version=$helm_version" \
  "-X helm.sh/helm/v4/internal/version.gitTreeState=clean"
# metrics-server prints client-go's version (its Makefile stamps the same variables).
ms_version="$(cd "$TOOLS_SRC/metrics-server" && "$GO" list -m -f '{{.Version}}' sigs.k8s.io/metrics-server)"
build metrics-server metrics-server sigs.k8s.io/metrics-server/cmd/metrics-server \
  "-X k8s.io/client-go/pkg/version.gitVersion=$ms_version" \
  "-X k8s.io/client-go/pkg/version.gitTreeState=clean" \
  "-X k8s.io/client-go/pkg/version.buildDate=$(module_time metrics-server "sigs.k8s.io/metrics-server@$ms_version")"

echo "$want" > "$STAMP"
echo "tools: all built in $((SECONDS - T0))s into $BIN"
