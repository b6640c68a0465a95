{{/*
Chart name, truncated to the 63 characters a DNS label allows.
*/}}
{{- define "session-broker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: <release>-<chart> unless the release name already contains the chart name.
*/}}
{{- define "session-broker.fullname" -}}
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

{{- define "session-broker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels shared by every resource.
*/}}
{{- define "session-broker.labels" -}}
helm.sh/chart: {{ include "session-broker.chart" . }}
{{ include "session-broker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels: every pod of the release (server, migration, purge); add a component label to narrow.
*/}}
{{- define "session-broker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "session-broker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "session-broker.serverSelectorLabels" -}}
{{ include "session-broker.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "session-broker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "session-broker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The migration hook runs before the release's ServiceAccount exists on first install, so it gets a
hook-scoped one of its own when the chart creates ServiceAccounts.
*/}}
{{- define "session-broker.migrationServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- printf "%s-migration" (include "session-broker.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- include "session-broker.serviceAccountName" . }}
{{- end }}
{{- end }}

{{- define "session-broker.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "session-broker.configMapName" -}}
{{- include "session-broker.fullname" . }}
{{- end }}

{{/*
Secret holding the database URL: the user's existing one or the chart's.
*/}}
{{- define "session-broker.databaseSecretName" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else }}
{{- include "session-broker.fullname" . }}
{{- end }}
{{- end }}

{{- define "session-broker.databaseSecretKey" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecretKey }}
{{- else -}}
database-url
{{- end }}
{{- end }}

{{- define "session-broker.authSecretName" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecret }}
{{- else }}
{{- include "session-broker.fullname" . }}
{{- end }}
{{- end }}

{{- define "session-broker.apiKeysKey" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecretApiKeysKey }}
{{- else -}}
api-keys
{{- end }}
{{- end }}

{{- define "session-broker.adminApiKeysKey" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecretAdminApiKeysKey }}
{{- else -}}
admin-api-keys
{{- end }}
{{- end }}

{{/*
Fail early on values the schema cannot express. Included by every template that needs the database.
*/}}
{{- define "session-broker.validate" -}}
{{- if and (not .Values.database.url) (not .Values.database.existingSecret) }}
{{- fail "a database is required: set database.url (postgresql://...) or database.existingSecret. Without one the broker would start an embedded PostgreSQL inside the pod." }}
{{- end }}
{{- if and .Values.database.url .Values.database.existingSecret }}
{{- fail "set either database.url or database.existingSecret, not both" }}
{{- end }}
{{- if and .Values.database.readUrl .Values.database.existingSecret }}
{{- fail "database.readUrl needs the chart-managed Secret; with database.existingSecret use database.existingSecretReadKey" }}
{{- end }}
{{- if and .Values.database.existingSecretReadKey (not .Values.database.existingSecret) }}
{{- fail "database.existingSecretReadKey names a key of database.existingSecret; without one use database.readUrl" }}
{{- end }}
{{- if and .Values.database.migrationUrl .Values.database.existingSecret }}
{{- fail "database.migrationUrl needs the chart-managed Secret; with database.existingSecret use database.existingSecretMigrationKey" }}
{{- end }}
{{- if not (or .Values.auth.existingSecret .Values.auth.apiKeys .Values.auth.adminApiKeys) }}
{{- fail "API keys are required: set auth.apiKeys, auth.adminApiKeys or auth.existingSecret. The broker refuses to serve without authentication." }}
{{- end }}
{{- if and .Values.auth.existingSecret (or .Values.auth.apiKeys .Values.auth.adminApiKeys) }}
{{- fail "set either auth.existingSecret or auth.apiKeys/auth.adminApiKeys, not both" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not .Values.autoscaling.targetCPUUtilizationPercentage) (not .Values.autoscaling.targetMemoryUtilizationPercentage) }}
{{- fail "autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- end }}

{{/*
Render one value for an environment variable: whole numbers without an exponent (Helm reads
YAML numbers as float64, and 1000000 would otherwise print as 1e+06), everything else as text.
*/}}
{{- define "session-broker.envValue" -}}
{{- if kindIs "float64" . }}
{{- if eq . (floor .) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else }}
{{- . }}
{{- end }}
{{- end }}

{{/*
Security contexts and the /tmp volume shared by the server, migration and purge pods.
*/}}
{{- define "session-broker.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "session-broker.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{- define "session-broker.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{/*
Environment of the one-shot commands (migrate, purge) that must not depend on the ConfigMap:
the migration hook runs before it exists on first install.
*/}}
{{- define "session-broker.jobEnv" -}}
- name: SESSION_BROKER_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
- name: SESSION_BROKER_LOG_FORMAT
  value: {{ .Values.config.logFormat | quote }}
- name: SESSION_BROKER_DB_CONNECT_TIMEOUT_SECONDS
  value: {{ include "session-broker.envValue" .Values.config.dbConnectTimeoutSeconds | quote }}
- name: SESSION_BROKER_DB_PREPARED_STATEMENTS
  value: {{ .Values.config.dbPreparedStatements | toString | quote }}
{{- end }}

{{/*
The API keys file: one tenant=key per line.
*/}}
{{- define "session-broker.apiKeysFile" -}}
{{- range .Values.auth.apiKeys }}
{{- printf "%s=%s\n" .tenant .key }}
{{- end }}
{{- end }}
