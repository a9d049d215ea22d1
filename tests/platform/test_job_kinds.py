"""The job-kind registry, and spec validation (also the API server's 422) without torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from prunehive.platform.cli.summaries import print_summary
from prunehive.platform.jobs import KINDS, job_kind
from prunehive.platform.spec.job import JobSpec, SpecError, parse_spec
from prunehive.platform.spec.kinds import KIND_RULES
from prunehive.platform.store.models import JOB_KINDS

NO_TORCH = textwrap.dedent(
    """
    import sys
    from fastapi.testclient import TestClient

    from prunehive.platform.service.app import ServiceConfig, create_app
    from prunehive.platform.service.auth import add_user
    from prunehive.platform.spec.job import SpecError, parse_spec
    from prunehive.platform.store.jobs import JobStore

    parse_spec({"kind": "search", "pruning": {"metric": "expr:mul(abs(W), X)", "granularity": "2:4"}})
    parse_spec({"kind": "federated", "federated": {"clients": 4}})
    parse_spec({"kind": "metric-search", "pruning": {"granularity": "channel"}})
    try:
        parse_spec({"pruning": {"metric": "expr:mul(W"}})
        raise SystemExit("a bad formula passed")
    except SpecError:
        pass
    store = JobStore(f"sqlite:///{sys.argv[1]}")
    headers = {"Authorization": f"Bearer {add_user(store, 'alice')}", "Content-Type": "application/yaml"}
    with TestClient(create_app(store, None, ServiceConfig())) as api:
        bad = api.post("/jobs", content="pruning: {metric: 'expr:foo(W)'}\\n", headers=headers)
        assert bad.status_code == 422 and "pruning.metric" in bad.text, bad.text
        good = api.post("/jobs", content="kind: search\\npruning: {metric: wanda}\\n", headers=headers)
        assert good.status_code == 201, good.text
    loaded = [m for m in ("torch", "ray", "flwr") if m in sys.modules]
    assert not loaded, f"validating specs loaded {loaded}"
    """
)


def test_spec_validation_and_the_422_path_do_not_import_torch(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(tmp_path / "jobs.db")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_every_kind_is_registered_once_everywhere() -> None:
    assert set(JOB_KINDS) == set(KINDS) == set(KIND_RULES) == {"search", "metric-search", "federated", "benchmark"}
    assert JobSpec.model_json_schema()["properties"]["kind"]["enum"] == list(KIND_RULES)
    for kind in KINDS.values():
        rules = kind.rules
        assert rules is KIND_RULES[kind.name]  # the jobs build on the spec's table, not a copy of it
        spec = parse_spec({"kind": kind.name})
        assert spec.display_name == f"digits-mlp-{spec.strategy if rules.named_by == 'strategy' else kind.name}"
        if rules.section is not None:  # a kind's own section is a typed field of the spec
            assert JobSpec.model_fields[rules.section].annotation is rules.options
            assert isinstance(getattr(spec, rules.section), rules.options)  # type: ignore[arg-type]
        assert callable(kind.driver_class()) and callable(job_kind(kind.name).print_summary)


def test_unknown_kind_keeps_its_message() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({"kind": "grid"})
    assert str(err.value) == "kind: 'grid' input should be 'search', 'metric-search', 'federated' or 'benchmark'"
    with pytest.raises(ValueError, match="unknown job kind 'grid'; choose one of search, metric-search"):
        job_kind("grid")


def test_metric_names_match_the_metric_functions() -> None:
    from prunehive.workers.metric_names import METRIC_NAMES
    from prunehive.workers.metrics import METRICS

    assert tuple(METRICS) == METRIC_NAMES


def _entry(sparsity: float, acc: float, **extra: object) -> dict[str, object]:
    def split(a: float) -> dict[str, float]:
        return {"accuracy": a, "loss": 1.0 - a, "objective": a}

    metrics = {"validation": split(acc), "test": split(acc - 0.01)}
    return {
        "layers": {"fc1": sparsity},
        "achieved_sparsity": sparsity,
        "metrics": metrics,
        "params": 9,
        "flops": 18,
        **extra,
    }


def test_each_kind_prints_its_own_summary(capsys: pytest.CaptureFixture[str]) -> None:
    common = {"job_id": "0123456789", "status": "succeeded", "trials": 7, "quality": "accuracy"}
    common |= {"mlflow_run_id": "r1", "tracking_uri": "u"}
    baselines = {"uniform": _entry(0.5, 0.80), "erk": {"error": "boom"}}
    search = {**common, "best": _entry(0.5, 0.9, candidate_id=3), "baselines": baselines}
    print_summary(search)  # a search summary carries no kind
    text = capsys.readouterr().out
    assert "job 01234567: 7 trials" in text and "search (#3)" in text and "0.9000" in text and "boom" in text
    board = [_entry(0.5, 0.91, expression="mul(W, X)"), _entry(0.5, 0.85, expression="abs(W)")]
    metric = {**common, "kind": "metric-search", "best": board[0], "leaderboard": board, "baselines": {}}
    print_summary(metric, "metric-search")
    text = capsys.readouterr().out
    assert "mul(W, X)" in text and "abs(W)" in text and "search (#" not in text
    final = {"sparsity": 0.8, "test_accuracy": 0.93, "client_accuracy": 0.9}
    traffic = {"bytes_up": 2e6, "bytes_down": 4e6, "dense_bytes_up": 8e6, "dense_bytes_down": 8e6, "failures": 1}
    fed = {**common, "kind": "federated", "task": "digits-mlp", "plan": "fixed", "final": final, "rounds": []}
    fed |= {**traffic, "uplink_reduction": 4.0, "dense_reference": {"final": final, **traffic}}
    print_summary(fed)
    text = capsys.readouterr().out
    assert "fixed 80%" in text and "dense FedAvg" in text and "uplink 2.00 MB (4.00x less" in text
