# The usual verbs. Each one sets the project up first (scripts/setup is quick when nothing changed).
.PHONY: setup run dev worker test lint format migrate bench

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
	.venv/bin/python -m scripts.bench_usdc
	.venv/bin/python -m scripts.bench_finance
