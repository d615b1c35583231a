{{/* Names, labels, images, the one shared pod block and the API-keys Secret volume. */}}

{{- define "snapserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name; also the InferenceService name, hence the model name KServe gives the transformer.
Kept to 45 characters: KServe appends "-transformer-default-00001-deployment"-style suffixes. */}}
{{- define "snapserve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The model name clients send (URLs, OpenAI's "model") and both servers' --model_name: modelName,
else the InferenceService name, which KServe gives the transformer when the chart passes none. */}}
{{- define "snapserve.modelName" -}}
{{- default (include "snapserve.fullname" .) .Values.modelName }}
{{- end }}

{{- define "snapserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "snapserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "snapserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "snapserve.labels" -}}
helm.sh/chart: {{ include "snapserve.chart" . }}
{{ include "snapserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels KServe puts on the pods of one component: args (root context, component name). */}}
{{- define "snapserve.componentPodLabels" -}}
serving.kserve.io/inferenceservice: {{ include "snapserve.fullname" (index . 0) }}
component: {{ index . 1 }}
{{- end }}

{{- define "snapserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "snapserve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image reference: args (root context, image values). A digest pins the image. */}}
{{- define "snapserve.image" -}}
{{- $root := index . 0 }}
{{- $img := index . 1 }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/* "true" when the transformer runs as a second container of the predictor pod (collocated). */}}
{{- define "snapserve.collocated" -}}
{{- if .Values.collocated }}true{{ end }}
{{- end }}

{{/* The predictor's port inside a collocated pod: the transformer keeps 8080, the one the Service targets. */}}
{{- define "snapserve.collocatedPredictorPort" -}}8085{{- end }}

{{/* The component whose pods take client traffic: the transformer, or the predictor pod it is
collocated in. KServe's Service in front of them is <InferenceService>-<component>, port 80. */}}
{{- define "snapserve.frontComponent" -}}
{{- if include "snapserve.collocated" . }}predictor{{ else }}transformer{{ end }}
{{- end }}

{{- define "snapserve.frontService" -}}
{{- printf "%s-%s" (include "snapserve.fullname" .) (include "snapserve.frontComponent" .) }}
{{- end }}

{{/* In-cluster host of the Service KServe puts in front of the pods that take client traffic. */}}
{{- define "snapserve.transformerHost" -}}
{{- printf "%s.%s.svc.cluster.local" (include "snapserve.frontService" .) .Release.Namespace }}
{{- end }}

{{/* "true" when the predictor scales to zero in Standard mode: the chart's KEDA ScaledObject owns its
replicas and wakes it on requests the transformers hold (validate.tpl allows it with keda only). */}}
{{- define "snapserve.scaleToZero" -}}
{{- if and (include "snapserve.isStandard" .) (eq (int .Values.predictor.autoscaling.minReplicas) 0) }}true{{ end }}
{{- end }}

{{/* PromQL label matchers for one component of this release, as the chart's PodMonitor labels the
series (component and inferenceservice from KServe's pod labels; namespace from Prometheus). */}}
{{- define "snapserve.metricSelector" -}}
{{- $root := index . 0 }}
{{- printf "component=%q, namespace=%q, inferenceservice=%q" (index . 1) $root.Release.Namespace (include "snapserve.fullname" $root) }}
{{- end }}

{{/* The predictor's KEDA load query and target: the values when set, else the estimated wait of new
work. It is summed over the pods: KEDA's Prometheus trigger is an AverageValue target (replicas =
ceil(query / target)), so a sum of per-pod waits asks for the replicas that bring each pod's wait to
the target, where a max would not grow with the replicas. */}}
{{- define "snapserve.predictorKedaQuery" -}}
{{- $k := .Values.predictor.autoscaling.keda }}
{{- if $k.query }}{{ $k.query }}
{{- else }}{{ printf "sum(snapserve_estimated_wait_seconds{%s})" (include "snapserve.metricSelector" (list . "predictor")) }}
{{- end }}
{{- end }}

{{/* Seconds of estimated wait per replica: a chat engine always has its running streams' remaining
decode ahead of new work, an encoder's queue drains in well under a second. */}}
{{- define "snapserve.predictorKedaTarget" -}}
{{- $k := .Values.predictor.autoscaling.keda }}
{{- if $k.targetValue }}{{ $k.targetValue }}
{{- else if include "snapserve.generating" . }}10
{{- else }}0.5
{{- end }}
{{- end }}

{{/* Probes, security context, drain hook and /tmp of one server container.
args: (root context, component values[, extra volumeMounts[, port: 8080 unless collocated]]). */}}
{{- define "snapserve.serverContainerCommon" -}}
{{- $root := index . 0 }}
{{- $c := index . 1 }}
{{- $mounts := list }}
{{- if gt (len .) 2 }}{{ $mounts = index . 2 }}{{ end }}
{{- $port := 8080 }}
{{- if gt (len .) 3 }}{{ $port = index . 3 | int }}{{ end -}}
ports:
  - name: {{ if eq $port 8080 }}http1{{ else }}http-predictor{{ end }}
    containerPort: {{ $port }}
    protocol: TCP
startupProbe:
  httpGet:
    path: /v2/health/ready
    port: {{ $port }}
  periodSeconds: {{ $c.probes.startup.periodSeconds }}
  failureThreshold: {{ $c.probes.startup.failureThreshold }}
  timeoutSeconds: {{ $c.probes.startup.timeoutSeconds }}
readinessProbe:
  httpGet:
    path: /v2/health/ready
    port: {{ $port }}
  periodSeconds: {{ $c.probes.readiness.periodSeconds }}
  failureThreshold: {{ $c.probes.readiness.failureThreshold }}
  timeoutSeconds: {{ $c.probes.readiness.timeoutSeconds }}
livenessProbe:
  httpGet:
    path: /v2/health/live
    port: {{ $port }}
  periodSeconds: {{ $c.probes.liveness.periodSeconds }}
  failureThreshold: {{ $c.probes.liveness.failureThreshold }}
  timeoutSeconds: {{ $c.probes.liveness.timeoutSeconds }}
{{- if include "snapserve.isStandard" $root }}
{{- /* Knative rejects lifecycle hooks; its queue-proxy drains the pod instead. */}}
lifecycle:
  preStop:
    sleep:
      seconds: {{ $c.preStopSleepSeconds }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- with $mounts }}
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Pod-level fields shared by the predictor and transformer components.
args: (root context, component name[, extra volumes]). */}}
{{- define "snapserve.componentPod" -}}
{{- $root := index . 0 }}
{{- $name := index . 1 }}
{{- $c := index $root.Values $name }}
{{- $volumes := list }}
{{- if gt (len .) 2 }}{{ $volumes = index . 2 }}{{ end -}}
serviceAccountName: {{ include "snapserve.serviceAccountName" $root }}
automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- if include "snapserve.isStandard" $root }}
{{- /* Knative derives it from the revision timeout. */}}
terminationGracePeriodSeconds: {{ $c.terminationGracePeriodSeconds }}
{{- end }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
minReplicas: {{ $c.autoscaling.minReplicas }}
maxReplicas: {{ $c.autoscaling.maxReplicas }}
{{- if and (ne $root.Values.kserve.autoscalerClass "keda") $c.autoscaling.scaleMetric }}
scaleMetric: {{ $c.autoscaling.scaleMetric }}
{{- end }}
{{- if and (ne $root.Values.kserve.autoscalerClass "keda") $c.autoscaling.scaleTarget }}
scaleTarget: {{ $c.autoscaling.scaleTarget }}
{{- end }}
{{- $predictor := eq $name "predictor" }}
{{- if and $predictor (include "snapserve.scaleToZero" $root) }}
annotations:
  # KServe makes no autoscaler for the predictor (the component's annotation wins over the
  # InferenceService's); the chart's ScaledObject scales its Deployment, down to zero.
  serving.kserve.io/autoscalerClass: external
{{- else if and (eq $root.Values.kserve.autoscalerClass "keda") (include "snapserve.isStandard" $root) }}
autoScaling:
  metrics:
    - type: External
      external:
        metric:
          backend: prometheus
          serverAddress: {{ $c.autoscaling.keda.serverAddress }}
          query: {{ ternary (include "snapserve.predictorKedaQuery" $root) $c.autoscaling.keda.query $predictor | quote }}
        target:
          type: Value
          value: {{ ternary (include "snapserve.predictorKedaTarget" $root) $c.autoscaling.keda.targetValue $predictor | quote }}
{{- end }}
{{- if and $predictor (include "snapserve.collocated" $root) }}
labels:
  # The label GIE's endpoint picker reads to choose the metric names it parses (README: InferencePool).
  inference.networking.k8s.io/engine-type: snapserve
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ $root.Values.tmpSizeLimit }}
{{- with $volumes }}
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The API-keys Secret as a volume and its mount (transformer and helm test pod); empty lists
when transformer.auth is off. The file path is snapserve.apiKeysFile; defaultMode 288 is 0440 (owner
root, group fsGroup: the non-root servers read it through the group). */}}
{{- define "snapserve.apiKeysVolumes" -}}
{{- $auth := .Values.transformer.auth }}
{{- if $auth.enabled }}
{{- list (dict "name" "api-keys" "secret" (dict "secretName" $auth.existingSecret "defaultMode" 288 "items" (list (dict "key" $auth.secretKey "path" "keys")))) | toJson }}
{{- else }}[]{{ end }}
{{- end }}

{{- define "snapserve.apiKeysMounts" -}}
{{- if .Values.transformer.auth.enabled }}
{{- list (dict "name" "api-keys" "mountPath" "/etc/snapserve/api-keys" "readOnly" true) | toJson }}
{{- else }}[]{{ end }}
{{- end }}

{{- define "snapserve.apiKeysFile" -}}
/etc/snapserve/api-keys/keys
{{- end }}

{{/* "true" when pods run as plain Deployments (Standard / legacy RawDeployment). */}}
{{/* "true" for a chat install (predictor.task=generate): the servers refuse flags of the other task,
so the InferenceService sets only the flags of its own. predictor.task=auto renders the encoder flags. */}}
{{- define "snapserve.generating" -}}
{{- if eq .Values.predictor.task "generate" }}true{{ end }}
{{- end }}

{{- define "snapserve.isStandard" -}}
{{- if has .Values.kserve.deploymentMode (list "Standard" "RawDeployment") }}true{{ end }}
{{- end }}

{{/* "true" when the EnvVar list (first argument) already sets the variable named by the second, so
the user's entry is not duplicated by a default of the chart. */}}
{{- define "snapserve.hasEnv" -}}
{{- range (index . 0) }}{{ if eq .name (index $ 1) }}true{{ end }}{{ end }}
{{- end }}

{{/* The log switches of one component (its .logging values) as env vars for its flags. */}}
{{- define "snapserve.loggingEnv" -}}
- name: LOG_ACCESS
  value: {{ .accessLog | quote }}
- name: LOG_PROBES
  value: {{ .logProbes | quote }}
- name: TRACE_LOGGING
  value: {{ .traceLogging | quote }}
{{- end }}
