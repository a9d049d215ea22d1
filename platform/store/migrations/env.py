"""Alembic environment of the prunehive job store.

``JobStore`` runs it programmatically and passes its own connection (already inside a locked
transaction) as ``config.attributes["connection"]``; without one (the ``alembic`` command line)
it connects to ``sqlalchemy.url``. Our version table is not Alembic's default, because Optuna's
RDB storage keeps its own ``alembic_version`` table in the same database.
"""

from __future__ import annotations

import logging.config

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection

from prunehive.platform.store.models import VERSION_TABLE, Base

config = context.config
if config.config_file_name is not None and not logging.getLogger().handlers:
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

OPTIONS = {"target_metadata": Base.metadata, "version_table": VERSION_TABLE, "render_as_batch": True}


def run_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_on(connection: Connection) -> None:
    context.configure(connection=connection, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url (alembic -x or the ini file) or pass a connection")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        run_on(connection)
        connection.commit()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
