#!/usr/bin/env bash
# A short conversation through the state API and one enrichment through context_svc, with
# grpcurl, checked reply by reply. deploy/kind/e2e.sh runs it through port-forwards; it
# runs as well against `make run`:
#
#   deploy/kind/conversation.sh 127.0.0.1:50051 127.0.0.1:50052 .run/dev-jwt-key
#   TOKEN=... deploy/kind/conversation.sh STATE CONTEXT   (a token from the cluster)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export PATH="$root/.tools/bin:$PATH"

state="$1"
context="$2"
key_file="${3:-}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log() { echo "e2e: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

log "a conversation through the state API"
token="${TOKEN:-}"
if [[ -z "$token" ]]; then
  [[ -n "$key_file" ]] || die "pass a key file as the third argument, or set TOKEN"
  token="$(.venv/bin/python -m voiceagent_backbone.servicekit.token --tenant e2e --key-file "$key_file" \
    --scopes "state.read state.write context.read context.write" --ttl 600)"
fi
auth=(-H "authorization: Bearer $token")
conversation=0190f5e2-8a6b-7cc1-9d43-0a1b2c3d4e5f
events='[
  {"event_id": "0190f5e2-9000-7aaa-8bbb-000000000001", "type": "EVENT_TYPE_USER_MESSAGE", "role": "ROLE_USER", "text": "I need to move my appointment"},
  {"event_id": "0190f5e2-9000-7aaa-8bbb-000000000002", "type": "EVENT_TYPE_AGENT_MESSAGE", "role": "ROLE_AGENT", "text": "Sure, to which day?"}
]'

grpcurl -plaintext "${auth[@]}" \
  -d "{\"conversation_id\": \"$conversation\", \"room_name\": \"e2e-room\", \"user_ids\": [\"ada\"]}" \
  "$state" voiceagent.state.v1.StateService/CreateConversation >"$work/create.json"
grpcurl -plaintext "${auth[@]}" -d "{\"conversation_id\": \"$conversation\", \"events\": $events}" \
  "$state" voiceagent.state.v1.StateService/AppendEvents >"$work/append-1.json"
# The same events again: nothing new is stored, the same sequence numbers come back.
grpcurl -plaintext "${auth[@]}" -d "{\"conversation_id\": \"$conversation\", \"events\": $events}" \
  "$state" voiceagent.state.v1.StateService/AppendEvents >"$work/append-2.json"
grpcurl -plaintext "${auth[@]}" -d "{\"conversation_id\": \"$conversation\", \"last_n\": 10}" \
  "$state" voiceagent.state.v1.StateService/GetHistory >"$work/history.json"

.venv/bin/python - "$work" "$conversation" <<'PY'
import json
import pathlib
import sys

work, conversation = pathlib.Path(sys.argv[1]), sys.argv[2]
created = json.loads((work / "create.json").read_text())
assert created["conversation"]["conversation_id"] == conversation, created
first = json.loads((work / "append-1.json").read_text())
second = json.loads((work / "append-2.json").read_text())
seqs = lambda reply: [int(r["seq"]) for r in reply["results"]]
assert seqs(first) == [1, 2], first
assert seqs(second) == seqs(first), (first, second)
assert all(r.get("duplicate") for r in second["results"]), second
history = json.loads((work / "history.json").read_text())
texts = [e["text"] for e in history["events"]]
assert texts == ["I need to move my appointment", "Sure, to which day?"], history
print("e2e: conversation stored once, in order:", texts, file=sys.stderr)
PY

log "context_svc answers an enrichment"
# The agent's token signs with the same key; here a test tenant ingests and asks.
grpcurl -plaintext "${auth[@]}" \
  -d '{"document": {"document_id": "faq", "title": "FAQ", "text": "Patients park for free in the garage on Elm Street."}}' \
  "$context" voiceagent.context.v1.ContextService/IngestDocument >/dev/null
grpcurl -plaintext "${auth[@]}" -d '{"user_id": "ada", "text": "Where can I park?", "max_items": 3}' \
  "$context" voiceagent.context.v1.ContextService/Enrich | tee "$work/enrich.json"
grep -q "Elm Street" "$work/enrich.json" || die "Enrich did not find the ingested document"

