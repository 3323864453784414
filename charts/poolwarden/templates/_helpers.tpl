{{/* The chart name, cut to the 63 characters a label value allows. */}}
{{- define "poolwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The name of the release's objects. */}}
{{- define "poolwarden.fullname" -}}
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

{{- define "poolwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "poolwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "poolwarden.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "poolwarden.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "poolwarden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "poolwarden.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Settings that cannot work together fail the render instead of installing a
controller that cannot do its job. */}}
{{- define "poolwarden.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled: without a leader every replica would write and restart pods" }}
{{- end }}
{{- if .Values.watchNamespace }}
{{- range .Values.databaseSecrets }}
{{- if ne .namespace $.Values.watchNamespace }}
{{- fail (printf "databaseSecrets: namespace %q is not watchNamespace %q; the controller only reads Secrets of the policies it watches" .namespace $.Values.watchNamespace) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
