"""`python -m evaluator.cli`: the same as the `evaluator` console script."""

from __future__ import annotations

import sys

from evaluator.cli.main import main

sys.exit(main())
