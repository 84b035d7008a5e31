{{/* Names, labels and small shared pieces of the modelplex chart. */}}

{{- define "modelplex.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name. At most 40 characters: "-postgresql" is appended, and a
StatefulSet's name plus its revision hash must fit in a 63-character label. */}}
{{- define "modelplex.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "modelplex.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "gateway"). */}}
{{- define "modelplex.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelplex.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component: call with (dict "ctx" $ "component" "gateway"). */}}
{{- define "modelplex.labels" -}}
helm.sh/chart: {{ include "modelplex.chart" .ctx }}
{{ include "modelplex.selectorLabels" . }}
app.kubernetes.io/part-of: modelplex
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{- define "modelplex.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelplex.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "modelplex.secretName" -}}
{{- default (printf "%s-secrets" (include "modelplex.fullname" .)) .Values.secrets.name }}
{{- end }}

{{- define "modelplex.configMapName" -}}
{{- default (printf "%s-config" (include "modelplex.fullname" .)) .Values.existingConfigMap }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is set. Call with (dict "image" .Values.image "default" tag). */}}
{{- define "modelplex.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (toString (default .default .image.tag)) }}
{{- end }}
{{- end }}

{{/* The Secret holding a bundled store's password: call with (dict "ctx" $ "store" "redis"). */}}
{{- define "modelplex.storeSecretName" -}}
{{- $store := index .ctx.Values .store }}
{{- default (printf "%s-%s-auth" (include "modelplex.fullname" .ctx) .store) $store.auth.existingSecret }}
{{- end }}

{{/* Fails the render when a bundled store has no password source. */}}
{{- define "modelplex.requireStoreAuth" -}}
{{- $store := index .ctx.Values .store }}
{{- if not (or $store.auth.existingSecret $store.auth.password) }}
{{- fail (printf "%s.enabled needs %s.auth.existingSecret or %s.auth.password" .store .store .store) }}
{{- end }}
{{- end }}

{{/* Fails the render on contradictory values. */}}
{{- define "modelplex.validate" -}}
{{- if and .Values.persistence.enabled (or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) }}
{{- fail "persistence.enabled is for a single replica on SQLite: set autoscaling.enabled=false and replicaCount=1, or keep state in Redis/PostgreSQL" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not (or .Values.autoscaling.targetCPUUtilizationPercentage .Values.autoscaling.inflight.enabled)) }}
{{- fail "autoscaling.enabled needs targetCPUUtilizationPercentage or inflight.enabled" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set one of maxUnavailable and minAvailable, not both" }}
{{- end }}
{{- if le (int .Values.terminationGracePeriodSeconds) (add (int .Values.preStopSleepSeconds) 30) }}
{{- fail "terminationGracePeriodSeconds must exceed preStopSleepSeconds plus the gateway's drain deadline (30 s)" }}
{{- end }}
{{- end }}
