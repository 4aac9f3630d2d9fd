#!/usr/bin/env bash
# `make run`: state_svc and context_svc on the embedded store, on loopback, then a text
# conversation with the agent in this terminal (`python -m voiceagent_backbone.agent_svc chat`). When the chat
# ends, the services stop; run it again to resume the same conversation.
#   scripts/run.sh [--services-only] [chat options, e.g. --room demo --user ana --name Ana]
# Everything it keeps (the stores, a development signing key, logs) lives in RUN_DIR
# (default .run); a token for grpcurl is printed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
services_only=0
if [[ "${1:-}" == "--services-only" ]]; then
  services_only=1
  shift
fi
py=.venv/bin/python
grpcurl=.tools/bin/grpcurl
command -v "$grpcurl" >/dev/null 2>&1 || grpcurl="$(command -v grpcurl || true)"

run_dir="${RUN_DIR:-.run}"
mkdir -p "$run_dir"
key_file="$run_dir/dev-jwt-key"
if [[ ! -s "$key_file" ]]; then
  "$py" -c 'import secrets; print(secrets.token_urlsafe(48))' >"$key_file"
  chmod 600 "$key_file"
fi

state_port="${STATE_PORT:-50051}"
context_port="${CONTEXT_PORT:-50052}"
for port in "$state_port" "$context_port"; do
  if "$py" -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $port)) != 0)"; then
    echo "run: port $port is already in use (another 'make run'?); set STATE_PORT / CONTEXT_PORT" >&2
    exit 1
  fi
done

pids=()
stopping=0
stop() {
  stopping=1
  trap - INT TERM EXIT
  echo >&2
  echo "run: stopping (SIGTERM, graceful)..." >&2
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
  echo "run: stopped" >&2
}
trap stop EXIT
trap 'stopping=1' INT TERM

STATE_PORT="$state_port" STATE_METRICS_PORT="${STATE_METRICS_PORT:-9101}" \
  STATE_AUTH_JWT_KEY_FILE="$key_file" STATE_SQLITE_PATH="$run_dir/state.sqlite3" \
  "$py" -m voiceagent_backbone.state_svc 2>"$run_dir/state_svc.log" &
pids+=($!)
CONTEXT_PORT="$context_port" CONTEXT_METRICS_PORT="${CONTEXT_METRICS_PORT:-9102}" \
  CONTEXT_STATE_TARGET="127.0.0.1:$state_port" \
  CONTEXT_AUTH_JWT_KEY_FILE="$key_file" CONTEXT_INDEX_PATH="$run_dir/context.sqlite3" \
  "$py" -m voiceagent_backbone.context_svc 2>"$run_dir/context_svc.log" &
pids+=($!)

"$py" - "$state_port" "$context_port" <<'PY'
import asyncio, sys
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

async def wait_serving(port: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(300):
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    sys.exit(f"run: the service on port {port} did not become SERVING; see the logs in RUN_DIR")

async def main() -> None:
    await asyncio.gather(*(wait_serving(int(p)) for p in sys.argv[1:]))

asyncio.run(main())
PY

token="$("$py" -m voiceagent_backbone.servicekit.token --tenant demo --key-file "$key_file" \
  --scopes "state.read state.write state.admin context.read context.write" --ttl 86400)"

cat <<INFO

  state_svc    127.0.0.1:$state_port   (health SERVING, metrics http://127.0.0.1:${STATE_METRICS_PORT:-9101}/metrics)
  context_svc  127.0.0.1:$context_port   (health SERVING, metrics http://127.0.0.1:${CONTEXT_METRICS_PORT:-9102}/metrics)
  logs         $run_dir/state_svc.log, $run_dir/context_svc.log

Try them with grpcurl (${grpcurl:-not installed: run 'make tools'}):

  export TOKEN=$token

  $grpcurl -plaintext 127.0.0.1:$state_port list
  $grpcurl -plaintext 127.0.0.1:$state_port describe voiceagent.state.v1.StateService
  $grpcurl -plaintext -d '{"service": ""}' 127.0.0.1:$state_port grpc.health.v1.Health/Check
  $grpcurl -plaintext 127.0.0.1:$context_port list

A new token any time: .venv/bin/python -m voiceagent_backbone.servicekit.token --tenant demo --key-file $key_file
INFO

if [[ "$services_only" == 1 ]]; then
  echo "Press Ctrl-C to stop." >&2
  # Ctrl-C reaches the services too (same process group); they stop gracefully on it.
  wait -n "${pids[@]}" || true
  if [[ "$stopping" != 1 ]]; then
    echo "run: a service exited unexpectedly; see $run_dir/*.log" >&2
    exit 1
  fi
  exit 0
fi

# The chat: the real agent class and hooks, typed turns through the spoken-turn path.
AGENT_STATE_TARGET="127.0.0.1:$state_port" AGENT_CONTEXT_TARGET="127.0.0.1:$context_port" \
  AGENT_AUTH_JWT_KEY_FILE="$key_file" AGENT_TENANT=demo \
  AGENT_SPOOL_DIR="$run_dir/agent-spool" \
  "$py" -m voiceagent_backbone.agent_svc chat --rooms-dir "$run_dir/chat-rooms" "$@" 2>>"$run_dir/agent_chat.log" ||
  echo "run: the chat failed; see $run_dir/agent_chat.log" >&2
echo "(for grpcurl: export TOKEN=$token)"
