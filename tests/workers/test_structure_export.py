"""hf_export: a structured candidate written as a smaller Hugging Face directory reloads and reproduces the
logits of the zeroed full-shaped model, plainly when widths are uniform and through prunehive's own
modelling file when they differ per block."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from structure_models import BLOCKS, inputs, logits, tiny_llama
from torch import nn
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from prunehive.workers.structure.hf_export import MODELING_FILE, ExportError, export_hf, load_exported
from prunehive.workers.structure.plan import BlockPlan, StructurePlan
from prunehive.workers.structure.shrink import parameter_count, zero_removed
from prunehive.workers.tasks.code_lm import byte_tokenizer

UNIFORM = StructurePlan(
    (BlockPlan(kv_groups=(1,), channels=tuple(range(0, 48, 2))), BlockPlan(attention=False, mlp=False))
    + (BlockPlan(kv_groups=(0,), channels=tuple(range(24))),) * 2
)
PER_LAYER = StructurePlan(
    (BlockPlan(kv_groups=(1,)), BlockPlan(attention=False), BlockPlan(mlp=False), BlockPlan(channels=(3, 5, 9)))
)


def masked(plan: StructurePlan) -> nn.Module:
    model = tiny_llama()
    zero_removed(model, plan)
    return model


def test_uniform_export_loads_without_remote_code_and_reproduces_logits(tmp_path: Path) -> None:
    full = masked(UNIFORM)
    before = copy.deepcopy(full.state_dict())
    out = export_hf(full, UNIFORM, tmp_path / "uniform")
    assert out.form == "plain" and not out.trust_remote_code
    assert all(torch.equal(before[k], v) for k, v in full.state_dict().items())  # the source is untouched
    config = json.loads((tmp_path / "uniform" / "config.json").read_text())
    assert "auto_map" not in config and not (tmp_path / "uniform" / MODELING_FILE).exists()
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == BLOCKS - 1
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["intermediate_size"]) == (2, 1, 24)
    assert config["head_dim"] == 8
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "uniform", trust_remote_code=False)
    assert type(loaded) is LlamaForCausalLM
    assert torch.allclose(logits(loaded.eval()), logits(full), atol=1e-4)
    assert parameter_count(loaded) == out.parameters < parameter_count(full)


def test_per_layer_export_loads_with_its_modelling_file_and_reproduces_logits(tmp_path: Path) -> None:
    full = masked(PER_LAYER)
    out = export_hf(full, PER_LAYER, tmp_path / "per-layer")
    assert out.form == "per-layer" and out.trust_remote_code
    config = json.loads((tmp_path / "per-layer" / "config.json").read_text())
    assert config["layer_num_attention_heads"] == [2, 0, 4, 4]
    assert config["layer_num_key_value_heads"] == [1, 0, 2, 2]
    assert config["layer_intermediate_sizes"] == [48, 48, 0, 3]
    assert config["auto_map"]["AutoModelForCausalLM"].startswith("modeling_prunehive_llama.")
    with pytest.raises(ValueError, match="trust_remote_code|custom code"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "per-layer", trust_remote_code=False)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "per-layer", trust_remote_code=True).eval()
    assert type(loaded).__name__ == "PrunedLlamaForCausalLM"
    assert torch.allclose(logits(loaded), logits(full), atol=1e-4)
    assert torch.allclose(logits(load_exported(tmp_path / "per-layer")), logits(full), atol=1e-4)
    assert parameter_count(loaded) == out.parameters < parameter_count(full)


def test_an_export_saves_the_tokenizer_it_is_given(tmp_path: Path) -> None:
    export_hf(masked(UNIFORM), UNIFORM, tmp_path / "with-tokenizer", tokenizer=byte_tokenizer())
    assert (tmp_path / "with-tokenizer" / "tokenizer.json").is_file()


def test_foreign_modelling_code_is_never_run(tmp_path: Path) -> None:
    export_hf(masked(PER_LAYER), PER_LAYER, tmp_path / "export")
    code = tmp_path / "export" / MODELING_FILE
    code.write_text(code.read_text() + "\nraise SystemExit('user code ran')\n")
    with pytest.raises(ExportError, match="not prunehive's own"):
        load_exported(tmp_path / "export")
    with pytest.raises(ExportError, match="no config.json"):
        load_exported(tmp_path / "missing")


def test_a_plain_export_reloads_through_load_exported(tmp_path: Path) -> None:
    full = masked(UNIFORM)
    export_hf(full, UNIFORM, tmp_path / "plain")
    loaded = load_exported(tmp_path / "plain")
    with torch.no_grad():
        assert torch.allclose(loaded(inputs()).logits, full(inputs()).logits, atol=1e-4)
