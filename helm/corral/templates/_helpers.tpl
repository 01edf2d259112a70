{{/*
The chart name, or nameOverride.
*/}}
{{- define "corral.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects (63 characters at most: some Kubernetes name fields are
limited to this by the DNS naming spec). A release name that already contains the chart name is
used as it is.
*/}}
{{- define "corral.fullname" -}}
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

{{/*
helm.sh/chart: chart name and version.
*/}}
{{- define "corral.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: only what never changes on upgrade (a Deployment's selector is immutable).
*/}}
{{- define "corral.selectorLabels" -}}
app.kubernetes.io/name: {{ include "corral.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels of every object (Helm's recommended app.kubernetes.io/* set).
*/}}
{{- define "corral.labels" -}}
helm.sh/chart: {{ include "corral.chart" . }}
{{ include "corral.selectorLabels" . }}
app.kubernetes.io/version: {{ (default .Chart.AppVersion .Values.image.tag) | toString | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/part-of: corral
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels of one component: call with (dict "ctx" $ "component" "controller").
*/}}
{{- define "corral.componentLabels" -}}
{{ include "corral.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Selector labels of the controller pods.
*/}}
{{- define "corral.controllerSelectorLabels" -}}
{{ include "corral.selectorLabels" . }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "corral.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "corral.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "corral.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{- define "corral.rayImage" -}}
{{- printf "%s:%s" .Values.rayCluster.image.repository (default .Chart.AppVersion .Values.rayCluster.image.tag | toString) }}
{{- end }}

{{/*
The Secret holding the bootstrap admin token: auth.existingSecret, or the generated one.
*/}}
{{- define "corral.adminSecretName" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecret }}
{{- else }}
{{- printf "%s-admin-token" (include "corral.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "corral.rayClusterName" -}}
{{- default (printf "%s-ray" (include "corral.fullname" .) | trunc 47 | trimSuffix "-") .Values.rayCluster.name }}
{{- end }}

{{/*
The Ray GCS address the controller connects to: the bundled RayCluster's head service (KubeRay
names it <cluster>-head-svc; the GCS listens on 6379), else ray.address.
*/}}
{{- define "corral.rayAddress" -}}
{{- if .Values.rayCluster.enabled }}
{{- printf "%s-head-svc.%s.svc:6379" (include "corral.rayClusterName" .) .Release.Namespace }}
{{- else }}
{{- required "ray.address: give the GCS address (host:port) of an existing Ray cluster, or set rayCluster.enabled=true" .Values.ray.address }}
{{- end }}
{{- end }}

{{/*
The PersistentVolumeClaim of the SQLite store.
*/}}
{{- define "corral.sqliteClaimName" -}}
{{- default (printf "%s-store" (include "corral.fullname" .)) .Values.store.sqlite.existingClaim }}
{{- end }}

{{/*
The cluster file (YAML) built from config.*: the keys are the cluster file's own.
*/}}
{{- define "corral.clusterFile" -}}
{{- $c := .Values.config }}
{{- $doc := dict "regions" $c.regions }}
{{- if $c.queues }}{{ $_ := set $doc "queues" $c.queues }}{{ end }}
{{- if $c.priorityClasses }}{{ $_ := set $doc "priority_classes" $c.priorityClasses }}{{ end }}
{{- if $c.policy }}{{ $_ := set $doc "policy" $c.policy }}{{ end -}}
{{- if not (kindIs "invalid" $c.defaultTimeLimitS) }}{{ $_ := set $doc "default_time_limit_s" $c.defaultTimeLimitS }}{{ end -}}
# Corral cluster file, rendered by the Helm chart from config.* (checked by `corral serve` at start).
{{ toYaml $doc }}
{{- end }}

{{/*
Checks that a schema cannot express in one place; each fails with one line naming the value.
*/}}
{{- define "corral.validate" -}}
{{- if and (eq .Values.store.type "sqlite") (gt (int .Values.controller.replicas) 1) }}
{{- fail (printf "store.type=sqlite supports controller.replicas=1 only (got %d): set controller.replicas=1 or use store.type=postgresql" (int .Values.controller.replicas)) }}
{{- end }}
{{- if and (eq .Values.store.type "postgresql") (not .Values.store.postgresql.existingSecret) }}
{{- fail "store.postgresql.existingSecret: name the Secret holding the PostgreSQL URL (kubectl create secret generic corral-db --from-literal=url=postgresql://...), or use store.type=sqlite with controller.replicas=1" }}
{{- end }}
{{- if and (eq .Values.ray.auth.mode "token") (not .Values.ray.auth.existingSecret) }}
{{- fail "ray.auth.existingSecret: ray.auth.mode=token needs the Secret holding Ray's token" }}
{{- end }}
{{- $_ := include "corral.rayAddress" . }}
{{- end }}
