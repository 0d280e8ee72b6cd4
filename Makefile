.PHONY: setup test test-fast lint fix smoke

setup:
	python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 && .venv/bin/pip install -e ".[test]"

test:
	python -m pytest -q

test-fast:
	python -m pytest -q -m "not slow"

lint:
	ruff check src tests benchmarks
	ruff format --check src tests benchmarks

fix:
	ruff check --fix src tests benchmarks
	ruff format src tests benchmarks

smoke:
	openblip smoke
