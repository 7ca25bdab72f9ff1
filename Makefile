# `make check` runs what CI runs after the install (.ci/run): lint, format, the layer
# contracts, types, the documentation site (strict; needs the docs extra), then the tests.
# `make fast` skips the tests.
.PHONY: check fast lint format types contracts docs test

check: fast test

fast: lint format contracts types docs

lint:
	ruff check .

format:
	ruff format --check .

contracts:
	lint-imports

types:
	mypy evaluator judges evalcore

docs:
	mkdocs build --strict --site-dir "$$(mktemp -d)"

test:
	python -m pytest
