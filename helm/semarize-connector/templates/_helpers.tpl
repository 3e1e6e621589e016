{{/* Chart name. */}}
{{- define "semarize-connector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name (<= 63 characters; the webhook Service adds "-webhooks"). */}}
{{- define "semarize-connector.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "semarize-connector.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "semarize-connector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "semarize-connector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "semarize-connector.labels" -}}
helm.sh/chart: {{ include "semarize-connector.chart" . }}
{{ include "semarize-connector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: semarize-connector
{{- end }}

{{- define "semarize-connector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "semarize-connector.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the API key and the webhook secret. */}}
{{- define "semarize-connector.secretName" -}}
{{- default (include "semarize-connector.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "semarize-connector.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "semarize-connector.webhooksEnabled" -}}
{{- if and .Values.config.webhooks .Values.config.webhooks.enabled }}true{{- end }}
{{- end }}

{{- define "semarize-connector.opsPort" -}}
{{- (.Values.config.ops | default dict).port | default 8000 | int }}
{{- end }}

{{- define "semarize-connector.webhooksPort" -}}
{{- (.Values.config.webhooks | default dict).port | default 8080 | int }}
{{- end }}

{{/* config.shutdown.grace_seconds rounded up (it may be fractional; 0 is valid). */}}
{{- define "semarize-connector.shutdownGrace" -}}
{{- $s := .Values.config.shutdown | default dict }}
{{- if hasKey $s "grace_seconds" }}
{{- $s.grace_seconds | float64 | ceil | int }}
{{- else }}
{{- 30 }}
{{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds: explicit, or shutdown grace + 15; always above the grace. */}}
{{- define "semarize-connector.terminationGrace" -}}
{{- $grace := include "semarize-connector.shutdownGrace" . | int }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $grace 15 }}
{{- else }}
{{- $t := .Values.terminationGracePeriodSeconds | int }}
{{- if le $t $grace }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than config.shutdown.grace_seconds (%v, rounded up: %d): the pod would be killed mid-drain" $t ((.Values.config.shutdown | default dict).grace_seconds | default 30) $grace) }}
{{- end }}
{{- $t }}
{{- end }}
{{- end }}

{{/* Upper bound for autoscalers: maxReplicas capped at the partition count. */}}
{{- define "semarize-connector.maxReplicas" -}}
{{- $max := .max | int }}
{{- $partitions := .root.Values.partitions | int }}
{{- if lt $partitions 1 }}
{{- fail "partitions must be set (total partitions of the input topics) when autoscaling or keda is enabled: replicas beyond it sit idle" }}
{{- end }}
{{- min $max $partitions }}
{{- end }}

{{/* PromQL label matchers selecting this release's series. */}}
{{- define "semarize-connector.promSelector" -}}
{{- if .Values.prometheusSelector }}
{{- .Values.prometheusSelector }}
{{- else }}
{{- printf "job=%q, namespace=%q" (include "semarize-connector.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/* Checks that span several values (the schema cannot express them). */}}
{{- define "semarize-connector.validate" -}}
{{- $partitions := .Values.partitions | int }}
{{- if and (gt $partitions 0) (gt (.Values.replicaCount | int) $partitions) }}
{{- fail (printf "replicaCount (%d) exceeds partitions (%d): the extra replicas would sit idle" (.Values.replicaCount | int) $partitions) }}
{{- end }}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled are mutually exclusive (KEDA manages its own HPA)" }}
{{- end }}
{{- range $name, $as := dict "autoscaling" .Values.autoscaling "keda" .Values.keda }}
{{- if $as.enabled }}
{{- $max := include "semarize-connector.maxReplicas" (dict "root" $ "max" $as.maxReplicas) | int }}
{{- if gt ($as.minReplicas | int) $max }}
{{- fail (printf "%s.minReplicas (%d) exceeds the maximum (%d: maxReplicas capped at partitions)" $name ($as.minReplicas | int) $max) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (include "semarize-connector.webhooksEnabled" .) (not .Values.secrets.existingSecret) (not .Values.secrets.webhookSecret) }}
{{- fail "config.webhooks.enabled needs a webhook secret: set secrets.webhookSecret or secrets.existingSecret" }}
{{- end }}
{{- if and .Values.webhooks.ingress.enabled (not (include "semarize-connector.webhooksEnabled" .)) }}
{{- fail "webhooks.ingress.enabled needs config.webhooks.enabled=true" }}
{{- end }}
{{- if eq (include "semarize-connector.opsPort" .) (include "semarize-connector.webhooksPort" .) }}
{{- if include "semarize-connector.webhooksEnabled" . }}
{{- fail "config.ops.port and config.webhooks.port must differ: the ops port is never exposed" }}
{{- end }}
{{- end }}
{{- end }}
