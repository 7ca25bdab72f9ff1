"""Alembic environment, configured by evaluator.store.schema (no alembic.ini).

evaluator.store.schema hands over an open connection in `config.attributes["connection"]`, already
inside the transaction (and lock) it runs migrations in; offline mode (`--sql`) renders
SQL for `config.attributes["url"]`.
"""

from __future__ import annotations

from alembic import context

from evaluator.store.schema import include_name
from evaluator.store.tables import model_metadata

config = context.config
target_metadata = model_metadata()


def run_offline() -> None:
    context.configure(
        url=config.attributes["url"],
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
