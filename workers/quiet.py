"""Keep the libraries' own chatter off stderr, which carries prunehive's progress and one-line errors.

Without this a run prints MLflow's INFO lines as it creates its database, transformers' "Loading
weights" progress bars, and, for federated runs, Flower's warnings about choices made on purpose
(no federated evaluation round; the ``run_simulation`` entry point) with raw colour codes, into
files that stderr was redirected to. Warnings and errors that say something went wrong still show.

Environment variables are set only where the user has not set them, before the libraries are
imported (they read them at import), so Ray workers started by this process inherit them too.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

QUIET_ENVIRONMENT = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers and huggingface_hub tqdm bars ("Loading weights")
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # "Creating initial MLflow database tables...", "Updating database tables"
    "FLWR_TELEMETRY_ENABLED": "0",
}
QUIET_LOGGERS = ("mlflow", "alembic")  # for when they were imported before ``quiet_libraries`` ran
# Flower warns about these on every federated run, though each is a deliberate choice of the job:
# the server evaluates the global model itself, and ``run_simulation`` is how it drives rounds in-process.
EXPECTED_FLOWER_WARNINGS = ("fraction_evaluate is set to 0.0", "`run_simulation` function is deprecated")


def quiet_libraries() -> None:
    """Quiet MLflow, alembic and transformers for this process and the processes it starts."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level in (logging.NOTSET, logging.DEBUG, logging.INFO):
            logger.setLevel(logging.WARNING)
    if "transformers" in sys.modules:  # imported already: its progress-bar switch was read at import
        # local: only once transformers is loaded; keeps it out of CLI start-up
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


class _ExpectedWarnings(logging.Filter):
    """Drops the Flower warnings listed in ``EXPECTED_FLOWER_WARNINGS``; every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in EXPECTED_FLOWER_WARNINGS)


def quiet_flower() -> None:
    """Flower at WARNING, without its expected warnings, and in colour only on a terminal. Importing
    Flower's simulation asks Python to show every DeprecationWarning once, process-wide (so MLflow's
    and SQLAlchemy's would print); unless the user chose warnings with ``-W``, that is undone."""
    # local: keeps flwr out of CLI start-up
    import flwr.simulation  # noqa: F401  (its import adds the process-wide filter undone below)
    from flwr.common.logger import update_console_handler  # local: keeps flwr out of CLI start-up

    if not sys.warnoptions:
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    logger = logging.getLogger("flwr")
    logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _ExpectedWarnings) for f in logger.filters):
        logger.addFilter(_ExpectedWarnings())
    update_console_handler(colored=sys.stderr.isatty())
