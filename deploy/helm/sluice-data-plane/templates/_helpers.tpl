{{/*
The roles, in the order the chart renders them.
*/}}
{{- define "sluice.roleNames" -}}
proxy receiver processor delivery archiver query
{{- end -}}

{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
"<release>-<chart>", or the release name when it already contains the chart name. Role
suffixes (at most "-processor") are appended, so this stays under 52 characters.
*/}}
{{- define "sluice.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sluice.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sluice.labels" -}}
helm.sh/chart: {{ include "sluice.chart" . }}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sluice
{{- end -}}

{{/*
Selector labels of one role. Call with (dict "ctx" $ "role" "receiver").
*/}}
{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "sluice.roleLabels" -}}
{{ include "sluice.labels" .ctx }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "sluice.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "sluice.serviceKeySecretName" -}}
{{- if .Values.serviceKey.existingSecret -}}
{{- .Values.serviceKey.existingSecret -}}
{{- else -}}
{{- printf "%s-service-key" (include "sluice.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "sluice.serviceKeySecretKey" -}}
{{- if .Values.serviceKey.existingSecret -}}
{{- .Values.serviceKey.existingSecretKey -}}
{{- else -}}
service-key
{{- end -}}
{{- end -}}

{{/*
The proxy's receivers: the configured URLs, or this release's receiver Service.
*/}}
{{- define "sluice.receiverUrls" -}}
{{- if .Values.proxy.receiverUrls -}}
{{- join "," .Values.proxy.receiverUrls -}}
{{- else -}}
{{- printf "http://%s-receiver:%d" (include "sluice.fullname" .) (int .Values.service.receiver.port) -}}
{{- end -}}
{{- end -}}

{{/*
Checks what the schema cannot: required values and how they combine. Renders nothing.
*/}}
{{- define "sluice.validate" -}}
{{- $roles := .Values.roles -}}
{{- $enabled := list -}}
{{- range $role := splitList " " (include "sluice.roleNames" .) -}}
{{- if (index $roles $role).enabled -}}
{{- $enabled = append $enabled $role -}}
{{- end -}}
{{- end -}}
{{- if not $enabled -}}
{{- fail "enable at least one role in roles.<role>.enabled" -}}
{{- end -}}
{{- if not .Values.controlUrl -}}
{{- fail "set controlUrl to the control plane's gRPC address, e.g. https://control.example.com:8081" -}}
{{- end -}}
{{- if and .Values.serviceKey.existingSecret .Values.serviceKey.value -}}
{{- fail "set serviceKey.existingSecret or serviceKey.value, not both" -}}
{{- end -}}
{{- if not (or .Values.serviceKey.existingSecret .Values.serviceKey.value) -}}
{{- fail "set serviceKey.existingSecret (a Secret holding the slk_svc_… key) or serviceKey.value" -}}
{{- end -}}
{{- if not .Values.nats.url -}}
{{- fail "set nats.url (nats://…): the roles run in separate pods and the embedded bus cannot be shared between pods" -}}
{{- end -}}
{{- if and (or $roles.archiver.enabled $roles.query.enabled) (not .Values.s3.bucket) -}}
{{- fail "set s3.bucket: the archiver and query roles share the archive in S3" -}}
{{- end -}}
{{- if and $roles.proxy.enabled (not $roles.receiver.enabled) (not .Values.proxy.receiverUrls) -}}
{{- fail "the proxy needs receivers: enable roles.receiver or set proxy.receiverUrls" -}}
{{- end -}}
{{- end -}}
