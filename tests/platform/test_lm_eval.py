"""Zero-shot evaluation with lm-eval: a search's final ``evaluation.lm_eval`` and ``prunehive eval``, on the
example task shipped in examples/lm_eval (multiple choice over stdlib code, local data, nothing downloaded).

A real search of a tiny Llama on a local Ray, real lm-eval (``HFLM`` over the in-memory model), a real
MLflow store; ``limit`` keeps every evaluation to a few questions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hf_models import causal_lm
from typer.testing import CliRunner

from prunehive.platform.cli import app
from prunehive.platform.jobs.lm_eval import LMEvalOptions, evaluate_model, scores
from prunehive.platform.spec.job import SpecError, load_spec, parse_spec

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "lm_eval"
LIMIT = 6
SMALL = {"calibration": 1024, "validation": 512, "test": 512}
KEYS = {"job_id", "candidate", "tasks", "limit", "lm_eval", "mlflow_run_id", "mlflow_metrics"}


@pytest.fixture(scope="module")
def home(module_home: Path) -> Path:
    """One job store and MLflow store for the module: later tests read the jobs that earlier ones ran."""
    return module_home


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory, data = causal_lm(tmp_path_factory.mktemp("lm-eval-model"), "llama")
    return {"hf": str(directory), "data": data, "seq_len": 16, "max_tokens": SMALL}


def invoke(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def job(task: dict[str, Any], home: Path, local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A finished search whose spec asks for the final evaluation on the example task."""
    spec = {
        "kind": "search",
        "task": task,
        "pruning": {"sparsity": 0.5, "metric": "wanda"},
        "search": {"strategy": "random", "budget": 3, "baselines": ["uniform"]},
        "resources": {"workers": 1},
        "evaluation": {"lm_eval": {"tasks": ["stdlib_mc"], "include_path": str(EXAMPLES), "limit": LIMIT}},
    }
    path = tmp_path_factory.mktemp("lm-eval-spec") / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    summary = invoke("run", str(path), "--json")
    assert summary["status"] == "succeeded"
    return summary


def parent_metrics(summary: dict[str, Any]) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    return dict(MlflowClient(summary["tracking_uri"]).get_run(summary["mlflow_run_id"]).data.metrics)


def accuracies(results: dict[str, dict[str, float]]) -> tuple[float, float]:
    metrics = results["stdlib_mc"]
    return metrics["acc"], metrics["acc_norm"]


@pytest.mark.ray
def test_search_ends_with_lm_eval_of_best_and_dense(job: dict[str, Any]) -> None:
    scored = job["lm_eval"]
    assert set(scored) == {"best", "dense"}, scored
    for name in ("best", "dense"):
        assert all(0.0 <= a <= 1.0 for a in accuracies(scored[name]))
        assert {"acc", "acc_norm", "acc_stderr", "acc_norm_stderr"} <= set(scored[name]["stdlib_mc"])
    logged = parent_metrics(job)
    assert logged["lm_eval_stdlib_mc_acc"] == pytest.approx(scored["best"]["stdlib_mc"]["acc"])
    assert logged["dense.lm_eval_stdlib_mc_acc_norm"] == pytest.approx(scored["dense"]["stdlib_mc"]["acc_norm"])


@pytest.mark.ray
def test_eval_scores_a_trial_and_logs_it(job: dict[str, Any]) -> None:
    from prunehive.platform.settings import default_database_url
    from prunehive.platform.store.jobs import JobStore

    best = job["best"]["candidate_id"]
    trials = JobStore(default_database_url()).trials(job["job_id"])
    other = next(t.candidate_id for t in trials if t.candidate_id != best)
    args = ["--lm-eval", "stdlib_mc", "--include-path", str(EXAMPLES), "--limit", str(LIMIT), "--json"]
    obj = invoke("eval", job["job_id"][:8], "--candidate", str(other), *args)
    assert set(obj) == KEYS
    assert obj["job_id"] == job["job_id"] and obj["candidate"] == other and obj["tasks"] == ["stdlib_mc"]
    assert all(0.0 <= a <= 1.0 for a in accuracies(obj["lm_eval"]))
    name = f"candidate_{other}.lm_eval_stdlib_mc_acc"
    assert name in obj["mlflow_metrics"]
    assert parent_metrics(job)[name] == pytest.approx(obj["lm_eval"]["stdlib_mc"]["acc"])
    # the best candidate scored again is the final evaluation's figure: same model, same questions
    again = invoke("eval", job["job_id"], *args)
    assert again["candidate"] == best and again["lm_eval"] == job["lm_eval"]["best"]
    dense = invoke("eval", job["job_id"], "--candidate", "dense", *args)
    assert dense["candidate"] == "dense" and dense["lm_eval"] == job["lm_eval"]["dense"]
    assert "dense.lm_eval_stdlib_mc_acc" in dense["mlflow_metrics"]


@pytest.mark.ray
def test_eval_reads_an_exported_directory(job: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "exported"
    invoke("export", job["job_id"], "--out", str(out), "--format", "hf", "--json")
    args = ["--lm-eval", "stdlib_mc", "--include-path", str(EXAMPLES), "--limit", str(LIMIT), "--json"]
    obj = invoke("eval", str(out), *args)
    assert obj["job_id"] == job["job_id"] and obj["candidate"] == job["best"]["candidate_id"]
    assert obj["lm_eval"] == job["lm_eval"]["best"]  # the written weights score as the in-memory candidate
    assert obj["mlflow_run_id"] == job["mlflow_run_id"] and "lm_eval_stdlib_mc_acc" in obj["mlflow_metrics"]


@pytest.mark.ray
def test_eval_bad_task_name_is_one_line(job: dict[str, Any]) -> None:
    result = runner.invoke(app, ["eval", job["job_id"], "--lm-eval", "no_such_task", "--include-path", str(EXAMPLES)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "no lm-eval task 'no_such_task'" in lines[0], result.output


def test_spec_checks_the_evaluation_section(
    task: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the example's relative include_path is relative to its own folder
    example = load_spec(EXAMPLES.parent / "code-lm-lm-eval.yaml")
    assert example.evaluation is not None and example.evaluation.lm_eval is not None
    assert example.evaluation.lm_eval.include_path == EXAMPLES and example.evaluation.lm_eval.tasks == ["stdlib_mc"]

    def spec(evaluation: Any, on: Any = None) -> dict[str, Any]:
        return {"task": on or task, "evaluation": evaluation}

    ok = parse_spec(spec({"lm_eval": {"tasks": ["stdlib_mc"], "include_path": str(EXAMPLES)}}))
    assert ok.evaluation is not None and ok.evaluation.lm_eval is not None
    assert ok.evaluation.lm_eval.include_path == EXAMPLES
    bad = {
        "tasks: List should have at least 1 item": {"lm_eval": {"tasks": []}},
        "is not a folder of lm-eval task YAMLs": {"lm_eval": {"tasks": ["x"], "include_path": str(tmp_path / "no")}},
        "needs a causal language model task": None,
    }
    for message, evaluation in bad.items():
        data = spec(evaluation or {"lm_eval": {"tasks": ["x"]}}, None if evaluation else "digits-mlp")
        with pytest.raises(SpecError, match=message):
            parse_spec(data)
    with pytest.raises(SpecError, match="unknown field"):
        parse_spec(spec({"lm-eval": {"tasks": ["x"]}}))


def test_scores_flatten_lm_eval_results() -> None:
    raw = {"t": {"alias": "t", "acc,none": 0.5, "acc_stderr,none": "N/A", "exact_match,strict-match": 1}}
    assert scores(raw) == {"t": {"acc": 0.5, "exact_match_strict-match": 1.0}}


def test_byte_level_model_scores_the_example(tmp_path: Path) -> None:
    """A model whose tokens are bytes (code-lm's tokenizer) runs the example without special tokens."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from prunehive.workers.tasks.code_lm import byte_tokenizer

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=128, bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    options = LMEvalOptions.parse("stdlib_mc", EXAMPLES, limit=LIMIT, device="cpu")
    acc, acc_norm = accuracies(evaluate_model(LlamaForCausalLM(config), byte_tokenizer(), options))
    assert 0.0 <= acc <= 1.0 and 0.0 <= acc_norm <= 1.0
