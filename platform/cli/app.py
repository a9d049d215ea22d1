"""The ``prunehive`` Typer app and what every command shares: consoles, one-line errors, JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console

from prunehive.workers.quiet import quiet_libraries

quiet_libraries()  # before MLflow, transformers or Ray load: their chatter stays off stderr
app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Search per-layer pruning on Ray; track it in MLflow."
)
out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(fn: F) -> F:
    """Bad input becomes one line on stderr and exit code 2, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, KeyError, FileNotFoundError, ImportError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")


# Options several commands share, defined once so their flags, variables and help never drift apart.
SERVER_OPT = typer.Option(
    None,
    "--server",
    envvar="PRUNEHIVE_SERVER",
    show_envvar=True,
    help="URL of the prunehive service (jobs, show: ask it instead of the local job store).",
)
TOKEN_OPT = typer.Option(None, "--token", envvar="PRUNEHIVE_TOKEN", show_envvar=True, help="Bearer token for --server.")
DATABASE_OPT = typer.Option(None, "--database-url", envvar="PRUNEHIVE_DATABASE_URL", help="Job store URL.")
JSON_OPT = typer.Option(False, "--json", help="Print one JSON object.")
