"""What the table scripts share: run one job as a real ``prunehive run`` and keep the rows a run measured,
so a rerun with the same settings goes on where an earlier one stopped."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml


def run_job(spec: dict[str, Any], workdir: Path, attempts: int = 2) -> tuple[dict[str, Any], float]:
    """The job's summary (``run --json``) and its wall seconds; a job that fails (say, Ray could not start
    on a loaded machine) is run again, ``attempts`` times in all, before the table gives up."""
    path = workdir / f"spec-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(spec))
    cli = [sys.executable, "-m", "prunehive.platform.cli", "run", str(path), "--json"]
    last = "(no output)"
    for attempt in range(1, attempts + 1):
        started = time.perf_counter()
        done = subprocess.run(cli, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return json.loads(done.stdout), time.perf_counter() - started
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        print(f"job failed (attempt {attempt} of {attempts}): {last}", file=sys.stderr, flush=True)
    raise SystemExit(f"job failed: {last}")


def mean_std(values: list[float], digits: int = 4) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


class Rows:
    """Measured rows saved to ``out`` with the settings that produced them; rows saved under other settings
    are not reused."""

    def __init__(self, out: str, settings: dict[str, Any], keep: bool = True) -> None:
        self.out, self.settings, self.keep = Path(out), settings, keep
        data = json.loads(self.out.read_text()) if keep and self.out.exists() else {}
        self.rows: list[dict[str, Any]] = data.get("rows", []) if data.get("settings") == settings else []

    def find(self, **key: Any) -> dict[str, Any] | None:
        return next((r for r in self.rows if all(r.get(k) == v for k, v in key.items())), None)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.save()

    def save(self, table: str | None = None) -> None:
        if not self.keep:
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        data = {"settings": self.settings, "rows": self.rows, "table": table}
        self.out.write_text(json.dumps(data, indent=2) + "\n")
