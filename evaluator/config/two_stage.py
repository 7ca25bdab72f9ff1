"""The `[two_stage]` settings: a cascade's cheap stage under a CPU budget, and the cap on its
uncertainty-driven judge calls (evaluator.worker.two_stage), per worker process."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TwoStageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # CPU seconds a second the cheap stage (the cascade's local score) may take in one worker
    # process; past it the stage runs on a drawn share p1 < 1 of the traces (recorded on each
    # record, the others get a skipped record). 0 = no bound.
    cheap_cpu_per_s: float = Field(0.5, ge=0, le=1024, allow_inf_nan=False)
    # The bucket's depth in CPU seconds: a burst this large is scored at p1 = 1.
    cheap_cpu_burst_s: float = Field(5.0, gt=0, le=86_400, allow_inf_nan=False)
    # Judge calls a minute one worker may spend on stage-2 draws above the calibration rate
    # (a cascade's options.judge_rate); the rate is lowered in advance to fit. 0 = no cap.
    judge_calls_per_minute: float = Field(0.0, ge=0, allow_inf_nan=False)
