#!/usr/bin/env bash
# Smoke test of the local cluster and the kwok Stage contract
# (examples/cluster/kwok-stages.yaml). Needs `scripts/cluster up` first.
# Prints the latency from each annotation to the observed status change.
# Usage: examples/cluster/smoke-test.sh   (uses and then deletes namespace pk-smoke)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
eval "$("$ROOT/scripts/cluster" env)"
NS=pk-smoke
k() { kubectl -n "$NS" "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2fs", b - a }'; }
step() { printf '%-64s' "$1"; }

kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null
trap 'kubectl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true' EXIT

[[ "$(kubectl get nodes -l type=kwok --no-headers | grep -c ' Ready ')" == 3 ]] || { echo "FAIL: 3 Ready kwok nodes expected"; exit 1; }

step "deployment with 3 replicas -> 3 pods Running+Ready"
t=$(now)
k create deployment web --image=example.invalid/web:1 --replicas=3 >/dev/null
k rollout status deploy/web --timeout=60s >/dev/null
echo "ok $(since "$t")"
k get pods -o jsonpath='{range .items[*]}  {.metadata.name} {.status.phase} ready={.status.conditions[?(@.type=="Ready")].status} ip={.status.podIP} node={.spec.nodeName} host={.status.hostIP}{"\n"}{end}'
ips="$(k get pods -o jsonpath='{range .items[*]}{.status.podIP}{"\n"}{end}' | sort -u | grep -c .)"
[[ "$ips" == 3 ]] || { echo "FAIL: pod IPs not unique"; exit 1; }

pod="$(k get pods -o jsonpath='{.items[0].metadata.name}')"
step "pod annotate test-state=NotReady -> Ready=False"
t=$(now); k annotate pod "$pod" podkeeper.io/test-state=NotReady --overwrite >/dev/null
k wait --for=condition=Ready=false "pod/$pod" --timeout=30s >/dev/null; echo "ok $(since "$t")"
step "pod annotate test-state=Ready -> Ready=True"
t=$(now); k annotate pod "$pod" podkeeper.io/test-state=Ready --overwrite >/dev/null
k wait --for=condition=Ready=true "pod/$pod" --timeout=30s >/dev/null; echo "ok $(since "$t")"
step "pod annotate test-state=Failed -> phase Failed"
t=$(now); k annotate pod "$pod" podkeeper.io/test-state=Failed --overwrite >/dev/null
k wait --for=jsonpath='{.status.phase}'=Failed "pod/$pod" --timeout=30s >/dev/null; echo "ok $(since "$t")"

step "pod created with test-state=NotReady -> Running, never Ready"
k run never-ready --image=example.invalid/x --annotations=podkeeper.io/test-state=NotReady >/dev/null
k wait --for=jsonpath='{.status.phase}'=Running pod/never-ready --timeout=30s >/dev/null
sleep 1
[[ "$(k get pod never-ready -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == False ]] || { echo FAIL; exit 1; }
echo ok

step "pod delete (grace period 2s) -> Terminating, then gone"
pod="$(k get pods -l app=web --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}')"
t=$(now); k delete pod "$pod" --grace-period=2 --wait=false >/dev/null
k wait --for=delete "pod/$pod" --timeout=30s >/dev/null; echo "ok $(since "$t")"
step "pod delete (grace period 0, --force) -> gone"
pod="$(k get pods -l app=web --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}')"
t=$(now); k delete pod "$pod" --grace-period=0 --force --wait=false >/dev/null 2>&1
k wait --for=delete "pod/$pod" --timeout=30s >/dev/null 2>&1 || true; echo "ok $(since "$t")"

node=kwok-node-2
step "node annotate test-state=NotReady -> node Ready=False"
t=$(now); kubectl annotate node "$node" podkeeper.io/test-state=NotReady --overwrite >/dev/null
kubectl wait --for=condition=Ready=false "node/$node" --timeout=30s >/dev/null; echo "ok $(since "$t")"
step "node annotation removed -> node Ready=True"
t=$(now); kubectl annotate node "$node" podkeeper.io/test-state- >/dev/null
kubectl wait --for=condition=Ready=true "node/$node" --timeout=30s >/dev/null; echo "ok $(since "$t")"
echo "smoke test passed"
