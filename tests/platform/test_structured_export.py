"""``prunehive export`` of a structured search's candidate: the physically smaller model, reloaded from its
directory alone, scores the trial's recorded validation quality.

Real searches on a local Ray over a tiny grouped-query Llama (3 blocks, 2 KV groups each). ``head`` removes
one KV group or none per block; at sparsity 0.4 only "one group in every block" meets the budget (a plain
Llama config), at 0.3 two of the three blocks lose a group (per-layer widths, prunehive's modelling file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from structured_tasks import TinyLlamaTask
from test_structured_search import ray_with_tests, run_search, structured_spec  # noqa: F401 - module fixture
from transformers import AutoModelForCausalLM, LlamaForCausalLM
from typer.testing import CliRunner

from prunehive.platform.cli import app
from prunehive.workers.structure.hf_export import MODELING_FILE, load_exported

pytestmark = pytest.mark.ray
runner = CliRunner()
KEYS = {"job_id", "candidate", "format", "out", "files", "metric", "granularity", "achieved_sparsity", "metrics"}
KEYS |= {"test_metrics", "form", "trust_remote_code", "parameters"}


def export(*args: str) -> tuple[int, Any]:
    result = runner.invoke(app, ["export", *args])
    if result.exit_code:
        return result.exit_code, result.output
    return 0, json.loads(result.stdout.strip().splitlines()[-1])


def head_search(home: Path, sparsity: float, solver: str) -> dict[str, Any]:
    spec = structured_spec("random", granularity="head", sparsity=sparsity, solver=solver)
    spec["search"]["budget"], spec["search"]["baselines"] = 3, ["uniform"]
    result, _ = run_search(home, spec)
    return result


def validation(model: torch.nn.Module) -> float:
    """The task's own evaluation of the validation split (what a trial records)."""
    return TinyLlamaTask(0).evaluate(model.eval(), "validation").quality


def check_export(home: Path, result: dict[str, Any], form: str) -> tuple[dict[str, Any], float]:
    out = home / "export"
    rc, info = export(result["job_id"][:8], "--format", "hf", "--out", str(out), "--json")
    assert rc == 0, info
    assert set(info) >= KEYS and info["form"] == form and info["trust_remote_code"] == (form == "per-layer")
    assert info["candidate"] == result["best"]["candidate_id"] and info["granularity"] == "head"
    recorded = info["metrics"]["validation"]["perplexity"]
    assert recorded == result["best"]["metrics"]["validation"]["perplexity"]
    written = json.loads((out / "prunehive.json").read_text())
    assert written["form"] == form and written["parameters"] == info["parameters"]
    reloaded = load_exported(out)
    assert sum(p.numel() for p in reloaded.parameters()) == info["parameters"] < result["dense"]["params"]
    assert abs(validation(reloaded) - recorded) < 1e-4
    return info, recorded


def test_uniform_head_candidate_exports_as_a_plain_llama(home: Path) -> None:
    result = head_search(home, 0.4, "mask")
    info, recorded = check_export(home, result, "plain")
    assert MODELING_FILE not in info["files"]
    plain = AutoModelForCausalLM.from_pretrained(home / "export", local_files_only=True)
    assert isinstance(plain, LlamaForCausalLM) and plain.config.num_key_value_heads == 1
    assert plain.config.num_attention_heads == 2 and plain.config.num_hidden_layers == 3
    assert abs(validation(plain) - recorded) < 1e-4

    rc, message = export(result["job_id"][:8], "--format", "recipe", "--out", str(home / "recipe"))
    assert rc == 2 and "recipe cannot describe" in message and len(message.strip().splitlines()) == 1


def test_uneven_head_candidate_exports_per_layer_and_as_a_state_dict(home: Path) -> None:
    result = head_search(home, 0.3, "sparsegpt")  # consumers refitted: the export must rebuild the same fits
    info, _ = check_export(home, result, "per-layer")
    assert MODELING_FILE in info["files"]
    config = json.loads((home / "export" / "config.json").read_text())
    assert sorted(config["layer_num_key_value_heads"]) == [1, 1, 2]
    reloaded = load_exported(home / "export")
    assert type(reloaded).__name__ == "PrunedLlamaForCausalLM"  # the directory's own copy of the class

    rc, state = export(result["job_id"][:8], "--format", "torch", "--out", str(home / "torch"), "--json")
    assert rc == 0 and state["form"] == "per-layer" and state["parameters"] == info["parameters"]
    weights = torch.load(home / "torch" / "model.pt", weights_only=True)
    expected = reloaded.state_dict()
    assert set(weights) == set(expected) and all(torch.equal(weights[k], expected[k]) for k in weights)
