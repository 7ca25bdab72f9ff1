"""The `evaluator serve` HTTP server and its static trends page."""
