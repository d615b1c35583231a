{{/* Combinations KServe or the cluster would reject, caught at render time with the values to change.
Included once from inferenceservice.yaml. */}}
{{- define "snapserve.validate" -}}
{{- $v := .Values }}
{{- $standard := include "snapserve.isStandard" . }}
{{- $mode := $v.kserve.deploymentMode }}
{{- if and (not $standard) (or $v.httpRoute.enabled $v.ingress.enabled) }}
{{- fail (printf "kserve.deploymentMode=%s exposes the transformer through Knative's own ingress: set httpRoute.enabled=false and ingress.enabled=false, or kserve.deploymentMode=Standard" $mode) }}
{{- end }}
{{- if and (not $standard) (eq $v.kserve.autoscalerClass "keda") }}
{{- fail (printf "kserve.autoscalerClass=keda needs kserve.deploymentMode=Standard (Knative mode scales with Knative's autoscaler); change one of them") }}
{{- end }}
{{- range $name := list "predictor" "transformer" }}
{{- $a := (index $v $name).autoscaling }}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) }}
{{- fail (printf "%s.autoscaling.minReplicas (%v) is above %s.autoscaling.maxReplicas (%v)" $name $a.minReplicas $name $a.maxReplicas) }}
{{- end }}
{{- if and $standard (eq (int $a.minReplicas) 0) }}
{{- if eq $name "transformer" }}
{{- fail "transformer.autoscaling.minReplicas=0: in Standard mode the transformers are the activator that holds requests while the predictor scales from zero, so they cannot scale to zero themselves; set transformer.autoscaling.minReplicas to 1 or more, or kserve.deploymentMode=Knative" }}
{{- else if ne $v.kserve.autoscalerClass "keda" }}
{{- fail (printf "predictor.autoscaling.minReplicas=0 (scale to zero) in Standard mode needs kserve.autoscalerClass=keda (the chart's KEDA ScaledObject wakes the predictor on requests the transformers hold; hpa cannot scale to zero), not %s; or set kserve.deploymentMode=Knative, or predictor.autoscaling.minReplicas to 1 or more" $v.kserve.autoscalerClass) }}
{{- end }}
{{- end }}
{{- if and $standard $a.scaleMetric }}
{{- if eq $v.kserve.autoscalerClass "keda" }}
{{- fail (printf "KServe rejects scaleMetric with kserve.autoscalerClass=keda: clear %s.autoscaling.scaleMetric and set %s.autoscaling.keda.query" $name $name) }}
{{- end }}
{{- if not (has $a.scaleMetric (list "cpu" "memory")) }}
{{- fail (printf "%s.autoscaling.scaleMetric=%s is a Knative metric; in Standard mode use cpu or memory (or kserve.deploymentMode=Knative)" $name $a.scaleMetric) }}
{{- end }}
{{- end }}
{{- if and (not $standard) (has $a.scaleMetric (list "cpu" "memory")) }}
{{- fail (printf "%s.autoscaling.scaleMetric=%s needs kserve.deploymentMode=Standard; Knative mode scales on concurrency or rps" $name $a.scaleMetric) }}
{{- end }}
{{- if and $standard (eq $v.kserve.autoscalerClass "keda") (not $a.keda.query) (eq $name "transformer") }}
{{- fail (printf "kserve.autoscalerClass=keda needs %s.autoscaling.keda.query" $name) }}
{{- end }}
{{- if and $a.keda.query (not $a.keda.targetValue) }}
{{- fail (printf "%s.autoscaling.keda.query is set: set %s.autoscaling.keda.targetValue too (the query's value per replica), or clear the query for the default" $name $name) }}
{{- end }}
{{- $c := index $v $name }}
{{- if and $standard (le (int $c.terminationGracePeriodSeconds) (add $c.preStopSleepSeconds $c.drainSeconds | int)) }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%v) must exceed %s.preStopSleepSeconds + %s.drainSeconds (%v), or the pod is killed mid-drain" $name $c.terminationGracePeriodSeconds $name $name (add $c.preStopSleepSeconds $c.drainSeconds)) }}
{{- end }}
{{- if and (eq $a.scaleMetric "cpu") (gt (int $a.scaleTarget) 100) }}
{{- fail (printf "%s.autoscaling.scaleTarget=%v: a cpu target is a percentage (1-100)" $name $a.scaleTarget) }}
{{- end }}
{{- end }}
{{- if and $v.predictor.gpu.enabled (eq $v.predictor.device "cpu") }}
{{- fail "predictor.gpu.enabled=true requests a GPU the server would not use: set predictor.device=auto or cuda, or predictor.gpu.enabled=false" }}
{{- end }}
{{- if and (eq $v.predictor.device "cuda") (not $v.predictor.gpu.enabled) }}
{{- fail "predictor.device=cuda needs a GPU: set predictor.gpu.enabled=true, or predictor.device=auto" }}
{{- end }}
{{- if and (gt (int $v.httpRoute.retry.attempts) 0) (not $v.httpRoute.experimentalChannel) }}
{{- fail "httpRoute.retry is part of Gateway API's experimental channel: set httpRoute.experimentalChannel=true (the cluster runs the experimental CRDs) or httpRoute.retry.attempts=0" }}
{{- end }}
{{- if and $v.ingress.enabled $v.ingress.tls.enabled (not $v.ingress.tls.secretName) }}
{{- fail "ingress.tls.enabled=true needs ingress.tls.secretName (the Secret with the certificate for ingress.host)" }}
{{- end }}
{{- if and $v.networkPolicy.enabled $v.podMonitor.enabled (not (or $v.networkPolicy.scraper.namespaceSelector $v.networkPolicy.scraper.podSelector)) }}
{{- fail "podMonitor.enabled with networkPolicy.enabled needs networkPolicy.scraper.namespaceSelector or .podSelector, or Prometheus cannot scrape the predictor" }}
{{- end }}
{{- range $key := list "serving.kserve.io/deploymentMode" "serving.kserve.io/autoscalerClass" }}
{{- if hasKey $v.kserve.annotations $key }}
{{- fail (printf "kserve.annotations must not set %s: use kserve.deploymentMode / kserve.autoscalerClass" $key) }}
{{- end }}
{{- end }}
{{- $t := $v.transformer }}
{{- if and $t.auth.enabled (not $t.auth.existingSecret) }}
{{- fail "transformer.auth.enabled=true needs transformer.auth.existingSecret: the name of a Secret in the release namespace with the API keys, one per line, under transformer.auth.secretKey (kubectl create secret generic NAME --from-file=api-keys=./keys.txt)" }}
{{- end }}
{{- $coalesced := mul (int $t.coalesce.maxSequences) (int $t.coalesce.maxInFlight) }}
{{- if and (not (include "snapserve.generating" .)) (lt (int $v.predictor.batching.maxQueueSequences) $coalesced) }}
{{- fail (printf "predictor.batching.maxQueueSequences (%v) is below transformer.coalesce.maxSequences x transformer.coalesce.maxInFlight (%v x %v = %v): whole coalesced calls from one transformer would bounce with 429; raise predictor.batching.maxQueueSequences or lower transformer.coalesce.maxSequences / transformer.coalesce.maxInFlight" (int $v.predictor.batching.maxQueueSequences) (int $t.coalesce.maxSequences) (int $t.coalesce.maxInFlight) $coalesced) }}
{{- end }}
{{- if include "snapserve.scaleToZero" . }}
{{- if $v.collocated }}
{{- fail "predictor.autoscaling.minReplicas=0 with collocated=true: a collocated pod has no transformer outside it to hold requests while it starts; set collocated=false (the transformers are the activator) or predictor.autoscaling.minReplicas to 1 or more" }}
{{- end }}
{{- if gt ($t.timeouts.predictorUnreadyAfterSeconds | float64) 0.0 }}
{{- fail (printf "predictor.autoscaling.minReplicas=0 needs transformer.timeouts.predictorUnreadyAfterSeconds=0: at zero no predictor answers, and after %vs the transformers would turn not-ready and leave the Service, so no request would reach them to wake the predictor" $t.timeouts.predictorUnreadyAfterSeconds) }}
{{- end }}
{{- end }}
{{- if and $v.collocated (not $standard) }}
{{- fail (printf "collocated=true needs kserve.deploymentMode=Standard (not %s): set collocated=false or kserve.deploymentMode=Standard" $mode) }}
{{- end }}
{{- $pool := $v.inferencePool }}
{{- if $pool.enabled }}
{{- if not $v.collocated }}
{{- fail "inferencePool.enabled=true needs collocated=true: the endpoint picker routes on the engine gauges of the pod it picks, so that pod must be the engine (transformer and predictor in one pod), not a transformer that calls any predictor through a Service" }}
{{- end }}
{{- if not (include "snapserve.generating" .) }}
{{- fail "inferencePool.enabled=true needs predictor.task=generate: the endpoint picker routes chat/completion requests on an engine's queue and KV-cache gauges" }}
{{- end }}
{{- if not $pool.endpointPicker.name }}
{{- fail "inferencePool.enabled=true needs inferencePool.endpointPicker.name: the Service of the endpoint picker (EPP) you installed in the release namespace" }}
{{- end }}
{{- if $v.ingress.enabled }}
{{- fail "inferencePool.enabled=true routes through a Gateway API HTTPRoute to the pool: set ingress.enabled=false (and httpRoute.enabled=true)" }}
{{- end }}
{{- end }}
{{- if and (not $v.serviceAccount.create) $v.serviceAccount.annotations }}
{{- fail "serviceAccount.annotations only apply to a created ServiceAccount: set serviceAccount.create=true or remove the annotations" }}
{{- end }}
{{- end }}
