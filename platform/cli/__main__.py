"""``python -m prunehive.platform.cli``: the same app as the ``prunehive`` script."""

from prunehive.platform.cli import app

app()
