"""`python -m evaluator.cli` is `evaluator`."""

from __future__ import annotations

from evaluator.cli.main import main

raise SystemExit(main())
