# The README's two commands: `make demo` (the full local demo) and `make test` (lint, then every
# test).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test unit fuzz bench bench-soak bench-adaptive bench-adaptive-live bench-retries eval-classify lint clean

demo:
	scripts/bootstrap.sh demo
	$(PY) -m kmta.cli demo $(DEMO_ARGS)

test: lint
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# ruff over the whole tree (rule set and reasons in pyproject.toml), mypy --strict on the
# policy core and schemas; `make test` runs it first
lint:
	scripts/bootstrap.sh test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

unit:
	scripts/bootstrap.sh demo
	$(PY) -m pytest -q tests/unit

# property targets over the outbox, compose, address and control paths: >= 100,000 examples
# (FUZZ_ARGS="--examples N --seed S --target NAME"); prints the counts, exits 1 on a failure
fuzz:
	scripts/bootstrap.sh test
	$(PY) -m tests.fuzz $(FUZZ_ARGS)

# BENCH_ARGS="--dkim rsa-sha256 --size 102400" signs on both sides (Postfix through OpenDKIM)
bench:
	scripts/bootstrap.sh bench
	$(PY) scripts/bench.py $(BENCH_ARGS)

# 10 k then 1 M x 2 KB queued while the ISPs are paused, then drained: drain rate, RSS of
# worker and senders (flat?), broker disk bytes per message (scripts/bench_soak.py)
bench-soak:
	scripts/bootstrap.sh bench
	$(PY) scripts/bench_soak.py $(BENCH_ARGS)

bench-adaptive:
	scripts/bootstrap.sh demo
	$(PY) -m tests.bench_adaptive $(BENCH_ARGS)

bench-adaptive-live:
	scripts/bootstrap.sh demo
	$(PY) scripts/bench_adaptive_live.py $(BENCH_ARGS)

bench-retries:
	scripts/bootstrap.sh demo
	$(PY) scripts/bench_retries.py $(BENCH_ARGS)

# Reply classification scored on the labelled corpus (tests/data/replies/: tuned + held-out parts)
eval-classify:
	scripts/bootstrap.sh demo
	$(PY) -m ops.classify_eval $(EVAL_ARGS)

clean:
	-$(PY) -m kmta.cli kafka stop --data-dir .kmta/demo/kafka
	rm -rf .kmta artifacts
