#!/usr/bin/env bash
# `make run`: state_svc and context_svc on the embedded store, on loopback, then a text
# conversation with the agent in this terminal (`python -m voiceagent_backbone.agent_svc chat`).
# When the chat ends (or on Ctrl-C) the services stop; run it again to resume the same
# conversation. What it keeps (the stores, a development signing key, logs) lives in RUN_DIR.
# It needs only the venv (`bash scripts/setup.sh --run`, which `make run` does first).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

usage() {
  cat <<'USAGE'
usage: scripts/run.sh [--services-only] [--room NAME] [--user ID] [--name NAME] [--language CODE]

Starts state_svc and context_svc (embedded SQLite store, loopback only), then a text chat
with the agent in this terminal; the services stop when the chat ends. `make run` sets up
the Python venv, then runs this.

  --services-only   only the two services, until Ctrl-C (to try them with grpcurl)
  --room NAME       the chat's room (default: terminal); the same room resumes its conversation
  --user ID         the user id (default: $USER)
  --name NAME       the name the agent greets
  --language CODE   the preferred language (default: en)
  -h, --help        this help; starts nothing

In the chat: /quit or Ctrl-D ends the conversation; Ctrl-C leaves at once.

Environment:
  RUN_DIR                 where the stores, a development key and the logs live (default .run)
  STATE_PORT, CONTEXT_PORT                  gRPC ports (default 50051, 50052)
  STATE_METRICS_PORT, CONTEXT_METRICS_PORT  metrics ports (default 9101, 9102)
  OPENAI_API_KEY          the agent's LLM; without it a labelled offline responder answers
  STATE_*, CONTEXT_*, AGENT_*   any other setting (python -m voiceagent_backbone.state_svc
                          --help, ...context_svc --help, ...agent_svc --help list them)
USAGE
}

services_only=0
chat_args=()
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --services-only) services_only=1 ;;
    *) chat_args+=("$arg") ;;
  esac
done

py=.venv/bin/python
if [[ ! -x "$py" ]]; then
  echo "run: no Python venv in .venv: run 'make run' (or 'bash scripts/setup.sh --run') first" >&2
  exit 1
fi
grpcurl=.tools/bin/grpcurl
[[ -x "$grpcurl" ]] || grpcurl="$(command -v grpcurl || true)"

run_dir="${RUN_DIR:-.run}"
# Each service reads its own prefix; the chat's AGENT_* point it at these two.
export STATE_PORT="${STATE_PORT:-50051}" CONTEXT_PORT="${CONTEXT_PORT:-50052}"
export STATE_METRICS_PORT="${STATE_METRICS_PORT:-9101}"
export CONTEXT_METRICS_PORT="${CONTEXT_METRICS_PORT:-9102}"
key_file="$run_dir/dev-jwt-key"
export STATE_AUTH_JWT_KEY_FILE="$key_file" STATE_SQLITE_PATH="$run_dir/state.sqlite3"
export CONTEXT_AUTH_JWT_KEY_FILE="$key_file" CONTEXT_INDEX_PATH="$run_dir/context.sqlite3"
export CONTEXT_STATE_TARGET="127.0.0.1:$STATE_PORT"
export AGENT_STATE_TARGET="127.0.0.1:$STATE_PORT" AGENT_CONTEXT_TARGET="127.0.0.1:$CONTEXT_PORT"
export AGENT_AUTH_JWT_KEY_FILE="$key_file" AGENT_TENANT=demo
export AGENT_SPOOL_DIR="$run_dir/agent-spool"

# Every setting and every port, before anything starts: one line each on the terminal.
"$py" scripts/run_checks.py settings || exit $?

mkdir -p "$run_dir"
if [[ ! -s "$key_file" ]]; then
  (umask 077 && "$py" -c 'import secrets; print(secrets.token_urlsafe(48))' >"$key_file")
fi

# The services run in a session of their own: Ctrl-C in the terminal reaches the chat alone,
# which then stores its last writes while state_svc still runs; this script stops them after.
detach=()
command -v setsid >/dev/null 2>&1 && detach=(setsid)
pids=()
names=()
stop() {
  local status=$?
  trap - INT TERM HUP EXIT
  # context_svc first: its feed stream to state_svc would hold state_svc's graceful stop.
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || continue
    for _ in {1..50}; do
      kill -0 "${pids[i]}" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "${pids[i]}" 2>/dev/null; then
      echo "run: waiting for ${names[i]} to stop (graceful: its calls finish)..." >&2
    fi
    wait "${pids[i]}" 2>/dev/null || true
  done
  exit "$status"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

start() {
  local name="$1"
  "${detach[@]}" "$py" -m "voiceagent_backbone.$name" >"$run_dir/$name.log" 2>&1 </dev/null &
  pids+=($!)
  names+=("$name")
}
start state_svc
start context_svc

"$py" scripts/run_checks.py wait \
  "state_svc:$STATE_PORT:${pids[0]}:$run_dir/state_svc.log" \
  "context_svc:$CONTEXT_PORT:${pids[1]}:$run_dir/context_svc.log" || exit $?

token="$("$py" -m voiceagent_backbone.servicekit.token --tenant demo --key-file "$key_file" \
  --scopes "state.read state.write state.admin context.read context.write" --ttl 86400)"

cat <<INFO

  state_svc    127.0.0.1:$STATE_PORT   (health SERVING, metrics http://127.0.0.1:$STATE_METRICS_PORT/metrics)
  context_svc  127.0.0.1:$CONTEXT_PORT   (health SERVING, metrics http://127.0.0.1:$CONTEXT_METRICS_PORT/metrics)
  logs         $run_dir/state_svc.log, $run_dir/context_svc.log, $run_dir/agent_chat.log

Try them with grpcurl (${grpcurl:-not installed: 'bash scripts/install-tools.sh grpcurl' builds it with Go}):

  export TOKEN=$token

  ${grpcurl:-grpcurl} -plaintext 127.0.0.1:$STATE_PORT list
  ${grpcurl:-grpcurl} -plaintext 127.0.0.1:$STATE_PORT describe voiceagent.state.v1.StateService
  ${grpcurl:-grpcurl} -plaintext -d '{"service": ""}' 127.0.0.1:$STATE_PORT grpc.health.v1.Health/Check
  ${grpcurl:-grpcurl} -plaintext 127.0.0.1:$CONTEXT_PORT list

A new token any time: .venv/bin/python -m voiceagent_backbone.servicekit.token --tenant demo --key-file $key_file
INFO

if [[ "$services_only" == 1 ]]; then
  echo "Press Ctrl-C to stop."
  status=0
  wait -n "${pids[@]}" || status=$?
  echo "run: a service stopped by itself: see $run_dir/state_svc.log and $run_dir/context_svc.log" >&2
  exit $((status ? status : 1))
fi

# The chat: the real agent class and hooks, typed turns through the spoken-turn path. The
# terminal shows the conversation and errors; its logs go to the log file.
status=0
"$py" -m voiceagent_backbone.agent_svc chat --rooms-dir "$run_dir/chat-rooms" \
  --log-file "$run_dir/agent_chat.log" "${chat_args[@]}" || status=$?
if ((status == 0)); then
  echo "(for grpcurl: export TOKEN=$token)"
fi
exit "$status"
