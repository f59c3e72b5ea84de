{{/* Names, labels and the few derived settings the templates share. */}}

{{- define "podkeeper.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or the release name alone when it already contains the chart name. */}}
{{- define "podkeeper.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "podkeeper.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "podkeeper.labels" -}}
helm.sh/chart: {{ include "podkeeper.chart" . }}
{{ include "podkeeper.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "podkeeper.selectorLabels" -}}
app.kubernetes.io/name: {{ include "podkeeper.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "podkeeper.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "podkeeper.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "podkeeper.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* "true" when leader election is on: by default (null), whatever the replica count, so that
an upgrade or `kubectl scale` from one replica to two never runs an unfenced writer. */}}
{{- define "podkeeper.leaderElect" -}}
{{- $le := .Values.leaderElection.enabled }}
{{- if kindIs "invalid" $le }}
{{- "true" }}
{{- else }}
{{- ternary "true" "false" (eq (toString $le) "true") }}
{{- end }}
{{- end }}

{{- define "podkeeper.leaseName" -}}
{{- default (include "podkeeper.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* Embedded ZooKeeper names and labels. */}}
{{- define "podkeeper.zookeeper.fullname" -}}
{{- printf "%s-zookeeper" (include "podkeeper.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "podkeeper.zookeeper.selectorLabels" -}}
app.kubernetes.io/name: {{ include "podkeeper.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: zookeeper
{{- end }}

{{- define "podkeeper.zookeeper.labels" -}}
helm.sh/chart: {{ include "podkeeper.chart" . }}
{{ include "podkeeper.zookeeper.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The connect string: the explicit one, else the embedded server's Service. */}}
{{- define "podkeeper.zookeeper.connect" -}}
{{- if .Values.zookeeper.connect }}
{{- .Values.zookeeper.connect }}
{{- else if .Values.zookeeper.embedded.enabled }}
{{- printf "%s.%s.svc:%d" (include "podkeeper.zookeeper.fullname" .) .Release.Namespace (int .Values.zookeeper.embedded.port) }}
{{- else }}
{{- fail "zookeeper.connect is required (or set zookeeper.embedded.enabled=true)" }}
{{- end }}
{{- end }}

{{/* Cross-field rules, also enforced by values.schema.json; kept here for --skip-schema-validation. */}}
{{- define "podkeeper.validate" -}}
{{- if and (eq .Values.rbac.scope "namespaced") (empty .Values.watchNamespaces) }}
{{- fail "rbac.scope=namespaced needs watchNamespaces: the namespaces to watch, e.g. --set 'watchNamespaces={team-a,team-b}'" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (eq (include "podkeeper.leaderElect" .) "false") }}
{{- fail "replicaCount > 1 needs leaderElection.enabled (true or null): without a leader every replica would write to ZooKeeper" }}
{{- end }}
{{- end }}

{{/* What the operator may do in a watched namespace (ClusterRole or per-namespace Role). */}}
{{- define "podkeeper.workloadRules" -}}
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
# Node ports of the Services named by spec.address (mode NodePort).
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch]
{{- if .Values.rbac.readinessGate }}
# The podkeeper.io/registered pod condition (readiness gate): the status subresource only.
- apiGroups: [""]
  resources: [pods/status]
  verbs: [patch]
{{- end }}
{{- if .Values.rbac.loadMetrics }}
# spec.load: pods' usage (metrics.k8s.io).
- apiGroups: [metrics.k8s.io]
  resources: [pods]
  verbs: [get, list]
{{- end }}
{{- with .Values.rbac.customMetrics }}
# spec.load Pods metrics, by name (no wildcard): custom.metrics.k8s.io pods/<metric>.
- apiGroups: [custom.metrics.k8s.io]
  resources: [{{ range $i, $m := . }}{{ if $i }}, {{ end }}pods/{{ $m }}{{ end }}]
  verbs: [get]
{{- end }}
- apiGroups: [podkeeper.io]
  resources: [serviceregistrations]
  verbs: [get, list, watch, patch, update]
- apiGroups: [podkeeper.io]
  resources: [serviceregistrations/status]
  verbs: [get, patch, update]
- apiGroups: [podkeeper.io]
  resources: [serviceregistrations/finalizers]
  verbs: [update]
- apiGroups: [events.k8s.io, ""]
  resources: [events]
  verbs: [create, patch]
{{- if .Values.import.enabled }}
# The reverse mirror (import.enabled): RegistryImports, the Services they create (server-side
# apply: create and patch; delete only for a Service an import created under a name its spec no
# longer gives, labelled for it and owned by it: owner references remove the rest) and their slices.
- apiGroups: [podkeeper.io]
  resources: [registryimports]
  verbs: [get, list, watch]
- apiGroups: [podkeeper.io]
  resources: [registryimports/status]
  verbs: [get, patch]
# Owner references that block the owner's deletion need this.
- apiGroups: [podkeeper.io]
  resources: [registryimports/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [services]
  verbs: [create, patch, delete]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch, create, update, delete]
{{- end }}
{{- end }}
