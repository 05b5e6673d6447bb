{{/* The objects' names are fixed, as in manifests/: the ClusterRole and the CRD are cluster-wide,
one install per cluster. */}}
{{- define "mh.name" -}}memory-hygiene{{- end -}}
{{- define "mh.agent" -}}memory-hygiene-node-agent{{- end -}}

{{- define "mh.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* Labels on every object (kustomize's manifests carry name and part-of; the chart adds Helm's). */}}
{{- define "mh.labels" -}}
app.kubernetes.io/name: memory-hygiene
app.kubernetes.io/part-of: memory-hygiene
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "mh.operatorLabels" -}}
{{ include "mh.labels" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "mh.agentLabels" -}}
{{ include "mh.labels" . }}
app.kubernetes.io/component: node-agent
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Selectors: the same keys and values as manifests/ with the release named memory-hygiene. */}}
{{- define "mh.operatorSelector" -}}
app.kubernetes.io/name: memory-hygiene
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mh.agentSelector" -}}
app.kubernetes.io/name: memory-hygiene
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node-agent
{{- end -}}
