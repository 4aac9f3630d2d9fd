{{/* Names, labels and the pieces every component shares. */}}

{{- define "voiceagent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "voiceagent.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "voiceagent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* A component's resource name: (dict "ctx" $ "component" "state") */}}
{{- define "voiceagent.componentName" -}}
{{- printf "%s-%s" (include "voiceagent.fullname" .ctx | trunc 50 | trimSuffix "-") .component -}}
{{- end -}}

{{- define "voiceagent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "voiceagent.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "voiceagent.labels" -}}
helm.sh/chart: {{ include "voiceagent.chart" .ctx }}
{{ include "voiceagent.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: voiceagent
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Chart-wide labels for resources that belong to no single component. */}}
{{- define "voiceagent.releaseLabels" -}}
helm.sh/chart: {{ include "voiceagent.chart" . }}
app.kubernetes.io/name: {{ include "voiceagent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: voiceagent
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* image reference: (dict "ctx" $ "image" .Values.state.image) */}}
{{- define "voiceagent.image" -}}
{{- $registry := .ctx.Values.image.registry -}}
{{- $tag := default (default .ctx.Chart.AppVersion .ctx.Values.image.tag) .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s%s@%s" (ternary "" (printf "%s/" $registry) (empty $registry)) .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s%s:%s" (ternary "" (printf "%s/" $registry) (empty $registry)) .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "voiceagent.imagePullPolicy" -}}
{{- default .ctx.Values.image.pullPolicy .image.pullPolicy -}}
{{- end -}}

{{- define "voiceagent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "voiceagent.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The restricted pod and container security contexts (Pod Security Standards). */}}
{{- define "voiceagent.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser | int64 }}
runAsGroup: {{ .Values.securityContext.runAsGroup | int64 }}
fsGroup: {{ .Values.securityContext.fsGroup | int64 }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "voiceagent.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Secret names and keys. */}}
{{- define "voiceagent.jwtSecretName" -}}
{{- default (printf "%s-jwt" (include "voiceagent.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "voiceagent.mongodbSecretName" -}}
{{- default (printf "%s-mongodb" (include "voiceagent.fullname" .)) .Values.mongodb.existingSecret -}}
{{- end -}}

{{- define "voiceagent.livekitSecretName" -}}
{{- default (printf "%s-livekit" (include "voiceagent.fullname" .)) .Values.livekit.existingSecret -}}
{{- end -}}

{{- define "voiceagent.openaiSecretName" -}}
{{- default (printf "%s-openai" (include "voiceagent.fullname" .)) .Values.openai.existingSecret -}}
{{- end -}}

{{- define "voiceagent.openaiKeyConfigured" -}}
{{- if or .Values.openai.apiKey .Values.openai.existingSecret }}true{{ end -}}
{{- end -}}

{{/* In-cluster gRPC targets: the headless Services, so clients balance per call
     (round_robin over every replica's address; the servers' max connection age makes
     clients re-resolve, so new replicas get traffic). */}}
{{- define "voiceagent.stateTarget" -}}
{{- printf "dns:///%s-headless.%s.svc.%s:%d" (include "voiceagent.componentName" (dict "ctx" . "component" "state")) .Release.Namespace .Values.clusterDomain (int .Values.state.grpc.port) -}}
{{- end -}}

{{- define "voiceagent.contextTarget" -}}
{{- printf "dns:///%s-headless.%s.svc.%s:%d" (include "voiceagent.componentName" (dict "ctx" . "component" "context")) .Release.Namespace .Values.clusterDomain (int .Values.context.grpc.port) -}}
{{- end -}}

{{/* The agent's jobs hold their Attend streams spread over every recovery_svc replica. */}}
{{- define "voiceagent.recoveryTarget" -}}
{{- printf "dns:///%s-headless.%s.svc.%s:%d" (include "voiceagent.componentName" (dict "ctx" . "component" "recovery")) .Release.Namespace .Values.clusterDomain (int .Values.recovery.grpc.port) -}}
{{- end -}}

{{/* "true" when recovery_svc is installed: it recovers the chart's own agent only. */}}
{{- define "voiceagent.recoveryEnabled" -}}
{{- if and .Values.agent.enabled .Values.recovery.enabled }}true{{ end -}}
{{- end -}}

{{/* The URL livekit-server's webhooks go to (livekit.yaml `webhook.urls`). */}}
{{- define "voiceagent.recoveryWebhookUrl" -}}
{{- printf "http://%s.%s.svc.%s:%d/livekit/webhook" (include "voiceagent.componentName" (dict "ctx" . "component" "recovery")) .Release.Namespace .Values.clusterDomain (int .Values.recovery.webhook.port) -}}
{{- end -}}

{{/* The ServiceAccount of a component's pods: (dict "ctx" $ "component" "agent"). With
     service-account credentials the agent, context_svc and recovery_svc each run as their
     own, since their tokens are their identities. */}}
{{- define "voiceagent.componentServiceAccount" -}}
{{- if and (eq .ctx.Values.auth.mode "serviceAccount") (has .component (list "agent" "context" "recovery")) -}}
{{- include "voiceagent.componentName" . -}}
{{- else -}}
{{- include "voiceagent.serviceAccountName" .ctx -}}
{{- end -}}
{{- end -}}

{{- define "voiceagent.serviceAccountSubject" -}}
{{- printf "system:serviceaccount:%s:%s" .ctx.Release.Namespace (include "voiceagent.componentServiceAccount" .) -}}
{{- end -}}

{{/* Subject -> grant, as JSON, for the services' AUTH_GRANTS: the agent's tenant and the
     scopes it uses, context_svc's feed, shared vectors and knowledge (platform scopes),
     recovery_svc's reads and claims in the agent's tenant, then the operator's own
     (auth.serviceAccount.grants). */}}
{{- define "voiceagent.authGrants" -}}
{{- $grants := dict -}}
{{- $agent := include "voiceagent.serviceAccountSubject" (dict "ctx" . "component" "agent") -}}
{{- $_ := set $grants $agent (dict "tenant" .Values.agent.tenant "scopes" (list "state.read" "state.write" "context.read")) -}}
{{- $context := include "voiceagent.serviceAccountSubject" (dict "ctx" . "component" "context") -}}
{{- $_ := set $grants $context (dict "tenant" "context_svc" "scopes" (list "state.read" "state.feed" "state.index" "state.knowledge")) -}}
{{- if include "voiceagent.recoveryEnabled" . -}}
{{- $recovery := include "voiceagent.serviceAccountSubject" (dict "ctx" . "component" "recovery") -}}
{{- $_ := set $grants $recovery (dict "tenant" .Values.agent.tenant "scopes" (list "state.read" "state.write")) -}}
{{- end -}}
{{- range $subject, $grant := .Values.auth.serviceAccount.grants -}}
{{- $_ := set $grants $subject $grant -}}
{{- end -}}
{{- toJson $grants -}}
{{- end -}}

{{/* recovery_svc's AUTH_GRANTS: only the agent's jobs attend, for the agent's tenant
     (Attend needs state.write, the scope of the state the job writes). */}}
{{- define "voiceagent.recoveryAuthGrants" -}}
{{- $agent := include "voiceagent.serviceAccountSubject" (dict "ctx" . "component" "agent") -}}
{{- toJson (dict $agent (dict "tenant" .Values.agent.tenant "scopes" (list "state.write"))) -}}
{{- end -}}

{{/* How the services verify tokens: (dict "ctx" $ "prefix" "STATE_"), and "grants" (JSON)
     for grants other than the shared ones. */}}
{{- define "voiceagent.authEnv" -}}
{{- $ctx := .ctx -}}
{{- if eq $ctx.Values.auth.mode "serviceAccount" -}}
{{- $sa := $ctx.Values.auth.serviceAccount -}}
- name: {{ .prefix }}AUTH_JWKS_URL
  value: {{ $sa.jwksUrl | quote }}
- name: {{ .prefix }}AUTH_JWKS_CA_FILE
  value: /var/run/secrets/voiceagent/kube-ca.crt
- name: {{ .prefix }}AUTH_JWKS_TOKEN_FILE
  value: /var/run/secrets/voiceagent/kube-token
- name: {{ .prefix }}AUTH_JWT_AUDIENCE
  value: {{ $sa.audience | quote }}
{{- if $sa.issuer }}
- name: {{ .prefix }}AUTH_JWT_ISSUER
  value: {{ $sa.issuer | quote }}
{{- end }}
- name: {{ .prefix }}AUTH_GRANTS
  value: {{ default (include "voiceagent.authGrants" $ctx) .grants | quote }}
{{- else -}}
- name: {{ .prefix }}AUTH_JWT_KEY_FILE
  value: /var/run/secrets/voiceagent/jwt-key
{{- end -}}
{{- end -}}

{{/* The credentials volume, mounted at /var/run/secrets/voiceagent:
     (dict "ctx" $ "verifies" true "presents" true). sharedKey: the HS256 key file.
     serviceAccount: for a service that verifies, a token for the API server and the
     cluster CA (to read the key set); for one that calls others, its token for them. */}}
{{- define "voiceagent.credentialsVolume" -}}
{{- $ctx := .ctx -}}
- name: credentials
{{- if eq $ctx.Values.auth.mode "serviceAccount" }}
{{- $sa := $ctx.Values.auth.serviceAccount }}
  projected:
    defaultMode: 0440
    sources:
      {{- if .verifies }}
      - serviceAccountToken:
          path: kube-token
          expirationSeconds: {{ int $sa.tokenExpirationSeconds }}
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: kube-ca.crt
      {{- end }}
      {{- if .presents }}
      - serviceAccountToken:
          path: token
          audience: {{ $sa.audience | quote }}
          expirationSeconds: {{ int $sa.tokenExpirationSeconds }}
      {{- end }}
{{- else }}
  secret:
    secretName: {{ include "voiceagent.jwtSecretName" $ctx }}
    defaultMode: 0440
    items:
      - key: {{ $ctx.Values.auth.existingSecretKey }}
        path: jwt-key
{{- end }}
{{- end -}}

{{/* Egress to the API server for the key set (auth.mode serviceAccount). */}}
{{- define "voiceagent.apiServerEgress" -}}
{{- if eq .Values.auth.mode "serviceAccount" }}
{{- with .Values.networkPolicy.egress.apiServer }}
- ports:
    {{- toYaml .ports | nindent 4 }}
  {{- with .to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* An environment variable's value from a number (or string, or boolean) in the values.
     Helm reads every number as a float64, and `quote` alone writes 7776000 as "7.776e+06",
     which an int setting refuses. A whole number is written as an integer, any other number
     in Go's shortest form ("0.1", "1e-05", which Python's float() reads), anything else as
     it is. Every env value that may be a number goes through here. */}}
{{- define "voiceagent.envValue" -}}
{{- if and (kindIs "float64" .) (eq (floor .) .) -}}
{{- printf "%.0f" . | quote -}}
{{- else -}}
{{- . | quote -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by state_svc, context_svc and recovery_svc:
     (dict "ctx" $ "prefix" "STATE_" "values" .Values.state), and "grants" for authEnv.
     A service without grpc.maxConnectionAgeSeconds keeps its own (recovery_svc: never,
     since its streams live as long as a call). */}}
{{- define "voiceagent.serviceEnv" -}}
{{- $v := .values -}}
- name: {{ .prefix }}HOST
  value: "0.0.0.0"
- name: {{ .prefix }}PORT
  value: {{ include "voiceagent.envValue" $v.grpc.port }}
- name: {{ .prefix }}METRICS_HOST
  value: "0.0.0.0"
- name: {{ .prefix }}METRICS_PORT
  value: {{ include "voiceagent.envValue" $v.metrics.port }}
{{ include "voiceagent.authEnv" (dict "ctx" .ctx "prefix" .prefix "grants" .grants) }}
- name: {{ .prefix }}GRACE_PERIOD_S
  value: {{ include "voiceagent.envValue" $v.gracePeriodSeconds }}
- name: {{ .prefix }}SHUTDOWN_DELAY_S
  value: {{ include "voiceagent.envValue" $v.shutdownDelaySeconds }}
{{- if hasKey $v.grpc "maxConnectionAgeSeconds" }}
- name: {{ .prefix }}MAX_CONNECTION_AGE_S
  value: {{ include "voiceagent.envValue" $v.grpc.maxConnectionAgeSeconds }}
- name: {{ .prefix }}MAX_CONNECTION_AGE_GRACE_S
  value: {{ include "voiceagent.envValue" $v.grpc.maxConnectionAgeGraceSeconds }}
{{- end }}
- name: {{ .prefix }}LOG_LEVEL
  value: {{ $v.logLevel | quote }}
{{- with .ctx.Values.tracing.otlpEndpoint }}
- name: {{ $.prefix }}OTLP_ENDPOINT
  value: {{ . | quote }}
- name: {{ $.prefix }}TRACE_SAMPLE_RATIO
  value: {{ include "voiceagent.envValue" $.ctx.Values.tracing.sampleRatio }}
{{- end }}
{{- end -}}

{{/* Native gRPC probes for the gRPC services: (dict "values" .Values.state), with
"readyService" the gRPC service whose health is readiness (context_svc's turns SERVING only
once its memory caught up with the feed; "" stays the liveness answer). */}}
{{- define "voiceagent.grpcProbes" -}}
{{- $p := .values.probes -}}
startupProbe:
  grpc:
    port: {{ .values.grpc.port }}
  periodSeconds: {{ $p.startup.periodSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
readinessProbe:
  grpc:
    port: {{ .values.grpc.port }}
    {{- with .readyService }}
    service: {{ . }}
    {{- end }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
livenessProbe:
  grpc:
    port: {{ .values.grpc.port }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
{{- end -}}

{{/* Scheduling fields shared by every workload: (dict "ctx" $ "values" .Values.state "component" "state") */}}
{{- define "voiceagent.scheduling" -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .values.affinity }}
affinity:
  {{- toYaml .values.affinity | nindent 2 }}
{{- else }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "voiceagent.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 14 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* HorizontalPodAutoscaler or KEDA ScaledObject, never both:
     (dict "ctx" $ "component" "state" "values" .Values.state "kind" "Deployment") */}}
{{- define "voiceagent.autoscaling" -}}
{{- $a := .values.autoscaling -}}
{{- $name := include "voiceagent.componentName" (dict "ctx" .ctx "component" .component) -}}
{{- if and $a.enabled (eq $a.engine "hpa") }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "voiceagent.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $a.targetCPUUtilizationPercentage }}
    {{- with $a.podsMetric }}
    {{- if .name }}
    - type: Pods
      pods:
        metric:
          name: {{ .name }}
        target:
          type: AverageValue
          averageValue: {{ .targetAverageValue | quote }}
    {{- end }}
    {{- end }}
  {{- with $a.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- else if and $a.enabled (eq $a.engine "keda") }}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ $name }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "voiceagent.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicaCount: {{ $a.minReplicas }}
  maxReplicaCount: {{ $a.maxReplicas }}
  {{- with $a.behavior }}
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        {{- toYaml . | nindent 8 }}
  {{- end }}
  triggers:
    - type: cpu
      metricType: Utilization
      metadata:
        value: {{ $a.targetCPUUtilizationPercentage | quote }}
    {{- with $a.keda.prometheus }}
    {{- if .query }}
    - type: prometheus
      metadata:
        serverAddress: {{ .serverAddress | quote }}{{/* the schema requires it with a query */}}
        query: {{ tpl .query $.ctx | quote }}
        threshold: {{ .threshold | quote }}
    {{- end }}
    {{- end }}
{{- end }}
{{- end -}}

{{/* PodDisruptionBudget: (dict "ctx" $ "component" "state" "values" .Values.state) */}}
{{- define "voiceagent.pdb" -}}
{{- $p := .values.podDisruptionBudget -}}
{{- if $p.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "voiceagent.componentName" (dict "ctx" .ctx "component" .component) }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "voiceagent.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
spec:
  {{- if hasKey $p "minAvailable" }}
  minAvailable: {{ $p.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $p.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "voiceagent.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 6 }}
{{- end }}
{{- end -}}

{{/* ServiceMonitor: (dict "ctx" $ "component" "state") */}}
{{- define "voiceagent.serviceMonitor" -}}
{{- $m := .ctx.Values.monitoring.serviceMonitor -}}
{{- if $m.enabled }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "voiceagent.componentName" (dict "ctx" .ctx "component" .component) }}
  namespace: {{ default .ctx.Release.Namespace $m.namespace }}
  labels:
    {{- include "voiceagent.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
    {{- with $m.additionalLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  jobLabel: app.kubernetes.io/component
  namespaceSelector:
    matchNames:
      - {{ .ctx.Release.Namespace }}
  selector:
    matchLabels:
      {{- include "voiceagent.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 6 }}
      voiceagent.io/metrics: "true"
  endpoints:
    - port: metrics
      path: /metrics
      interval: {{ $m.interval }}
      scrapeTimeout: {{ $m.scrapeTimeout }}
      {{- with $m.relabelings }}
      relabelings:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $m.metricRelabelings }}
      metricRelabelings:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
{{- end -}}

{{/* NetworkPolicy peers */}}
{{- define "voiceagent.peerPods" -}}
- podSelector:
    matchLabels:
      {{- include "voiceagent.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 6 }}
{{- end -}}

{{- define "voiceagent.monitoringPeer" -}}
- namespaceSelector:
    {{- toYaml .Values.networkPolicy.monitoring.namespaceSelector | nindent 4 }}
  {{- with .Values.networkPolicy.monitoring.podSelector }}
  podSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{- define "voiceagent.dnsEgress" -}}
- to:
    - namespaceSelector:
        {{- toYaml .Values.networkPolicy.dns.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml .Values.networkPolicy.dns.podSelector | nindent 8 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end -}}

{{- define "voiceagent.otlpEgress" -}}
{{- with .Values.networkPolicy.egress.otlp }}
{{- if .enabled }}
- to:
    {{- toYaml .to | nindent 4 }}
  ports:
    {{- toYaml .ports | nindent 4 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Every check of the values the schema cannot express (one value needs another, a
     removed value), run once by templates/validate.yaml. Each problem names the value and
     how to set it; all of them are reported in one failure, so a new user fixes every one
     in one go instead of one per run. */}}
{{- define "voiceagent.validate" -}}
{{- $v := .Values -}}
{{- $ns := .Release.Namespace -}}
{{- $problems := list -}}
{{- /* Kubernetes 1.30: the agent's preStop hook is a `sleep` action (PodLifecycleSleepAction,
       on by default since 1.30). Below 1.21 is what a helm built without version stamps
       assumes when rendering without a cluster (`helm template`); a cluster that old
       refuses the chart's policy/v1 resources anyway. */ -}}
{{- $kube := .Capabilities.KubeVersion.Version -}}
{{- if semverCompare ">=1.21.0-0 <1.30.0-0" $kube }}
{{- $problems = append $problems (printf "Kubernetes %s: the chart needs 1.30 or newer (the agent's preStop hook is a sleep action)" $kube) -}}
{{- end }}
{{- if hasKey $v.context "persistence" }}
{{- $problems = append $problems (printf "context.persistence was removed: context_svc's index is now a cache each replica rebuilds from state_svc, always on an emptyDir, and context_svc scales like state_svc (context.replicaCount, context.autoscaling). Delete context.persistence from your values; its emptyDirSizeLimit is now context.index.sizeLimit. A claim an earlier release created (%s, kept by helm) is no longer mounted: delete it (kubectl -n %s delete pvc %s) when you no longer need its data" (include "voiceagent.componentName" (dict "ctx" . "component" "context")) $ns (include "voiceagent.componentName" (dict "ctx" . "component" "context"))) -}}
{{- end }}
{{- if $v.state.enabled }}
{{- if not (or $v.mongodb.uri $v.mongodb.existingSecret $v.mongodb.dev.enabled) }}
{{- $problems = append $problems (printf "mongodb: state_svc needs a database. Put its URI in a Secret (kubectl -n %s create secret generic voiceagent-mongodb --from-literal=%s='mongodb://...') and --set mongodb.existingSecret=voiceagent-mongodb; or --set mongodb.uri='mongodb://...'; or --set mongodb.dev.enabled=true (development only)" $ns $v.mongodb.existingSecretKey) -}}
{{- end }}
{{- if and (not $v.state.autoscaling.enabled) (lt (int $v.state.replicaCount) 1) }}
{{- $problems = append $problems "state.replicaCount must be at least 1" -}}
{{- end }}
{{- end }}
{{- if and (eq $v.auth.mode "sharedKey") (not $v.auth.existingSecret) $v.auth.jwtKey (lt (len $v.auth.jwtKey) 32) }}
{{- $problems = append $problems "auth.jwtKey must be at least 32 characters (HS256); leave it empty and the chart generates one" -}}
{{- end }}
{{- if $v.agent.enabled }}
{{- if not $v.state.enabled }}
{{- $problems = append $problems "state.enabled: the agent stores every conversation through state_svc: enable state too (or --set agent.enabled=false)" -}}
{{- end }}
{{- if not (or $v.livekit.url $v.livekit.existingSecret) }}
{{- $problems = append $problems (printf "livekit.url: the agent needs the LiveKit server's URL (ws:// or wss://): --set livekit.url=wss://livekit.example.com, or put it in livekit.existingSecret under the key %s" $v.livekit.urlKey) -}}
{{- end }}
{{- if not (or $v.livekit.existingSecret (and $v.livekit.apiKey $v.livekit.apiSecret)) }}
{{- $problems = append $problems (printf "livekit.existingSecret: the agent needs LiveKit credentials: kubectl -n %s create secret generic voiceagent-livekit --from-literal=%s=API... --from-literal=%s=... and --set livekit.existingSecret=voiceagent-livekit; or --set livekit.apiKey=... --set livekit.apiSecret=..." $ns $v.livekit.apiKeyKey $v.livekit.apiSecretKey) -}}
{{- end }}
{{- $a := $v.agent.autoscaling -}}
{{- if and $a.enabled (ge (float64 $a.targetCPUUtilizationPercentage) (mulf (float64 $v.agent.loadThreshold) 100.0)) }}
{{- $problems = append $problems (printf "agent.autoscaling.targetCPUUtilizationPercentage (%v) must be below agent.loadThreshold × 100 (%v): above it the worker refuses jobs before the HPA adds pods" $a.targetCPUUtilizationPercentage (mulf (float64 $v.agent.loadThreshold) 100.0)) -}}
{{- end }}
{{- end }}
{{- $openaiUsers := list -}}
{{- if $v.agent.enabled }}{{ $openaiUsers = append $openaiUsers "the agent (speech-to-text, LLM, text-to-speech)" }}{{ end -}}
{{- if and $v.context.enabled (eq $v.context.embedding.backend "openai") }}{{ $openaiUsers = append $openaiUsers "context_svc (context.embedding.backend=openai)" }}{{ end -}}
{{- if and $openaiUsers (not (include "voiceagent.openaiKeyConfigured" .)) }}
{{- $problems = append $problems (printf "openai.existingSecret: %s needs an OpenAI API key (or one for the server at openai.baseUrl): kubectl -n %s create secret generic voiceagent-openai --from-literal=%s=sk-... and --set openai.existingSecret=voiceagent-openai; or --set openai.apiKey=sk-..." (join " and " $openaiUsers) $ns $v.openai.existingSecretKey) -}}
{{- end }}
{{- if and $v.context.enabled (not $v.state.enabled) }}
{{- $problems = append $problems "state.enabled: context_svc follows state_svc's feed: enable state too (or --set context.enabled=false)" -}}
{{- end }}
{{- if $problems }}
{{- $lines := list -}}
{{- range $problems }}{{ $lines = append $lines (printf "  - %s" .) }}{{ end -}}
{{- fail (printf "\n%d problem(s) to fix before this chart installs (all of them; each says how):\n%s" (len $problems) (join "\n" $lines)) }}
{{- end }}
{{- end -}}
