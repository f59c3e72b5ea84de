#!/usr/bin/env bash
# Check of metrics.k8s.io on the local cluster (`scripts/cluster up` with a
# metrics-server binary): kwok pods with kwok.x-k8s.io/usage-cpu annotations show
# that CPU in `kubectl top pods`, and a changed annotation shows within one
# --metric-resolution (10s). Prints how long each step took.
# Usage: examples/cluster/metrics-test.sh   (uses and then deletes namespace pk-metrics)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
eval "$("$ROOT/scripts/cluster" env)"
NS=pk-metrics
k() { kubectl -n "$NS" "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
step() { printf '%-64s' "$1"; }
fail() { echo "FAIL: $*"; exit 1; }

# "<pod> <millicores>" per pod from metrics.k8s.io (CPU as n/u/m/cores, rounded to 1m).
pod_cpu() {
  k get pods.metrics.k8s.io -o jsonpath='{range .items[*]}{.metadata.name} {.containers[0].usage.cpu}{"\n"}{end}' 2>/dev/null \
    | awk '{ v = $2; u = substr(v, length(v)); n = v + 0
             m = u == "n" ? n / 1e6 : u == "u" ? n / 1e3 : u == "m" ? n : n * 1000
             printf "%s %d\n", $1, m + 0.5 }'
}
# cpu_is <pod> <millicores>: within 5m (kwok's rate is exact up to timing jitter).
cpu_is() { pod_cpu | awk -v p="$1" -v w="$2" '$1 == p && $2 >= w - 5 && $2 <= w + 5 { ok = 1 } END { exit !ok }'; }
# all_cpu <count> <millicores>
all_cpu() { [[ "$(pod_cpu | awk -v w="$2" '$2 >= w - 5 && $2 <= w + 5' | grep -c .)" -ge "$1" ]]; }
# poll <seconds> <command...>: every 0.25s until it passes.
poll() {
  local deadline=$(( SECONDS + $1 )); shift
  until "$@"; do (( SECONDS < deadline )) || return 1; sleep 0.25; done
}

[[ "$(kubectl get apiservice v1beta1.metrics.k8s.io -o jsonpath='{.status.conditions[?(@.type=="Available")].status}' 2>/dev/null)" == True ]] \
  || fail "APIService v1beta1.metrics.k8s.io not Available (is metrics-server built? scripts/cluster status)"

kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null
trap 'kubectl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true' EXIT

step "deployment of 3 pods (usage-cpu 250m) -> Running+Ready"
t=$(now)
k apply -f - >/dev/null <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 3
  selector: {matchLabels: {app: api}}
  template:
    metadata:
      labels: {app: api}
      annotations: {kwok.x-k8s.io/usage-cpu: 250m, kwok.x-k8s.io/usage-memory: 100Mi}
    spec:
      containers:
      - {name: app, image: example.invalid/api:1, resources: {requests: {cpu: 500m, memory: 128Mi}}}
EOF
k rollout status deploy/api --timeout=60s >/dev/null
echo "ok $(since "$t")"

# A new pod needs 2-3 scrapes: kwok's first counter value is 0, which metrics-server drops.
step "all 3 pods at 250m in metrics.k8s.io"
poll 90 all_cpu 3 250 || { pod_cpu; fail "not within 90s"; }
echo "ok $(since "$t") after the apply"
k top pods

pod="$(k get pods -l app=api -o jsonpath='{.items[0].metadata.name}')"
for want in 900 50; do
  step "annotate $pod usage-cpu=${want}m -> seen"
  t=$(now)
  k annotate --overwrite pod "$pod" "kwok.x-k8s.io/usage-cpu=${want}m" >/dev/null
  poll 30 cpu_is "$pod" "$want" || { pod_cpu; fail "not within 30s"; }
  echo "ok $(since "$t")"
done
[[ "$(pod_cpu | awk -v p="$pod" '$1 != p && $2 >= 245 && $2 <= 255' | grep -c .)" == 2 ]] \
  || { pod_cpu; fail "the other two pods no longer at 250m"; }
k top pods
kubectl top nodes
echo "PASS"
