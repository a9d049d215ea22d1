"""``prunehive run``, ``jobs``, ``show`` and ``ui``: search jobs against the local store."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

import typer
from rich.table import Table

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
from prunehive.platform.cli.summaries import print_summary
from prunehive.platform.settings import default_database_url


def open_store(database_url: str | None) -> Any:
    """The job store at ``database_url`` (default: the embedded one under PRUNEHIVE_HOME)."""
    from prunehive.platform.store.jobs import JobStore  # local: keeps sqlalchemy out of CLI start-up

    return JobStore(database_url or default_database_url())


@app.command()
@friendly_errors
def run(
    spec_path: str = typer.Argument(None, metavar="SPEC", help="Job spec YAML (omit with --resume)."),
    workers: int = typer.Option(None, "--workers", help="Override resources.workers."),
    ray_address: str = typer.Option(None, "--ray-address", help="Ray cluster address (default: RAY_ADDRESS or local)."),
    resume: str = typer.Option(None, "--resume", help="Continue this job id without repeating finished trials."),
    metric: str = typer.Option(None, "--metric", help="Override pruning.metric, e.g. 'expr:mul(sqr(W),minmax(G))'."),
    database_url: str = typer.Option(None, "--database-url", envvar="PRUNEHIVE_DATABASE_URL", help="Job store URL."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Run a job now (search, metric-search, federated or benchmark), on a local Ray or the cluster at RAY_ADDRESS."""
    from prunehive.platform.cli.signals import cancel_on_sigterm, exit_code, leave  # local: psutil, not at start-up
    from prunehive.platform.jobs.base import job_runner, start_job  # local: keeps ray and mlflow out of CLI start-up
    from prunehive.platform.jobs.preflight import preflight  # local: keeps ray out of CLI start-up
    from prunehive.platform.spec.job import load_spec, parse_spec  # local: spec models build when read

    cancel_on_sigterm()  # SIGTERM (timeout, systemd, Kubernetes, Ray's job stop) cancels like Ctrl-C
    store = open_store(database_url)
    try:
        if resume:
            job = store.get_job(resume)
            if job.status == "succeeded":
                raise ValueError(f"job {job.id} already succeeded; nothing to resume")
            job_id = job.id
            try:
                preflight(parse_spec(job.spec), ray_address)
            except ValueError as exc:
                store.set_status(job_id, "failed", error=str(exc))
                raise
        elif spec_path is None:
            raise ValueError("give a SPEC file, or --resume JOB_ID")
        else:
            spec = load_spec(spec_path)
            preflight(spec, ray_address)  # a task or resources that can never work leave no job row
            job_id = start_job(store, spec, workers, metric)
    except KeyboardInterrupt as exc:
        leave(exit_code(exc))
    err.print(f"job {job_id}", highlight=False)
    try:
        result = job_runner(
            store, job_id, ray_address=ray_address, show_progress=not as_json or sys.stderr.isatty()
        ).run()
    except KeyboardInterrupt as exc:
        err.print(f"cancelled job {job_id}; resume it with `prunehive run --resume {job_id}`")
        leave(exit_code(exc))
    except RuntimeError as exc:
        err.print(f"[red]error:[/red] job {job_id} failed: {exc}", highlight=False)
        raise typer.Exit(1) from None
    if as_json:
        print_json(result)
    else:
        print_summary(result)


@app.command()
@friendly_errors
def jobs(
    limit: int = typer.Option(20, "--limit"),
    database_url: str = DATABASE_OPT,
    server: str = SERVER_OPT,
    token: str = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """List recent jobs: in the job store, or your jobs on the service with --server."""
    if server:
        from prunehive.platform.service.client import connect  # local: keeps httpx out of CLI start-up

        rows = connect(server, token).jobs(limit)["jobs"]
    else:
        store = open_store(database_url)
        rows = [_job_dict(j, store) for j in store.list_jobs(limit=limit)]
    if as_json:
        print_json({"jobs": rows})
        return
    table = Table("id", "name", "kind", "status", "trials", "created")
    for j in rows:
        created = str(j["created_at"])[:16].replace("T", " ")
        table.add_row(j["job_id"][:8], j["name"], j["kind"], j["status"], str(j["trials"]), created)
    out.print(table)


def _job_dict(job: Any, store: Any) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "name": job.name,
        "kind": job.kind,
        "status": job.status,
        "trials": store.count_trials(job.id),
        "created_at": job.created_at.isoformat(),
        "error": job.error,
        "mlflow_run_id": job.mlflow_run_id,
    }


@app.command()
@friendly_errors
def show(
    job_id: str = typer.Argument(..., help="Job id (a unique prefix is enough)."),
    database_url: str = DATABASE_OPT,
    server: str = SERVER_OPT,
    token: str = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Show one job: status, summary, and its trials (from the service with --server)."""
    if server:
        _show_remote(job_id, server, token, as_json)
        return
    store = open_store(database_url)
    job = store.get_job(job_id)
    trials = store.trials(job.id)
    if as_json:
        obj = _job_dict(job, store)
        obj.update(spec=job.spec, summary=job.summary)
        obj["trial_rows"] = [
            {"candidate_id": t.candidate_id, "state": t.state, "result": t.result, "error": t.error, "worker": t.worker}
            for t in trials
        ]
        print_json(obj)
        return
    out.print(f"job {job.id}  {job.name}  [bold]{job.status}[/bold]  {len(trials)} trials")
    if job.error:
        out.print(f"error: {job.error}", highlight=False)
    if job.summary:
        print_summary(job.summary, job.kind)
    failed = [t for t in trials if t.state == "failed"]
    if failed:
        out.print(f"{len(failed)} failed trials, e.g. #{failed[0].candidate_id}: {failed[0].error}", highlight=False)


def _show_remote(job_id: str, server: str, token: str | None, as_json: bool) -> None:
    from prunehive.platform.service.client import connect  # local: keeps httpx out of CLI start-up

    client = connect(server, token)
    job = client.job(job_id)
    trials = client.trials(job["job_id"])
    if as_json:
        keep = ("candidate_id", "state", "result", "error", "worker")
        print_json(job | {"trial_rows": [{k: t[k] for k in keep} for t in trials]})
        return
    out.print(f"job {job['job_id']}  {job['name']}  [bold]{job['status']}[/bold]  {len(trials)} trials")
    if job["error"]:
        out.print(f"error: {job['error']}", highlight=False)
    if job["summary"]:
        print_summary(job["summary"], job["kind"])


@app.command()
@friendly_errors
def ui(
    port: int = typer.Option(5000, "--port"),
    host: str = typer.Option("127.0.0.1", "--host"),
) -> None:
    """Open the MLflow UI on the default tracking store."""
    # local: keeps sqlalchemy out of CLI start-up
    from prunehive.platform.tracking.location import default_artifact_root, default_tracking_uri

    uri = default_tracking_uri()
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    # MLflow 3 opens experiments on its GenAI overview unless the UI is in "model training" mode.
    err.print(f"MLflow UI for {uri} at http://{host}:{port}/#/experiments?workflowType=machine_learning")
    cmd = [mlflow, "server", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    if uri.startswith("sqlite:"):
        cmd += ["--default-artifact-root", default_artifact_root()]

    from prunehive.platform.cli.signals import run_as_group  # local: psutil, not at start-up

    raise typer.Exit(run_as_group(cmd))  # SIGTERM stops mlflow server and its web workers too
