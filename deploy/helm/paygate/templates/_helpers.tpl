{{/* Names and labels shared by every object of the chart. */}}

{{- define "paygate.fullname" -}}
{{- printf "%s-paygate" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "paygate.labels" -}}
app.kubernetes.io/name: paygate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component (facade, consumer, acquirer, migrations). */}}
{{- define "paygate.selector" -}}
app.kubernetes.io/name: paygate
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "paygate.image" -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag | quote }}
{{- end -}}

{{/* The environment of every paygate container: the settings, and where the secrets are. */}}
{{- define "paygate.env" -}}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
- name: PAYGATE_SECRETS_DIR
  value: {{ .Values.secrets.mountPath | quote }}
{{- end -}}

{{- define "paygate.secretVolume" -}}
- name: secrets
  secret:
    secretName: {{ .Values.secrets.existingSecret }}
    defaultMode: 0400
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "paygate.secretMount" -}}
- name: secrets
  mountPath: {{ .Values.secrets.mountPath }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Probes on a process's ops listener: liveness /healthz, readiness /readyz. */}}
{{- define "paygate.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: ops}
  periodSeconds: {{ .root.Values.probes.startup.periodSeconds }}
  failureThreshold: {{ .root.Values.probes.startup.failureThreshold }}
livenessProbe:
  httpGet: {path: /healthz, port: ops}
  periodSeconds: {{ .root.Values.probes.liveness.periodSeconds }}
  failureThreshold: {{ .root.Values.probes.liveness.failureThreshold }}
  timeoutSeconds: {{ .root.Values.probes.liveness.timeoutSeconds }}
readinessProbe:
  httpGet: {path: /readyz, port: ops}
  periodSeconds: {{ .root.Values.probes.readiness.periodSeconds }}
  failureThreshold: {{ .root.Values.probes.readiness.failureThreshold }}
  timeoutSeconds: {{ .root.Values.probes.readiness.timeoutSeconds }}
{{- end -}}

{{/* The Alipay simulator of a development cluster (acquirer.alipay): its generated test
keys, a Secret mounted into the acquirer, the consumer and the facade. Production refuses
PAYGATE_ALIPAY_DEV_KEYS_DIR (docs/alipay.md). */}}
{{- define "paygate.alipayDev.enabled" -}}
{{- if and .Values.acquirer.enabled .Values.acquirer.alipay.enabled -}}true{{- end -}}
{{- end -}}

{{- define "paygate.alipayDev.env" -}}
{{- if include "paygate.alipayDev.enabled" . }}
- name: PAYGATE_ALIPAY_DEV_KEYS_DIR
  value: {{ .Values.acquirer.alipay.keysMountPath | quote }}
{{- end }}
{{- end -}}

{{- define "paygate.alipayDev.mount" -}}
{{- if include "paygate.alipayDev.enabled" . }}
- name: alipay-dev-keys
  mountPath: {{ .Values.acquirer.alipay.keysMountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "paygate.alipayDev.volume" -}}
{{- if include "paygate.alipayDev.enabled" . }}
- name: alipay-dev-keys
  secret:
    secretName: {{ printf "%s-alipay-dev-keys" (include "paygate.fullname" .) }}
    defaultMode: 0400
{{- end }}
{{- end -}}
