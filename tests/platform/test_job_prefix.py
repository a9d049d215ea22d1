"""``prunehive show PREFIX``: any prefix that one job id starts with finds it; an ambiguous one says how many
jobs it matches, in one line."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from prunehive.platform.cli import app
from prunehive.platform.store.jobs import JobStore
from prunehive.platform.store.models import Job

runner = CliRunner()


def test_show_takes_short_unique_prefixes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    store = JobStore(url)
    ids = ("e7e8a1" + "0" * 26, "e7e8b2" + "0" * 26, "e7f0c3" + "0" * 26, "4c0ffe" + "0" * 26)
    with store.session() as s:
        for job_id in ids:
            s.add(Job(id=job_id, kind="search", name=f"job-{job_id[:6]}", status="succeeded", spec={}))

    def show(ref: str) -> tuple[int, str, str]:
        result = runner.invoke(app, ["show", ref, "--json", "--database-url", url])
        return result.exit_code, result.stdout, result.stderr

    for ref, expected in (("4", ids[3]), ("e7e8a", ids[0]), ("E7F", ids[2]), (ids[1], ids[1])):
        code, out, err = show(ref)
        assert code == 0, err
        assert json.loads(out)["job_id"] == expected
    code, _, err = show("e7e8")
    assert code == 2 and err.strip() == "error: job id prefix 'e7e8' matches 2 jobs; give more characters"
    code, _, err = show("e7")
    assert code == 2 and "matches 3 jobs" in err and len(err.strip().splitlines()) == 1
    code, _, err = show("abc")
    assert code == 2 and err.strip() == "error: no job 'abc'"
