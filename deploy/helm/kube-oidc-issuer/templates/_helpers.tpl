{{- define "koi.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "koi.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: issuer
{{- end -}}

{{- define "koi.labels" -}}
{{ include "koi.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "koi.serviceAccountName" -}}
{{- default (include "koi.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "koi.secretSource" -}}
{{- and (not .Values.keyFile.enabled) (not .Values.signerMode.enabled) -}}
{{- end -}}

{{- define "koi.rotation" -}}
{{- and (not .Values.keyFile.enabled) .Values.rotation.enabled -}}
{{- end -}}

{{- define "koi.admin" -}}
{{- and (include "koi.rotation" . | eq "true") .Values.admin.enabled -}}
{{- end -}}

{{- define "koi.signingKeyNamespace" -}}
{{- default .Release.Namespace .Values.signingKeySecret.namespace -}}
{{- end -}}

{{- define "koi.stateSecretName" -}}
{{- default (printf "%s-lifecycle" (include "koi.fullname" .)) .Values.rotation.stateSecretName -}}
{{- end -}}

{{- define "koi.adminTLSSecretName" -}}
{{- default (printf "%s-admin-tls" (include "koi.fullname" .)) .Values.admin.tlsSecretName -}}
{{- end -}}

{{- /* The signing probe runs unless signingProbe.interval is zero ("0s", "0", "0m0s"). */ -}}
{{- define "koi.signingProbe" -}}
{{- regexMatch "[1-9]" (toString .Values.signingProbe.interval) -}}
{{- end -}}

{{- /* The probe's ServiceAccount: signingProbe.serviceAccount (NAMESPACE/NAME), else the chart's. */ -}}
{{- define "koi.signingProbeNamespace" -}}
{{- with .Values.signingProbe.serviceAccount }}{{ first (splitList "/" .) }}{{ else }}{{ .Release.Namespace }}{{ end -}}
{{- end -}}

{{- define "koi.signingProbeName" -}}
{{- with .Values.signingProbe.serviceAccount }}{{ last (splitList "/" .) }}{{ else }}{{ include "koi.serviceAccountName" $ }}{{ end -}}
{{- end -}}
