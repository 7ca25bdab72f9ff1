"""Every table the service defines, in one metadata (Alembic's autogenerate, drift checks).

A table class registers itself with `SQLModel.metadata` when its module is imported; this
module imports them all, so `model_metadata()` is complete. A new table module goes in
`TABLE_MODULES`.
"""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlmodel import SQLModel

from evaluator.store import admissions, batches, certifications, models, outbox, trust_models

TABLE_MODULES = (models, outbox, admissions, batches, certifications, trust_models)


def model_metadata() -> MetaData:
    """The metadata of every table the service defines."""
    return SQLModel.metadata
