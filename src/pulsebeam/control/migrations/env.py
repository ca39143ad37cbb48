"""Alembic environment: always run by :func:`pulsebeam.control.database.migrate` on a connection
it passes in ``config.attributes["connection"]`` (no URL in any ini file)."""

from alembic import context

from pulsebeam.control.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
