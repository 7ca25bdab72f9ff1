"""The `evaluator` command line: one module per command group."""

from __future__ import annotations

from evaluator.cli.main import main

__all__ = ["main"]
