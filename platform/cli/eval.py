"""``prunehive eval``: zero-shot accuracy of a search's candidate, or of an exported model, with lm-eval."""

from __future__ import annotations

from pathlib import Path

import typer

from prunehive.platform.cli.app import DATABASE_OPT, JSON_OPT, app, err, friendly_errors, out, print_json
from prunehive.platform.jobs.lm_eval import LMEvalOptions, go_offline
from prunehive.platform.settings import default_database_url


@app.command("eval")
@friendly_errors
def eval_command(
    job_id: str = typer.Argument(
        ..., help="Job id (a unique prefix is enough), or a directory written by `prunehive export --format hf`."
    ),
    candidate: str = typer.Option("best", "--candidate", help="best, dense, or a trial's candidate id."),
    tasks: str = typer.Option(..., "--lm-eval", help="lm-eval task names, comma-separated (e.g. stdlib_mc)."),
    include_path: str = typer.Option(
        None, "--include-path", help="A folder of lm-eval task YAMLs over local data files."
    ),
    limit: int = typer.Option(None, "--limit", help="Examples per task (all when not given)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Sequences per forward pass."),
    device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:1, ... (the first GPU where there is one)."),
    database_url: str = DATABASE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Score a candidate with lm-evaluation-harness (offline: task data must be local); log it to the job's
    MLflow run as lm_eval_<task>_<metric>."""
    go_offline()  # before anything imports datasets
    options = LMEvalOptions.parse(tasks, include_path, limit, batch_size=batch_size, device=device)
    # local: after go_offline(), and keeps torch out of CLI start-up
    from prunehive.platform.jobs.zero_shot import evaluate_export, evaluate_job
    from prunehive.platform.store.jobs import JobStore  # local: keeps sqlalchemy out of CLI start-up

    store = JobStore(database_url or default_database_url())
    exported = Path(job_id).expanduser()
    if exported.is_dir() and candidate != "best":
        raise ValueError(f"--candidate: {str(exported)!r} is an exported model; it has no other candidates")
    with err.status(f"lm-eval {', '.join(options.tasks)} on {candidate if not exported.is_dir() else exported}"):
        if exported.is_dir():
            result = evaluate_export(store, exported.resolve(), options)
        else:
            result = evaluate_job(store, job_id, candidate, options)
    if as_json:
        print_json(result)
        return
    who = f"candidate {result['candidate']} of job {result['job_id']}"
    for task, metrics in result["lm_eval"].items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "stderr" not in k)
        out.print(f"{task}: {shown}  ({who})", highlight=False)
    if result["mlflow_run_id"]:
        out.print(f"logged to MLflow run {result['mlflow_run_id']}", highlight=False)
