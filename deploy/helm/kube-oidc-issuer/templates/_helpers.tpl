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

{{- /* One named signing-key Secret (--secret): not with a key file, signer mode or a fleet. */ -}}
{{- define "koi.secretSource" -}}
{{- and (not .Values.keyFile.enabled) (not .Values.signerMode.enabled) (not .Values.fleet.enabled) -}}
{{- end -}}

{{- /* The single-cluster key lifecycle (--state-secret) and its admin API; fleet mode's per-cluster ones are not rendered by the chart. */ -}}
{{- define "koi.rotation" -}}
{{- and (not .Values.keyFile.enabled) (not .Values.fleet.enabled) .Values.rotation.enabled -}}
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

{{- /* The signing probe runs unless signingProbe.interval is zero ("0s", "0", "0m0s"); not in fleet mode. */ -}}
{{- define "koi.signingProbe" -}}
{{- and (not .Values.fleet.enabled) (regexMatch "[1-9]" (toString .Values.signingProbe.interval)) -}}
{{- end -}}

{{- /* The probe's ServiceAccount: signingProbe.serviceAccount (NAMESPACE/NAME), else the chart's. */ -}}
{{- define "koi.signingProbeNamespace" -}}
{{- with .Values.signingProbe.serviceAccount }}{{ first (splitList "/" .) }}{{ else }}{{ .Release.Namespace }}{{ end -}}
{{- end -}}

{{- define "koi.signingProbeName" -}}
{{- with .Values.signingProbe.serviceAccount }}{{ last (splitList "/" .) }}{{ else }}{{ include "koi.serviceAccountName" $ }}{{ end -}}
{{- end -}}


{{- /*
Fleet mode refuses what belongs to a single cluster, at render time rather than in a crash-looping
pod. A value still at its default is not a request: signingKeySecret, rotation, admin and
signingProbe keep their defaults unless changed, and only a change is refused.
*/ -}}
{{- define "koi.fleetChecks" -}}
{{- $f := .Values.fleet -}}
{{- if $f.enabled }}
{{- if not $f.issuerURLTemplate }}{{ fail "fleet.enabled needs fleet.issuerURLTemplate: each cluster's issuer URL, with {cluster} in its path (e.g. https://oidc.example.com/clusters/{cluster})" }}{{ end }}
{{- if not (contains "{cluster}" $f.issuerURLTemplate) }}{{ fail (printf "fleet.issuerURLTemplate %q must contain {cluster}, or every cluster would get the same issuer URL" $f.issuerURLTemplate) }}{{ end }}
{{- if or .Values.issuerURL .Values.jwksURI }}{{ fail "fleet.enabled: leave issuerURL and jwksURI empty; each cluster's issuer URL comes from fleet.issuerURLTemplate" }}{{ end }}
{{- if or (ne .Values.signingKeySecret.name "signing-key") .Values.signingKeySecret.namespace }}{{ fail "fleet.enabled: signingKeySecret names one cluster's Secret; the fleet finds every cluster's <cluster>-sa Secret itself (fleet.namespaces limits where). Leave signingKeySecret at its default" }}{{ end }}
{{- if .Values.keyFile.enabled }}{{ fail "fleet.enabled and keyFile.enabled exclude each other: the fleet reads Cluster API <cluster>-sa Secrets" }}{{ end }}
{{- if .Values.signerMode.enabled }}{{ fail "fleet.enabled and signerMode.enabled exclude each other: signer mode is one cluster's" }}{{ end }}
{{- if or .Values.rotation.rotateEvery .Values.rotation.stateSecretName .Values.admin.tlsSecretName .Values.admin.tokenAudiences }}{{ fail "fleet.enabled: the chart does not render fleet mode's per-cluster key rotation and admin API (docs/fleet.md shows how to enable them); leave rotation.rotateEvery, rotation.stateSecretName, admin.tlsSecretName and admin.tokenAudiences empty" }}{{ end }}
{{- if or .Values.signingProbe.serviceAccount (and (ne (toString .Values.signingProbe.interval) "1m") (regexMatch "[1-9]" (toString .Values.signingProbe.interval))) }}{{ fail "fleet.enabled: signingProbe.* configures the single-cluster signing probe (it would probe the management cluster); the workload clusters are probed with --fleet-signing-probe-interval in extraArgs (docs/fleet.md); leave signingProbe.serviceAccount empty and signingProbe.interval at its default (or 0s)" }}{{ end }}
{{- range .Values.extraArgs }}
{{- $flag := first (splitList "=" (toString .)) }}
{{- if has $flag (list "--issuer-url" "--jwks-uri" "--secret" "--key-file" "--state-secret" "--signing-secret" "--rotate-every" "--admin-listen" "--kms-keys" "--signing-probe-service-account" "--s3-manage-bucket-policy") }}{{ fail (printf "fleet.enabled: extraArgs %s does not apply to fleet mode (kube-oidc-issuer serve --fleet refuses it); see docs/fleet.md" $flag) }}{{ end }}
{{- end }}
{{- else if or $f.issuerURLTemplate $f.namespaces $f.retention }}
{{- fail "fleet.issuerURLTemplate, fleet.namespaces and fleet.retention need fleet.enabled=true" }}
{{- end }}
{{- end -}}
