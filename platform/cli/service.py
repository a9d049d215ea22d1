"""``prunehive server``, ``users add``, and the client commands ``submit``, ``cancel``, ``logs``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from prunehive.platform.cli.app import (
    DATABASE_OPT,
    JSON_OPT,
    SERVER_OPT,
    TOKEN_OPT,
    app,
    err,
    friendly_errors,
    out,
    print_json,
)
from prunehive.platform.cli.jobs import open_store
from prunehive.platform.cli.summaries import print_summary
from prunehive.platform.service.data_roots import ENV, DataRoots, roots_from
from prunehive.platform.settings import default_database_url, prunehive_home

ALLOW_OPT = typer.Option([], "--allow-task-module", help="A module whose module:factory tasks may run (repeat).")
DATA_ROOT_OPT = typer.Option(
    [],
    "--data-root",
    help="A directory whose models and data jobs may read (repeat; also PRUNEHIVE_DATA_ROOTS, "
    "os.pathsep-separated). Without one, specs with hf: or data: paths are refused.",
)
users = typer.Typer(no_args_is_help=True, help="Users of the service and their tokens.")
app.add_typer(users, name="users")


@app.command()
@friendly_errors
def server(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    database_url: str = DATABASE_OPT,
    mlflow_uri: str = typer.Option(None, "--mlflow-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI."),
    ray_address: str = typer.Option(
        None,
        "--ray-address",
        envvar="PRUNEHIVE_RAY_ADDRESS",
        help="http://HOST:8265 (a dashboard): jobs go through Ray's Jobs API. HOST:PORT: each driver a child process "
        "on that cluster. Default: a local Ray head started by the server.",
    ),
    max_jobs: int = typer.Option(2, "--max-jobs", envvar="PRUNEHIVE_MAX_JOBS", help="Jobs run at once."),
    allow: list[str] = ALLOW_OPT,
    data_root: list[str] = DATA_ROOT_OPT,
    max_body: int = typer.Option(1 << 20, "--max-body-bytes", help="Largest accepted request body."),
    num_cpus: int = typer.Option(None, "--num-cpus", help="CPUs of the local Ray head."),
    dispatch: bool = typer.Option(True, "--dispatch/--no-dispatch", help="Run jobs here, or only serve the API."),
    name: str = typer.Option(None, "--name", help="This server's name in claims (default: host name)."),
) -> None:
    """Serve the job API (docs at /docs) and dispatch queued jobs to Ray."""
    import uvicorn  # local: keeps the web server out of CLI start-up

    from prunehive.platform.service.app import ServiceConfig, create_app  # local: keeps fastapi out of CLI start-up
    from prunehive.platform.service.backends import (  # local: keeps sqlalchemy out of CLI start-up
        Backend,
        LocalBackend,
        RayJobsBackend,
    )
    from prunehive.platform.service.dispatcher import Dispatcher  # local: keeps sqlalchemy out of CLI start-up
    from prunehive.platform.store.jobs import JobStore  # local: keeps sqlalchemy out of CLI start-up
    from prunehive.platform.tracking.location import default_tracking_uri  # local: keeps sqlalchemy out of CLI start-up

    roots = roots_from(data_root, os.environ.get(ENV))  # a wrong root stops the server before it starts
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("prunehive").setLevel(logging.INFO)
    db_url = database_url or default_database_url()
    os.environ["PRUNEHIVE_DATABASE_URL"] = db_url
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri or default_tracking_uri()
    store = JobStore(db_url)
    modules = [*allow, *filter(None, os.environ.get("PRUNEHIVE_TASK_MODULES", "").split(","))]
    config = ServiceConfig(
        allowed_task_modules=tuple(m.strip() for m in modules), max_body_bytes=max_body, data_roots=roots
    )
    dispatcher = None
    if dispatch:
        backend: Backend
        if ray_address and ray_address.startswith(("http://", "https://")):
            env = {k: os.environ[k] for k in ("PRUNEHIVE_DATABASE_URL", "MLFLOW_TRACKING_URI", "PRUNEHIVE_HOME")}
            backend = RayJobsBackend(ray_address, {k: v for k, v in env.items() if v})
        else:
            backend = LocalBackend(store, prunehive_home() / "logs", ray_address, num_cpus)
        dispatcher = Dispatcher(store, backend, max_jobs=max_jobs, server_name=name)
    where = dispatcher.backend.name if dispatcher else "no dispatcher"
    db = store.engine.dialect.name
    err.print(f"prunehive server on http://{host}:{port}: {db} store, {where}, {max_jobs} at once")
    err.print(DataRoots(roots).describe(), highlight=False)
    try:
        uvicorn.run(create_app(store, dispatcher, config), host=host, port=port, log_level="info")
    finally:
        if dispatcher is not None:
            dispatcher.backend.close()


@users.command("add")
@friendly_errors
def users_add(
    name: str = typer.Argument(..., help="User name."),
    admin: bool = typer.Option(False, "--admin", help="May see and cancel every user's jobs."),
    database_url: str = DATABASE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Add a user and print their token, once (only its hash is stored)."""
    from prunehive.platform.service.auth import add_user  # local: keeps sqlalchemy out of CLI start-up

    token = add_user(open_store(database_url), name, admin)
    if as_json:
        print_json({"name": name, "token": token})
    else:
        out.print(f"user {name}{' (admin)' if admin else ''}; token (shown once): {token}", highlight=False)


@app.command()
@friendly_errors
def submit(
    spec_path: str = typer.Argument(..., metavar="SPEC", help="Job spec YAML or JSON."),
    server: str = SERVER_OPT,
    token: str = TOKEN_OPT,
    wait: bool = typer.Option(False, "--wait", help="Wait for the job, with a progress bar."),
    as_json: bool = JSON_OPT,
) -> None:
    """Submit a job to the service; with --wait, print its summary like `prunehive run`."""
    from prunehive.platform.service.client import connect  # local: keeps httpx out of CLI start-up

    path = Path(spec_path)
    if not path.exists():
        raise FileNotFoundError(f"spec file {spec_path!r} does not exist")
    client = connect(server, token)
    job_id = client.submit(path.read_text(), json_body=path.suffix == ".json")
    if not wait:
        if as_json:
            print_json({"job_id": job_id})
        else:
            out.print(f"job {job_id} queued; watch it with `prunehive show {job_id}`", highlight=False)
        return
    err.print(f"job {job_id}", highlight=False)
    job = _wait_with_progress(client, job_id)
    if job["status"] != "succeeded":
        err.print(f"[red]error:[/red] job {job_id} {job['status']}: {job.get('error')}", highlight=False)
        raise typer.Exit(1)
    if as_json:
        print_json(job["summary"])
    else:
        print_summary(job["summary"], job["kind"])


def _wait_with_progress(client: Any, job_id: str) -> dict[str, Any]:
    columns = (TextColumn("[bold]{task.fields[status]}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task("job", total=None, status="queued")

        def update(job: dict[str, Any]) -> None:
            bar.update(task, total=job.get("budget"), completed=job["trials"], status=job["status"])

        return dict(client.wait(job_id, update))


@app.command()
@friendly_errors
def cancel(job_id: str = typer.Argument(...), server: str = SERVER_OPT, token: str = TOKEN_OPT) -> None:
    """Cancel a job on the service (a running one stops within seconds)."""
    from prunehive.platform.service.client import connect  # local: keeps httpx out of CLI start-up

    reply = connect(server, token).cancel(job_id)
    what = "cancelled" if reply["status"] == "cancelled" else "cancel requested (it stops within seconds)"
    out.print(f"job {reply['job_id']}: {what}", highlight=False)


@app.command()
@friendly_errors
def logs(job_id: str = typer.Argument(...), server: str = SERVER_OPT, token: str = TOKEN_OPT) -> None:
    """Print a job's driver log from the service."""
    from prunehive.platform.service.client import connect  # local: keeps httpx out of CLI start-up

    typer.echo(connect(server, token).logs(job_id), nl=False)
