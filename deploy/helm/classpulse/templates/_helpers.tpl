{{/* Names, labels and the pieces every ClassPulse pod shares. */}}

{{- define "classpulse.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "classpulse.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* A component's object name: <fullname>-<component>. Call with (list $ "ingest"). */}}
{{- define "classpulse.component" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "classpulse.fullname" $root | trunc 50 | trimSuffix "-") (index . 1) -}}
{{- end -}}

{{- define "classpulse.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "classpulse.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "classpulse.labels" -}}
{{- $root := index . 0 -}}
{{ include "classpulse.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: classpulse
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "classpulse.secretName" -}}
{{- .Values.secret.existingSecret | default (printf "%s-env" (include "classpulse.fullname" .)) -}}
{{- end -}}

{{- define "classpulse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "classpulse.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{- define "classpulse.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/*
Pod metadata annotations: Prometheus scrape (port, path) and a checksum of the ConfigMap so a
settings change rolls the pods. Call with (list $ PORT EXTRA-ANNOTATIONS).
*/}}
{{- define "classpulse.podAnnotations" -}}
{{- $root := index . 0 -}}
checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
{{- if $root.Values.prometheus.scrape }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ index . 1 | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with index . 2 }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Pod-level spec shared by every service. Call with (list $ SERVICE-VALUES COMPONENT). Ingest's
hostNetwork / udpPortRange (absent for the others) add the node network or the pod's sysctl.
*/}}
{{- define "classpulse.podSpec" -}}
{{- $root := index . 0 -}}
{{- $svc := index . 1 -}}
{{- $component := index . 2 -}}
{{- $podSecurity := deepCopy $root.Values.podSecurityContext -}}
{{- if $svc.udpPortRange -}}
{{- $_ := set $podSecurity "sysctls" (list (dict "name" "net.ipv4.ip_local_port_range" "value" $svc.udpPortRange)) -}}
{{- end -}}
serviceAccountName: {{ include "classpulse.serviceAccountName" $root }}
automountServiceAccountToken: false
restartPolicy: Always
terminationGracePeriodSeconds: {{ $svc.terminationGracePeriodSeconds }}
securityContext:
  {{- toYaml $podSecurity | nindent 2 }}
{{- if $svc.hostNetwork }}
hostNetwork: true
dnsPolicy: ClusterFirstWithHostNet
{{- end }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $svc.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with $svc.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $svc.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $svc.affinity }}
affinity:
  {{- toYaml $svc.affinity | nindent 2 }}
{{- else if $svc.hostNetwork }}
affinity:
  podAntiAffinity:  # one pod per node: they would share the node's ports
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "classpulse.selectorLabels" (list $root $component) | nindent 12 }}
{{- end }}
{{- end -}}

{{/* Container fields shared by every service: image, env, security, /tmp. Call with (list $ SERVICE-VALUES). */}}
{{- define "classpulse.containerCommon" -}}
{{- $root := index . 0 -}}
{{- $svc := index . 1 -}}
image: {{ include "classpulse.image" $root }}
imagePullPolicy: {{ $root.Values.image.pullPolicy }}
envFrom:
  - configMapRef:
      name: {{ include "classpulse.fullname" $root }}-env
  - secretRef:
      name: {{ include "classpulse.secretName" $root }}
securityContext:
  {{- toYaml $root.Values.securityContext | nindent 2 }}
resources:
  {{- toYaml $svc.resources | nindent 2 }}
{{- end -}}

{{/* Process environment that is not a ClassPulse setting (writable HOME and caches under /tmp). */}}
{{- define "classpulse.processEnv" -}}
- name: HOME
  value: /tmp
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- end -}}

{{/* Liveness, readiness and startup probes on one HTTP path. Call with (list PATH PORT-NAME). */}}
{{- define "classpulse.probes" -}}
{{- $path := index . 0 -}}
{{- $port := index . 1 -}}
startupProbe:
  httpGet: {path: {{ $path }}, port: {{ $port }}}
  periodSeconds: 5
  failureThreshold: 60
livenessProbe:  {{- /* 90 s: longer than CLASSPULSE_TASK_GIVE_UP_S (60 s), so a broker outage ends the process
  itself (exit 3, one error line) first; liveness catches a hung process */}}
  httpGet: {path: {{ $path }}, port: {{ $port }}}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 9
readinessProbe:
  httpGet: {path: {{ $path }}, port: {{ $port }}}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}

{{- define "classpulse.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end -}}
