# The two commands a newcomer needs: `make run` and `make test`. Everything else is here
# for those who want one step at a time.
SHELL := /bin/bash
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: help run test e2e setup tools proto check pytest clean bench-state bench-context bench-agent bench-load bench-recovery

help: ## this list
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z0-9-]+):[^#]*## (.*)/  make \1\t\2/' | expand -t 24

# `make run` needs only Python: the venv with the services' and the agent's packages (no Go
# tools, no apt); `make test` and the rest set up everything.
# Ctrl-C is make's own (it exits 130); run.sh's 130 is not an error for make to report.
run: ## set up the venv, start state_svc and context_svc on the embedded store, chat with the agent in the terminal
	@bash scripts/setup.sh --run
	@bash scripts/run.sh || { status=$$?; ((status == 130)) || exit $$status; }

test: setup check pytest ## set up, then every gate and every test (the cluster ones too)

e2e: setup ## only the cluster tests: a real single-node Kubernetes here (root), the chart installed, the scenarios
	@$(PY) -m pytest tests/cluster $(PYTEST_ARGS)

setup: ## Python venv (uv, locked) and the Go-built tools in .tools/
	@bash scripts/setup.sh

tools: ## only the Go-built tools
	@bash scripts/install-tools.sh

proto: ## regenerate Python code from proto/
	@bash scripts/gen-proto.sh

check: ## generated code, buf format/lint/breaking, ruff, mypy
	@bash scripts/check.sh

pytest:
	@$(PY) -m pytest $(PYTEST_ARGS)

bench-state: setup ## state_svc appends vs raw inserts on FerretDB (or MONGODB_URI)
	@$(PY) -m bench.bench_state $(BENCH_ARGS)

DATASET ?= ../shared/datasets/locomo-dev/locomo-dev.json
# The generated mode keeps state_svc on its embedded store: it measures context_svc, and
# FerretDB answers the feed's range reads by scanning, which would measure FerretDB instead.
bench-context: setup ## context_svc recall@k and Enrich latency on LoCoMo-format DATASET, then 100k generated turns
	@$(PY) -m bench.bench_context --mode locomo --dataset $(DATASET) $(BENCH_ARGS)
	@$(PY) -m bench.bench_context --mode generated --backend sqlite $(BENCH_ARGS_GENERATED)

bench-agent: setup ## handler hand-off time and on_user_turn_completed latency, context_svc up and hung
	@$(PY) -m bench.bench_agent $(BENCH_ARGS)

bench-load: setup ## the most simulated conversations state_svc and context_svc sustain together (append p99 <= 100 ms, Enrich p95 <= 50 ms)
	@$(PY) -m bench.bench_load $(BENCH_ARGS)

bench-recovery: setup ## SIGKILL the job process of a live call 10 times: recovered, double dispatches, kill to the new agent's first audio (p50 <= 3 s, max <= 6 s)
	@$(PY) -m bench.bench_recovery $(BENCH_ARGS)

clean: ## remove the venv and built tools
	rm -rf .venv .tools .run
