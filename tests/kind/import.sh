# shellcheck shell=bash
# The kind suite's RegistryImport test (sourced by tests/kind/run, whose helpers it uses): two
# "VMs" outside the cluster, demo-app containers on the kind docker network that register
# themselves in the embedded ZooKeeper as Spring Cloud ZooKeeper instances; a pod calls them
# by the imported Service's DNS name through the real kube-proxy, and follows one's departure.

IMPORT_NS=kt-import
IMPORT_SERVICE=orders

# import_on: the operator runs the reverse mirror (chart value import.enabled). test_helm_upgrade
# turns it on; run alone, this test does the same upgrade.
import_on() {
  local env
  env="$(k -n "$KIND_NAMESPACE" get deploy "$KIND_RELEASE" \
    -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="PODKEEPER_IMPORT")].value}')"
  [[ "$env" == true ]] && return 0
  echo "  helm upgrade --reuse-values --set import.enabled=true"
  kind_helm upgrade "$KIND_RELEASE" charts/podkeeper -n "$KIND_NAMESPACE" --reuse-values \
    --set import.enabled=true >/dev/null || fail "helm upgrade"
  wait_for 180 "operator with the import rolled out" \
    k -n "$KIND_NAMESPACE" rollout status "deploy/$KIND_RELEASE" --timeout=5s
}

# vm_start <name> <zk host:port>: a demo-app container on the node's docker network, serving
# "<name>" on :8080 and registered at /services/orders/<name> with its own address, as the
# Spring Cloud ZooKeeper application on a VM would be (Curator instance, ZookeeperInstance payload).
vm_start() {
  local name="$1" zk="$2" net data
  net="$(docker inspect -f '{{range $n, $_ := .NetworkSettings.Networks}}{{$n}}{{end}}' "$KIND_NODE")"
  data="$(jq -cn --arg id "$name" --arg svc "$IMPORT_SERVICE" --argjson t "$(date +%s%3N)" '{
    name: $svc, id: $id, address: "{ip}", port: 8080, sslPort: null,
    payload: {"@class": "org.springframework.cloud.zookeeper.discovery.ZookeeperInstance",
              id: $id, name: $svc, metadata: {instance_status: "UP"}},
    registrationTimeUTC: $t, serviceType: "DYNAMIC",
    uriSpec: {parts: [{value: "scheme", variable: true}, {value: "://", variable: false},
                      {value: "address", variable: true}, {value: ":", variable: false},
                      {value: "port", variable: true}]},
    enabled: true}')"
  docker run -d --name "$KIND_CLUSTER-$name" --network "$net" --label podkeeper.kind.vm="$KIND_CLUSTER" \
    -e POD_NAME="$name" -e SHUTDOWN_DELAY=5s -e REGISTER_ZK="$zk" \
    -e REGISTER_PATH="/services/$IMPORT_SERVICE/$name" -e REGISTER_DATA="$data" \
    "$DEMO_APP_IMAGE" serve >/dev/null || fail "docker run $name"
}
vm_stopped() { [[ "$(docker inspect -f '{{.State.Running}}' "$KIND_CLUSTER-$1")" == false ]]; }
vm_ip() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$KIND_CLUSTER-$1"; }
vms_remove() { docker ps -aq --filter label=podkeeper.kind.vm="$KIND_CLUSTER" | xargs -r docker rm -f >/dev/null; }

# slice_addresses: the ready addresses in the imported Service's EndpointSlices, sorted.
slice_addresses() {
  k -n "$IMPORT_NS" get endpointslices -l kubernetes.io/service-name="$IMPORT_SERVICE" -o json \
    | jq -r '[.items[].endpoints[]? | select(.conditions.ready) | .addresses[]] | sort | join(" ")'
}
slice_is() { [[ "$(slice_addresses)" == "$1" ]]; }
registered() { local out; out="$(zk "/services/$IMPORT_SERVICE")" && [[ "$(grep -c "^/services/$IMPORT_SERVICE/" <<<"$out")" == "$1" ]]; }

# calls <n>: n GETs of the Service by DNS from the client pod, each on a new connection.
calls() { k -n "$IMPORT_NS" exec client -- /demo-app call "http://$IMPORT_SERVICE.$IMPORT_NS.svc.cluster.local/" "$1"; }
none_failed() { local out; out="$(calls "$1")" && ! grep -q '^error' <<<"$out"; }
# only_from <vm> <n>: all n calls answered by <vm>, none failed; every answer is kept in
# $FAILOVER_CALLS.
only_from() {
  local out; out="$(calls "$2")" || return 1
  sed 1d <<<"$out" >>"$FAILOVER_CALLS"
  [[ "$(sed 1d <<<"$out" | sort -u)" == "$1" ]]
}

test_registry_import() {
  local ns=$IMPORT_NS zk ip1 ip2 out t
  trap vms_remove EXIT
  import_on
  zk="$(zk_outside)" || fail "no NodePort to ZooKeeper"
  echo "  ZooKeeper for programs outside the cluster: $zk (NodePort)"
  k create namespace "$ns" >/dev/null || fail "namespace $ns (left by an earlier run?)"
  k apply -f - >/dev/null <<EOF
apiVersion: podkeeper.io/v1alpha1
kind: RegistryImport
metadata: {name: $IMPORT_SERVICE, namespace: $ns}
spec:
  source: {curator: {serviceName: $IMPORT_SERVICE}}
  service: {name: $IMPORT_SERVICE, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: $ns}
spec:
  containers:
  - name: client
    image: $DEMO_APP_IMAGE
    imagePullPolicy: IfNotPresent
    args: [serve]
    securityContext: {runAsNonRoot: true, runAsUser: 65532, readOnlyRootFilesystem: true,
                      allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
EOF
  vm_start vm-1 "$zk"; vm_start vm-2 "$zk"
  ip1="$(vm_ip vm-1)"; ip2="$(vm_ip vm-2)"
  echo "  VMs outside the cluster: vm-1 $ip1, vm-2 $ip2 (containers on the kind network)"
  wait_for 30 "both VMs registered in ZooKeeper" registered 2
  wait_for 30 "EndpointSlices of Service $IMPORT_SERVICE hold both VMs" \
    slice_is "$(printf '%s\n' "$ip1" "$ip2" | sort | xargs)"
  wait_for 30 "RegistryImport Ready" k -n "$ns" wait "regimport/$IMPORT_SERVICE" --for=condition=Ready --timeout=5s
  [[ "$(k -n "$ns" get regimport "$IMPORT_SERVICE" -o jsonpath='{.status.imported}/{.status.leftOut}')" == 2/0 ]] \
    || fail "status: $(k -n "$ns" get regimport "$IMPORT_SERVICE" -o jsonpath='{.status}')"
  wait_for 60 "client pod Ready" pod_ready "$ns" client True

  local cluster_ip
  cluster_ip="$(k -n "$ns" get svc "$IMPORT_SERVICE" -o jsonpath='{.spec.clusterIP}')"
  # kube-proxy programs the new Service a moment after its slices: until then it refuses.
  wait_for 20 "kube-proxy forwards the Service (5 calls, none refused)" none_failed 5
  out="$(calls 20)" || fail "demo-app call"
  [[ "$(head -1 <<<"$out")" == "resolved $IMPORT_SERVICE.$ns.svc.cluster.local $cluster_ip" ]] \
    || fail "DNS: $(head -1 <<<"$out"), ClusterIP $cluster_ip"
  echo "  $IMPORT_SERVICE.$ns.svc.cluster.local resolves to the ClusterIP $cluster_ip"
  local answers; answers="$(sed 1d <<<"$out" | sort | uniq -c | xargs)"
  echo "  20 calls through kube-proxy: $answers"
  [[ "$(sed 1d <<<"$out" | sort -u | xargs)" == "vm-1 vm-2" ]] || fail "expected answers from both VMs"

  echo "  stopping vm-1 (SIGTERM: it deregisters, then serves 5 s more and exits)"
  t=$EPOCHREALTIME
  docker kill --signal TERM "$KIND_CLUSTER-vm-1" >/dev/null
  wait_for 10 "vm-1 deregistered from ZooKeeper" registered 1
  wait_for 10 "vm-1 gone from the EndpointSlices" slice_is "$ip2"
  echo "  slices changed $(awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }') s after the SIGTERM"
  FAILOVER_CALLS="$(mktemp)"
  wait_for 20 "every call answered by vm-2" only_from vm-2 10
  echo "  calls on vm-2 only $(awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s after the SIGTERM"
  ! grep -q '^error' "$FAILOVER_CALLS" || fail "calls failed during the failover: $(sort "$FAILOVER_CALLS" | uniq -c | xargs)"
  echo "  no call failed meanwhile ($(wc -l <"$FAILOVER_CALLS") calls: $(sort "$FAILOVER_CALLS" | uniq -c | xargs))"
  rm -f "$FAILOVER_CALLS"
  wait_for 30 "vm-1 exited" vm_stopped vm-1
  out="$(calls 20)" || fail "demo-app call"
  [[ "$(sed 1d <<<"$out" | sort | uniq -c | xargs)" == "20 vm-2" ]] \
    || fail "after vm-1 exited: $(sed 1d <<<"$out" | sort | uniq -c | xargs)"
  echo "  vm-1 exited: 20 of 20 calls answered by vm-2, none failed"
  k delete namespace "$ns" --wait=false >/dev/null
}
