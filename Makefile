# The usual verbs. Each one sets the project up first (scripts/setup is quick when nothing changed).
.PHONY: setup run dev worker test lint format migrate bench lock

setup:
	scripts/setup

run:
	scripts/run

worker: setup
	.venv/bin/creditrail worker

test:
	scripts/test

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy services chain scripts tests

format: setup
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

migrate: setup
	.venv/bin/creditrail migrate

bench: setup
	scripts/ensure-postgres
	.venv/bin/python -m scripts.bench_ledger
	.venv/bin/python -m scripts.bench_worker
	.venv/bin/python -m scripts.bench_card
	.venv/bin/python -m scripts.bench_outbox
	.venv/bin/python -m scripts.bench_usdc
	.venv/bin/python -m scripts.bench_finance
	.venv/bin/python -m scripts.bench_x402

# The lock files: every transitive dependency pinned, for the image (requirements.lock) and for development
# (requirements-dev.lock, which scripts/setup installs). Regenerated from pyproject.toml, keeping the pins already
# there unless pyproject.toml asks otherwise; `make lock UPGRADE=1` moves every pin to its newest release.
LOCK_COMPILE = .venv/bin/uv pip compile --quiet --universal --python-version 3.11 --custom-compile-command "make lock" \
	$(if $(UPGRADE),--upgrade) pyproject.toml

lock:
	@test -x .venv/bin/uv || scripts/setup || test -x .venv/bin/uv
	$(LOCK_COMPILE) -o requirements.lock
	$(LOCK_COMPILE) --extra dev -o requirements-dev.lock
