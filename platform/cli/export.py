"""``prunehive export``: a finished search's candidate as a Hugging Face directory, a state dict or a recipe."""

from __future__ import annotations

import typer

from prunehive.platform.cli.app import DATABASE_OPT, JSON_OPT, app, err, friendly_errors, out, print_json
from prunehive.platform.settings import default_database_url


@app.command()
@friendly_errors
def export(
    job_id: str = typer.Argument(..., help="Job id (a unique prefix is enough)."),
    candidate: str = typer.Option("best", "--candidate", help="best, or a trial's candidate id."),
    out_dir: str = typer.Option(..., "--out", help="Directory to write (new or empty)."),
    fmt: str = typer.Option(
        None,
        "--format",
        help="hf (save_pretrained; the default for hf: tasks and structured searches), torch (state dict), or recipe.",
    ),
    healed: bool = typer.Option(
        False, "--healed", help="A structured search with pruning.recovery: its best candidate after healing."
    ),
    database_url: str = DATABASE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Write a search job's candidate with its pruned weights zeroed, plus prunehive.json describing it."""
    from prunehive.platform.jobs.export import export_candidate  # local: keeps torch out of CLI start-up
    from prunehive.platform.store.jobs import JobStore  # local: keeps sqlalchemy out of CLI start-up

    store = JobStore(database_url or default_database_url())
    with err.status(f"rebuilding candidate {candidate} of job {job_id}"):
        result = export_candidate(store, job_id, candidate, out_dir, fmt, healed)
    if as_json:
        print_json(result)
        return
    out.print(
        f"candidate {result['candidate']} of job {result['job_id']} ({result['format']}, "
        f"sparsity {result['achieved_sparsity']:.4f}) -> {result['out']}",
        highlight=False,
    )
    for name in result["files"]:
        out.print(f"  {name}", highlight=False)
