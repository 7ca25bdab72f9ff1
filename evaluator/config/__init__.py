"""Configuration: settings, rubric loading, regression policy parsing, URL safety.

The bottom layer: it imports nothing else from `evaluator`.
"""
