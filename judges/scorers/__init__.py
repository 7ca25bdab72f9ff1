"""Scorers: the registry that dispatches a rubric, and one module per scorer/method."""
