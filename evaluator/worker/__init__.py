"""The arq worker: runtime wiring, the evaluation pipeline, judge limits, backfill."""
