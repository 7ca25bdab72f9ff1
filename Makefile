# `make check` runs what CI runs after the install (.ci/run): lint, format, the layer
# contracts, no fixed sleeps in tests, types, the documentation site (strict; needs the
# docs extra), then the tests.
# `make fast` skips the tests.
.PHONY: check fast lint format types contracts sleeps docs test

check: fast test

fast: lint format contracts sleeps types docs

lint:
	ruff check .

format:
	ruff format --check .

contracts:
	lint-imports

sleeps:  # no test waits on a fixed sleep
	python .ci/no_fixed_sleeps.py

types:
	mypy evaluator judges evalcore  # --strict: pyproject.toml [tool.mypy]

docs:
	mkdocs build --strict --site-dir "$$(mktemp -d)"

test:
	python -m pytest
