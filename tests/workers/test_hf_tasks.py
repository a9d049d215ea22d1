"""Task API v2 and the ``hf:`` task forms, on tiny real transformers models built from configs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hf_models import LABELS, causal_lm, vit_classifier, write_text

from prunehive.platform.spec.job import SpecError, parse_spec
from prunehive.workers.engine import PruningEngine
from prunehive.workers.tasks import HFTaskSpec, TaskError, load_task
from prunehive.workers.tasks.hf_image import HFImageTask
from prunehive.workers.tasks.hf_lm import HFCausalLMTask
from prunehive.workers.tasks.text_data import text_batches

SMALL = {"calibration": 1024, "validation": 512, "test": 512}


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory, data = causal_lm(tmp_path_factory.mktemp("llama"), "llama")
    return {"hf": str(directory), "data": data, "seq_len": 16, "max_tokens": SMALL}


@pytest.fixture(scope="module")
def opt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory, data = causal_lm(tmp_path_factory.mktemp("opt"), "opt")
    return {"hf": str(directory), "data": data, "seq_len": 16, "max_tokens": SMALL}


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory, data = vit_classifier(tmp_path_factory.mktemp("vit"))
    return {"hf": str(directory), "data": data}


def test_loading_never_reaches_the_hub(llama: dict[str, Any]) -> None:
    load_task(llama)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(TaskError, match=r"task.hf: directory '.*meta-llama/Llama-2-7b-hf' does not exist"):
        load_task({**llama, "hf": "meta-llama/Llama-2-7b-hf"})  # a hub id is only a missing local path


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_causal_lm_layers_are_the_blocks_linears(family: str, request: pytest.FixtureRequest) -> None:
    task = load_task(request.getfixturevalue(family))
    assert isinstance(task, HFCausalLMTask) and task.quality == "perplexity"
    model = task.model()
    names = task.prunable_layers(model)
    stack = "model.layers" if family == "llama" else "model.decoder.layers"
    assert names and all(n.startswith(f"{stack}.") for n in names)
    assert len(names) == (14 if family == "llama" else 12)  # 7 (q k v o gate up down) or 6 (q k v out fc1 fc2)
    assert not any("embed" in n or "lm_head" in n for n in names)
    assert sorted(set(task.layer_blocks(model).values())) == [f"{stack}.0", f"{stack}.1"]
    expected = ("gate_proj", "up_proj") if family == "llama" else ("fc1",)
    assert {n.rsplit(".", 1)[1] for n in task.channel_prunable_layers(model)} == set(expected)


def test_perplexity_matches_transformers_own_loss(llama: dict[str, Any]) -> None:
    """Our (inputs, shifted targets) windows scored on the ModelOutput give the loss transformers computes
    from ``labels=`` over the same windows."""
    task = load_task(llama)
    model = task.model()
    x, y = next(iter(task.batches("validation")))
    window = torch.cat([x, y[:, -1:]], dim=1)
    with torch.no_grad():
        expected = float(model(window, labels=window).loss)
    ev = task.evaluate(model, "validation")
    assert ev.loss == pytest.approx(expected, rel=1e-5)
    assert ev.quality == pytest.approx(torch.exp(torch.tensor(expected)).item(), rel=1e-5)


def test_text_windows_are_capped_consecutive_and_cover_files(llama: dict[str, Any], tmp_path: Path) -> None:
    task = load_task(llama)
    assert isinstance(task, HFCausalLMTask)
    rows = torch.cat([x for x, _ in task.batches("validation")])
    assert rows.shape == (SMALL["validation"] // 16, 16)
    assert torch.equal(rows[1:, 0], torch.cat([y for _, y in task.batches("validation")])[:-1, -1])
    calibration = task.calibration_batches(8)  # a directory of two files, end-of-text between them
    assert sum(x.numel() for x, _ in calibration) == SMALL["calibration"]
    short = write_text(tmp_path / "short.txt", 8, 0)
    with pytest.raises(TaskError, match=r"task.data.test: .*short.txt' has fewer than seq_len \+ 1 = 513 tokens"):
        list(text_batches(short, task.tokenizer, 512, None, 4, "task.data.test"))


def test_uncapped_split_streams_every_pass(llama: dict[str, Any]) -> None:
    capped = load_task(llama)
    streamed = load_task({**llama, "max_tokens": {"validation": None}})
    first = [x for x, _ in streamed.loader("validation")]
    assert sum(x.numel() for x in first) > SMALL["validation"]  # the whole file
    again = [x for x, _ in streamed.loader("validation")]
    assert all(a is not b and torch.equal(a, b) for a, b in zip(first, again, strict=True))  # re-read, not kept
    cached = [x for x, _ in capped.loader("validation")]
    assert all(a is b for a, b in zip(cached, [x for x, _ in capped.loader("validation")], strict=True))


def test_bfloat16_model_prunes_and_scores(llama: dict[str, Any]) -> None:
    task = load_task({**llama, "dtype": "bfloat16"})
    assert next(task.model().parameters()).dtype == torch.bfloat16
    engine = PruningEngine(task, metric="wanda")
    result = engine.evaluate([0.5] * len(engine.layers), splits=("validation",))
    assert result.achieved_sparsity == pytest.approx(0.5, abs=1e-3)
    assert 1.0 < result.metrics["validation"].quality < 1e4


def test_image_classifier_reads_class_folders(vit: dict[str, Any], tmp_path: Path) -> None:
    task = load_task(vit)
    assert isinstance(task, HFImageTask) and task.quality == "accuracy"
    model = task.model()
    x, y = next(iter(task.batches("validation")))
    assert x.shape[1:] == (3, 16, 16) and set(y.tolist()) == {0, 1, 2}  # shuffled: every class early
    ev = task.evaluate(model, "test")
    with torch.no_grad():
        manual = sum(int((model(x).logits.argmax(-1) == y).sum()) for x, y in task.batches("test"))
    assert ev.quality == pytest.approx(manual / (6 * len(LABELS)))
    names = task.prunable_layers(model)
    assert names and all(n.startswith("vit.layers.") for n in names)  # not the patch embedding or classifier
    engine = PruningEngine(task, metric="snip")
    result = engine.evaluate([0.6] * len(engine.layers), splits=("validation", "test"), recovery_steps=2)
    assert result.achieved_sparsity == pytest.approx(0.6, abs=1e-3)
    assert task.split("train")[0].shape == (18, 3, 16, 16)  # in memory, for federated clients
    (Path(vit["data"]["test"]) / "horse").mkdir()
    (Path(vit["data"]["test"]) / "horse" / "0.png").write_bytes(
        (Path(vit["data"]["test"]) / "cat" / "0.png").read_bytes()
    )
    try:
        with pytest.raises(TaskError, match=r"task.data.test: class folder 'horse' is neither one of the model's"):
            load_task(vit).loader("test")
    finally:
        (Path(vit["data"]["test"]) / "horse" / "0.png").unlink()
        (Path(vit["data"]["test"]) / "horse").rmdir()


def test_bad_paths_name_the_missing_file(llama: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(TaskError, match=r"task.data.test: path '.*nope.txt' does not exist"):
        load_task({**llama, "data": {**llama["data"], "test": str(tmp_path / "nope.txt")}})
    with pytest.raises(TaskError, match=r"task.hf: '.*config.json' does not exist"):
        load_task({**llama, "hf": str(tmp_path)})
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((Path(llama["hf"]) / name).read_bytes())
    with pytest.raises(TaskError, match=r"no tokenizer in '.*bare'"):
        load_task({**llama, "hf": str(bare)}).calibration_batches(1)
    with pytest.raises(TaskError, match=r"task.seq_len: Input should be greater than or equal to 1"):
        load_task({**llama, "seq_len": 0})
    with pytest.raises(TaskError, match=r"task.dtype: "):
        load_task({**llama, "dtype": "int8"})


def test_spec_task_mapping_is_typed_and_round_trips(llama: dict[str, Any], tmp_path: Path) -> None:
    spec = parse_spec({"kind": "search", "task": llama})
    assert isinstance(spec.task, HFTaskSpec) and spec.task.hf.is_absolute()
    assert spec.display_name == "tiny-llama-evolution"
    assert parse_spec(spec.model_dump(mode="json")) == spec  # the stored copy parses again
    with pytest.raises(SpecError, match=r"^task: data.validation: path '.*missing.txt' does not exist$"):
        parse_spec({"task": {**llama, "data": {**llama["data"], "validation": str(tmp_path / "missing.txt")}}})
    with pytest.raises(SpecError, match=r"^task: tokenizer: unknown field"):
        parse_spec({"task": {**llama, "tokenizer": "x"}})


def test_relative_paths_resolve_against_the_current_directory(
    llama: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(llama["hf"]).parent
    monkeypatch.chdir(root)
    relative = {"hf": "./tiny-llama", "data": {s: os.path.relpath(p, root) for s, p in llama["data"].items()}}
    task = load_task(relative)
    assert isinstance(task, HFCausalLMTask) and task.spec.hf == Path(llama["hf"]).resolve()


def test_a_factory_raising_type_error_is_called_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "broken_tasks.py").write_text(
        "CALLS = []\n"
        "def broken(seed=0):\n    CALLS.append(seed)\n    raise TypeError('inside the factory')\n"
        "def no_seed():\n    from prunehive.workers.tasks.digits import DigitsMLP\n    return DigitsMLP()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import broken_tasks  # type: ignore[import-not-found]

    with pytest.raises(TypeError, match="inside the factory"):
        load_task("broken_tasks:broken", seed=3)
    assert broken_tasks.CALLS == [3]
    assert load_task("broken_tasks:no_seed", seed=3).name == "digits-mlp"  # called without seed=


def test_a_mapping_as_json_text_or_yaml_file(llama: dict[str, Any], tmp_path: Path) -> None:
    """Configs that carry only scalars (a Flower run config) pass the mapping as JSON text."""
    assert isinstance(load_task(json.dumps(llama)), HFCausalLMTask)
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(llama))
    assert isinstance(load_task(str(tmp_path / "task.yaml")), HFCausalLMTask)
    with pytest.raises(TaskError, match="task: not a valid JSON mapping"):
        load_task("{hf: x")
