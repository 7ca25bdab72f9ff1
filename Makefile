# `make check` runs what CI runs after the install (.ci/run): lint, format, the layer
# contracts, types, then the tests. `make fast` skips the tests.
.PHONY: check fast lint format types contracts test

check: fast test

fast: lint format contracts types

lint:
	ruff check .

format:
	ruff format --check .

contracts:
	lint-imports

types:
	mypy evaluator judges evalcore

test:
	python -m pytest
