"""The MLflow comparison a researcher uses, checked in a real browser.

A real search job writes a SQLite MLflow store; ``mlflow server`` serves it; Debian's chromium (driven
headless through Playwright, whose own browser downloads are never used) opens the experiment (landing on
its runs table, as a model-training experiment, not on MLflow 3's GenAI overview), expands
the job's run, selects its trial runs, opens the compare view and finds the ``sparsity.<layer>`` params
and the quality metric there. A screenshot is kept in ``$PRUNEHIVE_TEST_ARTIFACTS`` (default
``tests/artifacts``). Without chromium the test says so and skips.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient

from prunehive.platform.jobs.base import start_job
from prunehive.platform.jobs.search.driver import SearchRun
from prunehive.platform.spec.job import parse_spec
from prunehive.platform.store.jobs import JobStore

CHROMIUM = Path(os.environ.get("PRUNEHIVE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("PRUNEHIVE_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "artifacts")
TRIALS = 4
WORKFLOW_TYPE = "machine_learning"  # MLflow's UI-wide choice between "genai" and "machine_learning"

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no chromium at {CHROMIUM} (apt-get install chromium)"),
]


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mlflow_server(backend_uri: str, log: Path) -> Iterator[str]:
    """``mlflow server`` from this environment on a free local port, stopped (its process group) at the end."""
    port = _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow), "server", "--backend-store-uri", backend_uri]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{url}/health", timeout=5).status == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server not up after 180 s: {log.read_text()[-2000:]}")
            time.sleep(1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict]]:
    """A small real search job (digits-mlp, random search) in a temporary home."""
    home = tmp_path_factory.mktemp("browser-home")
    saved = os.environ.get("PRUNEHIVE_HOME")
    os.environ["PRUNEHIVE_HOME"] = str(home)
    spec = {
        "kind": "search",
        "task": "digits-mlp",
        "pruning": {"sparsity": 0.9},
        "search": {"strategy": "random", "budget": TRIALS, "baselines": ["erk"]},
        "resources": {"workers": 2},
        "tracking": {"mlflow_uri": f"sqlite:///{home / 'mlflow.db'}", "experiment": "browser-compare"},
    }
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    store = JobStore(f"sqlite:///{home / 'prunehive.db'}")
    try:
        result = SearchRun(store, start_job(store, parse_spec(spec)), show_progress=False).run()
        yield home, result
    finally:
        store.close()
        ray.shutdown()
        if saved is None:
            os.environ.pop("PRUNEHIVE_HOME", None)
        else:
            os.environ["PRUNEHIVE_HOME"] = saved


def test_compare_view_shows_layer_sparsities_and_quality(finished_job: tuple[Path, dict]) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    home, result = finished_job
    client = MlflowClient(result["tracking_uri"])
    parent = client.get_run(result["mlflow_run_id"])
    trials = client.search_runs(
        [parent.info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and tags.`prunehive.kind` = 'trial'",
    )
    assert len(trials) == TRIALS
    assert client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "mlflow-compare.png"

    with mlflow_server(result["tracking_uri"], home / "mlflow-server.log") as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            # The experiment's own address, as a model-training experiment: earlier MLflow 3 releases read the
            # experiment's kind tag; 3.17 reads the UI-wide workflow type (GenAI unless the URL or the browser
            # says otherwise), so the link names it. Either way the runs table opens, not the GenAI overview.
            # Not "networkidle": the runs page may keep polling, and idleness is no sign the table is drawn.
            experiment = f"{url}/#/experiments/{parent.info.experiment_id}"
            page.goto(f"{experiment}?workflowType={WORKFLOW_TYPE}", wait_until="domcontentloaded")
            page.get_by_role("link", name=parent.info.run_name, exact=True).wait_for()
            sync_api.expect(page.get_by_text("Tool calls", exact=True)).to_have_count(0)  # a GenAI overview tab
            job_row = page.get_by_role("row").filter(
                has=page.get_by_role("link", name=parent.info.run_name, exact=True)
            )
            job_row.locator("button[data-component-id*='runnamecellrenderer']").click()  # expand the job's run
            for trial in trials:
                link = page.get_by_role("link", name=trial.info.run_name, exact=True)
                page.get_by_role("row").filter(has=link).locator("input.ag-checkbox-input").check(force=True)
            page.get_by_role("button", name=re.compile("^Compare")).first.click()
            page.wait_for_url(re.compile(r"compare-runs"))
            for trial in trials:
                assert trial.info.run_id in page.url
            sync_api.expect(page.locator("body")).to_contain_text(f"Comparing {TRIALS} Runs")
            for name in ("sparsity.fc1", "sparsity.fc5", "validation.accuracy"):
                sync_api.expect(page.get_by_text(name, exact=True).first).to_be_attached()
            # The params table lists every selected trial's own value for the layer.
            lines = [ln for ln in page.locator("body").inner_text().splitlines() if ln.startswith("sparsity.fc1\t")]
            assert any(all(t.data.params["sparsity.fc1"] in ln for t in trials) for ln in lines), lines
            page.get_by_text("sparsity.fc1", exact=True).last.scroll_into_view_if_needed()  # the params table
        finally:
            page.screenshot(path=str(shot))
            browser.close()
    assert shot.stat().st_size > 10_000
