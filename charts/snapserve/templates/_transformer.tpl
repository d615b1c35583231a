{{/* The transformer container: of the transformer component, or (collocated) the second container of
the predictor pod, which KServe recognises by the name transformer-container (its Service then targets
this container's port, and the storage initializer mounts /mnt/models here too). */}}
{{- define "snapserve.transformerContainer" -}}
{{- $root := . }}
{{- $name := include "snapserve.fullname" . }}
{{- $model := include "snapserve.modelName" . }}
{{- $t := .Values.transformer }}
{{- $generating := include "snapserve.generating" . }}
{{- $collocated := include "snapserve.collocated" . -}}
- name: {{ if $collocated }}transformer-container{{ else }}kserve-container{{ end }}
  image: {{ include "snapserve.image" (list $root $t.image) }}
  imagePullPolicy: {{ $t.image.pullPolicy }}
  command: [python, -m, transformer]
  args:
    {{- /* Only a modelName other than the InferenceService name, which KServe would append to a
    transformer component (not to a collocated container). */}}
    {{- if or $collocated (ne $model $name) }}
    - --model_name
    - {{ $model | toYaml }}
    {{- end }}
    - --model_dir
    - /mnt/models
    - --http_port
    - "8080"
    - --grpc_port
    - "8081"
    {{- if $collocated }}
    # The predictor container of the same pod (KServe passes --predictor_host only to a transformer component).
    - --predictor_host
    - localhost:{{ include "snapserve.collocatedPredictorPort" $root }}
    {{- end }}
    # REST with binary tensors: the Service KServe puts in front of the predictor carries HTTP only.
    - --predictor_protocol
    - v2
    # kserve's own default is 600 s: a dead predictor would hang clients for 10 minutes
    - --predictor_request_timeout_seconds
    - {{ $t.timeouts.predictorCallSeconds | quote }}
    - --grace_period
    - {{ $t.drainSeconds | quote }}
    - --max_length
    - {{ $t.maxLength | quote }}
    {{- range $t.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    {{- if and $root.Values.model.storageUri (not $collocated) }}
    # The transformer reads only the tokenizer files, from the same model folder.
    - name: STORAGE_URI
      value: {{ $root.Values.model.storageUri | quote }}
    {{- end }}
    - name: HF_HUB_OFFLINE
      value: "1"
    - name: HOME
      value: /tmp
    # Hardening and coalescing settings: env vars of the transformer's own flags (extraArgs win).
    {{- if $t.auth.enabled }}
    - name: API_KEYS_FILE
      value: {{ include "snapserve.apiKeysFile" $root }}
    {{- end }}
    - name: RATE_LIMIT_RPS
      value: {{ $t.rateLimit.rps | quote }}
    - name: RATE_LIMIT_BURST
      value: {{ $t.rateLimit.burst | int64 | quote }}
    - name: MAX_BODY_BYTES
      value: {{ $t.limits.maxBodyBytes | int64 | quote }}
    - name: MAX_CONCURRENT_REQUESTS
      value: {{ $t.limits.maxConcurrentRequests | int64 | quote }}
    {{- /* Each task's flags only: the servers refuse a flag that does not apply to the snapshot's task. */}}
    {{- if not $generating }}
    - name: MAX_TEXTS
      value: {{ $t.limits.maxTexts | int64 | quote }}
    {{- end }}
    - name: MAX_TEXT_CHARS
      value: {{ $t.limits.maxTextChars | int64 | quote }}
    {{- if $generating }}
    - name: MAX_QUEUE_REQUESTS
      value: {{ $t.queue.maxRequests | int64 | quote }}
    - name: MAX_QUEUE_REQUESTS_PER_KEY
      value: {{ $t.queue.maxRequestsPerKey | int64 | quote }}
    {{- else }}
    - name: COALESCE_MAX_SEQUENCES
      value: {{ $t.coalesce.maxSequences | int64 | quote }}
    - name: COALESCE_DELAY_MS
      value: {{ $t.coalesce.delayMs | quote }}
    - name: COALESCE_MAX_CALL_MS
      value: {{ $t.coalesce.maxCallMs | quote }}
    - name: PREDICTOR_MAX_IN_FLIGHT
      value: {{ $t.coalesce.maxInFlight | int64 | quote }}
    - name: MAX_QUEUE_SEQUENCES
      value: {{ $t.queue.maxSequences | int64 | quote }}
    - name: MAX_QUEUE_SEQUENCES_PER_KEY
      value: {{ $t.queue.maxSequencesPerKey | int64 | quote }}
    {{- end }}
    - name: REQUEST_TIMEOUT_MS
      value: {{ $t.timeouts.requestMs | int64 | quote }}
    - name: CLIENT_TIMEOUT_S
      value: {{ $t.timeouts.clientSeconds | quote }}
    - name: PREDICTOR_CONNECT_TIMEOUT_MS
      value: {{ $t.timeouts.predictorConnectMs | int64 | quote }}
    - name: PREDICTOR_UNREADY_AFTER_S
      value: {{ $t.timeouts.predictorUnreadyAfterSeconds | quote }}
    {{- include "snapserve.loggingEnv" $t.logging | nindent 4 }}
    {{- with $t.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  resources:
    {{- toYaml $t.resources | nindent 4 }}
  {{- include "snapserve.serverContainerCommon" (list $root $t (include "snapserve.apiKeysMounts" $root | fromJsonArray)) | nindent 2 }}
{{- end }}
