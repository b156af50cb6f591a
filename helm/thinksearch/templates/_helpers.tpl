{{- define "thinksearch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "thinksearch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "thinksearch.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selector labels of one component; the full label set adds chart/version labels. */}}
{{- define "thinksearch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "thinksearch.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "thinksearch.labels" -}}
{{ include "thinksearch.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{- define "thinksearch.image" -}}
{{- if eq (toString .tag) "latest" -}}{{- fail "image tags must be pinned, not latest" -}}{{- end -}}
{{ printf "%s:%s" .repository (toString .tag) }}
{{- end -}}

{{- define "thinksearch.secretName" -}}
{{- default (printf "%s-api-keys" (include "thinksearch.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "thinksearch.qdrantUrl" -}}
{{- if .Values.qdrant.enabled -}}
{{- printf "http://%s-qdrant:6333" .Release.Name -}}
{{- else -}}
{{- required "qdrant.enabled=false needs externalQdrant.url" .Values.externalQdrant.url -}}
{{- end -}}
{{- end -}}

{{- define "thinksearch.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s-redis-master:6379/0" .Release.Name -}}
{{- else -}}
{{- required "redis.enabled=false needs externalRedis.url" .Values.externalRedis.url -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by gateway and worker: settings, dependency URLs, secrets by reference only. */}}
{{- define "thinksearch.env" -}}
{{- range $key, $value := .Values.config }}
- name: {{ $key }}
  value: {{ $value | quote }}
{{- end }}
- name: QDRANT_URL
  value: {{ include "thinksearch.qdrantUrl" . | quote }}
{{- if and (not .Values.qdrant.enabled) .Values.externalQdrant.apiKeySecret }}
- name: QDRANT_API_KEY
  valueFrom:
    secretKeyRef: {name: {{ .Values.externalQdrant.apiKeySecret }}, key: api-key}
{{- end }}
- name: REDIS_URL
  value: {{ include "thinksearch.redisUrl" . | quote }}
{{- if .Values.vllm.think.enabled }}
- name: THINKER_URL
  value: {{ printf "http://%s-vllm-think:8000/v1" (include "thinksearch.fullname" .) | quote }}
- name: THINKER_MODEL
  value: {{ .Values.vllm.think.servedModelName | quote }}
{{- else if .Values.vllm.think.externalUrl }}
- name: THINKER_URL
  value: {{ .Values.vllm.think.externalUrl | quote }}
{{- end }}
{{- if .Values.vllm.embed.enabled }}
- name: EMBEDDER_URL
  value: {{ printf "http://%s-vllm-embed:8000/v1" (include "thinksearch.fullname" .) | quote }}
- name: EMBEDDER_MODEL
  value: {{ .Values.vllm.embed.servedModelName | quote }}
{{- else if .Values.embedder.externalUrl }}
- name: EMBEDDER_URL
  value: {{ .Values.embedder.externalUrl | quote }}
{{- with .Values.embedder.model }}
- name: EMBEDDER_MODEL
  value: {{ . | quote }}
{{- end }}
{{- end }}
- name: API_KEYS
  valueFrom:
    secretKeyRef: {name: {{ include "thinksearch.secretName" . }}, key: api-keys, optional: true}
{{- end -}}
