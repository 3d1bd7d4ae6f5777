{{/* Names, labels and the few derived settings every template shares. */}}

{{- define "tidal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tidal.fullname" -}}
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

{{- define "tidal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tidal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tidal.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "tidal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tidal
{{- end -}}

{{- define "tidal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tidal.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* "true" or "false": leaderElection.enabled, with auto = more than one replica. */}}
{{- define "tidal.leaderElect" -}}
{{- $v := toString .Values.leaderElection.enabled -}}
{{- if eq (include "tidal.sharded" .) "true" -}}
false
{{- else if eq $v "auto" -}}
{{- ternary "true" "false" (gt (int .Values.replicaCount) 1) -}}
{{- else -}}
{{- ternary "true" "false" (eq $v "true") -}}
{{- end -}}
{{- end -}}

{{/* "true" or "false": shards.mode auto (every replica active; docs/sharding.md). */}}
{{- define "tidal.sharded" -}}
{{- if eq (toString .Values.shards.mode) "auto" -}}
{{- if .Values.certManager.enabled -}}
{{- fail "shards.mode auto needs Tidal's managed certificates (certManager.enabled: false): replicas forward metric reads to each other with Tidal's own CA" -}}
{{- end -}}
true
{{- else -}}
false
{{- end -}}
{{- end -}}

{{- define "tidal.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace -}}
{{- end -}}

{{- define "tidal.clusterObjectNamespace" -}}
{{- default .Release.Namespace .Values.clusterObjectNamespace -}}
{{- end -}}

{{- define "tidal.apiServiceName" -}}v1beta1.external.metrics.k8s.io{{- end -}}

{{- define "tidal.metricsApiServiceName" -}}
{{- printf "%s-metrics-api" (include "tidal.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tidal.certSecretName" -}}
{{- if .Values.certManager.enabled -}}
{{- printf "%s-tls" (include "tidal.fullname" .) -}}
{{- else -}}
{{- default (printf "%s-certs" (include "tidal.fullname" .)) .Values.certificates.secretName -}}
{{- end -}}
{{- end -}}

{{/* "true" when Tidal itself keeps the serving certificate and the APIService's caBundle. */}}
{{- define "tidal.managedCerts" -}}
{{- ternary "false" "true" .Values.certManager.enabled -}}
{{- end -}}

{{- define "tidal.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
