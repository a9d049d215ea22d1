"""The ``prunehive`` command line. Human tables on stderr/stdout; ``--json`` prints one object.

Importing this package registers every command on ``app``, in the order ``prunehive --help`` lists them.
"""

# isort: off
from prunehive.platform.cli.app import app
from prunehive.platform.cli import prune  # noqa: F401  tasks, prune
from prunehive.platform.cli import bench  # noqa: F401  bench
from prunehive.platform.cli import jobs  # noqa: F401  run, jobs, show, ui
from prunehive.platform.cli import export  # noqa: F401  export
from prunehive.platform.cli import eval  # noqa: F401  eval
from prunehive.platform.cli import service  # noqa: F401  server, users, submit, cancel, logs

# isort: on

__all__ = ["app"]
