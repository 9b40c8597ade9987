{{- define "sluice-cp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
"<release>-<chart>", or the release name when it already contains the chart name.
*/}}
{{- define "sluice-cp.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sluice-cp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sluice-cp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice-cp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: control-plane
{{- end -}}

{{- define "sluice-cp.labels" -}}
helm.sh/chart: {{ include "sluice-cp.chart" . }}
{{ include "sluice-cp.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sluice
{{- end -}}

{{- define "sluice-cp.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
Checks what the schema cannot: required values and how they combine. Renders nothing.
*/}}
{{- define "sluice-cp.validate" -}}
{{- if not .Values.database.existingSecret -}}
{{- fail "set database.existingSecret: a Secret holding the PostgreSQL URL (replicas share one database)" -}}
{{- end -}}
{{- if not .Values.keyPepper.existingSecret -}}
{{- fail "set keyPepper.existingSecret: a Secret holding the key pepper, the same for every replica" -}}
{{- end -}}
{{- $many := or .Values.autoscaling.enabled (gt (int .Values.replicas) 1) -}}
{{- if and $many (not .Values.nats.url) -}}
{{- fail "set nats.url: replicas tell each other about changes and revocations over NATS" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas is above autoscaling.maxReplicas" -}}
{{- end -}}
{{- end -}}
