"""The trace model and its conversion to the scorers' `EvalCase`."""
