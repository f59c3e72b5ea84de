# shellcheck shell=bash
# The kind suite's load test (sourced by tests/kind/run, whose helpers it uses): metrics-server
# on the cluster, one pod that really burns CPU beside idle ones, and spec.load moving weight
# away from it in ZooKeeper while the groups' shares stay exact; the Spring view is read with
# the real Curator library (tests/clients) from the host.

LOAD_NS=kt-load

# load_deployment <name> <track> <burn>: one demo-app pod requesting 50m CPU; with burn=true
# it spins, held to 200m by its limit (utilization 400 % of the request, the idle ones ~1 %).
load_deployment() {
  cat <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: $1, namespace: $LOAD_NS}
spec:
  replicas: 1
  selector: {matchLabels: {app: web, track: $2, role: $1}}
  template:
    metadata: {labels: {app: web, track: $2, role: $1}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: $DEMO_APP_IMAGE
        imagePullPolicy: IfNotPresent
        args: [serve]
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: BURN_CPU, value: "$3"}
        - {name: SHUTDOWN_DELAY, value: 0s}
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /ready, port: http}
          periodSeconds: 1
        resources:
          requests: {cpu: 50m}
          limits: {cpu: 200m}
        securityContext: {runAsNonRoot: true, runAsUser: 65532, readOnlyRootFilesystem: true,
                          allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
---
EOF
}

# curator_classpath: tests/clients' Curator module, built by Maven (from ~/.m2 or Maven Central)
# once per hash of tests/clients into $KIND_STATE/clients-<hash>; prints its java classpath.
curator_classpath() {
  local dir work
  dir="$KIND_STATE/clients-$(inputs_hash tests/clients)"
  if [[ ! -f "$dir/.built" ]]; then
    work="$(mktemp -d "$KIND_STATE/clients.XXXXXX")"
    cp -r tests/clients/. "$work/"
    if ! (cd "$work" && nice -n 10 mvn -B -q -pl curator -am package -DskipTests) >"$work.log" 2>&1; then
      tail -30 "$work.log" >&2; rm -rf "$work" "$work.log"; return 1
    fi
    rm -f "$work.log"
    touch "$work/.built"
    rm -rf "$dir"; mv "$work" "$dir"
  fi
  echo "$dir/curator/target/curator-0.jar:$(cat "$dir/curator/target/classpath.txt")"
}

# weight_of <pod>: its weight in the native records.
weight_of() { endpoints "$LOAD_NS" | awk -v p="$1" '$1 == p { print $3 }'; }
# shares_exact: the groups' budgets, 9 and 1 × 10,000, to the unit.
shares_exact() {
  local e; e="$(endpoints "$LOAD_NS")" || return 1
  [[ "$(awk '$1 ~ /^stable-/ { s += $3 } END { print s + 0 }' <<<"$e")" == 90000 ]] \
    && [[ "$(awk '$1 ~ /^canary-/ { s += $3 } END { print s + 0 }' <<<"$e")" == 10000 ]]
}
# hot_below_peer: the burning pod's weight below its group peer's, shares exact.
hot_below_peer() {
  local hot idle
  hot="$(weight_of "$HOT")" && idle="$(weight_of "$IDLE")" && [[ -n "$hot" && -n "$idle" ]] \
    && (( hot < idle )) && shares_exact
}
pod_usage() { k get --raw "/apis/metrics.k8s.io/v1beta1/namespaces/$LOAD_NS/pods/$1" | jq -e '.containers | length > 0'; }

# curator_view: "pod weight" per instance of /services/web as Curator 5.9's ServiceDiscovery
# with Spring's ZookeeperInstance reads it (metadata "weight"); the instance id is
# <pod>-<8 hex>. Without java and mvn, the same JSON read from the znodes.
curator_view() {
  if [[ -n "${CURATOR_CP:-}" ]]; then
    java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp "$CURATOR_CP" \
      io.podkeeper.clients.CuratorClient query "$ZK_OUTSIDE" /services web \
      | jq -r 'if .error then error(.error) else .instances[] | "\(.id[:-9]) \(.metadata.weight)" end'
  else
    zk /services/web | awk 'NR > 1 { $1 = $2 = $3 = ""; print }' | jq -r '"\(.id[:-9]) \(.payload.metadata.weight)"'
  fi
}
# curator_agrees: every instance's Spring weight is its native weight scaled to a sum of at
# most 10,000 (here ÷ 10, halves up), read while the native weights held still.
curator_agrees() {
  local before after view
  before="$(endpoints "$LOAD_NS" | sort)" && view="$(curator_view | sort)" && after="$(endpoints "$LOAD_NS" | sort)" \
    || return 1
  [[ "$before" == "$after" ]] || return 1
  [[ "$(awk '{ print $1, int(($3 + 5) / 10) }' <<<"$before")" == "$view" ]] || return 1
  CURATOR_SEEN="$view"
}

test_load_weights() {
  local ns=$LOAD_NS t
  t=$SECONDS
  kind_metrics_server_up 2>/dev/null || fail "metrics-server"
  if command -v java >/dev/null && command -v mvn >/dev/null; then
    CURATOR_CP="$(curator_classpath)" || fail "building tests/clients/curator"
    ZK_OUTSIDE="$(zk_outside)" || fail "no NodePort to ZooKeeper"
    echo "  Curator client built; it reads ZooKeeper from the host at $ZK_OUTSIDE (NodePort)"
  else
    echo "  no java or mvn here: the Curator instances are read from the znodes instead of by Curator"
  fi
  k create namespace "$ns" >/dev/null || fail "namespace $ns (left by an earlier run?)"
  # A namespace publishes a Curator service only with a platform's grant.
  { cat <<EOF
apiVersion: podkeeper.io/v1alpha1
kind: RegistryPolicy
metadata: {name: $ns}
spec: {namespaces: [$ns], curatorServices: [/services/web]}
---
EOF
    load_deployment stable-hot stable true; load_deployment stable-idle stable false
    load_deployment canary canary false; cat <<EOF
apiVersion: podkeeper.io/v1alpha1
kind: ServiceRegistration
metadata: {name: web, namespace: $ns}
spec:
  selector: {matchLabels: {app: web}}
  port: http
  weights:
    groups:
    - {name: stable, selector: {matchLabels: {track: stable}}, share: 9}
    - {name: canary, selector: {matchLabels: {track: canary}}, share: 1}
  registries:
  - format: Native
  - {format: Curator, curator: {}}
  load:
    metrics:
    - type: Resource
      resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
    periodSeconds: 10
    blackoutSeconds: 0
EOF
  } | k apply -f - >/dev/null || fail "applying the workload"
  local d
  for d in stable-hot stable-idle canary; do
    wait_for 120 "$d Ready" k -n "$ns" rollout status "deploy/$d" --timeout=5s
  done
  HOT="$(live_pods "$ns" role=stable-hot)"; IDLE="$(live_pods "$ns" role=stable-idle)"
  wait_for 30 "3 endpoints UP in ZooKeeper" has_up "$ns" 3
  shares_exact || fail "declared weights: $(endpoints "$ns")"
  echo "  declared: $(endpoints "$ns" | awk '{ printf "%s %s; ", $1, $3 }')"
  wait_for 120 "metrics.k8s.io has the hot pod's usage" pod_usage "$HOT"
  wait_for 60 "metrics.k8s.io has its peer's usage" pod_usage "$IDLE"
  k -n "$ns" top pods --no-headers | sed 's/^/  top: /'
  wait_for 60 "the hot pod's weight below its peer's, shares exact" hot_below_peer
  echo "  load-weighted: $(endpoints "$ns" | awk '{ printf "%s %s; ", $1, $3 }')"
  echo "  status.load: $(k -n "$ns" get svcreg web -o jsonpath='{.status.load}')"
  zk "/podkeeper/$ns/web/endpoints/$HOT" | awk '{ $1 = $2 = $3 = ""; print }' | jq -e '.declaredWeight' >/dev/null \
    || fail "the hot pod's record lacks declaredWeight"
  wait_for 30 "the Curator view shows the native weights ÷ 10" curator_agrees
  echo "  Curator (Spring metadata weight): $(tr '\n' ';' <<<"$CURATOR_SEEN")"
  echo "  from metrics-server's start to the Curator view: $((SECONDS - t)) s"
  k delete namespace "$ns" --wait=false >/dev/null
  k delete registrypolicy "$ns" --wait=false >/dev/null
}
