"""code-lm-deep: a deeper grouped-query Llama on code-lm's data, registered as a built-in (nothing trained here)."""

from __future__ import annotations

import torch

from prunehive.workers.tasks import BUILTINS, describe_tasks, load_task
from prunehive.workers.tasks.code_lm import CodeLMTask
from prunehive.workers.tasks.code_lm_deep import DEEP_CONFIG, CodeLMDeepTask


def test_the_deep_model_has_many_blocks_grouped_query_attention_and_a_gated_mlp() -> None:
    model = load_task("code-lm-deep").architecture()
    config = model.config
    assert config.num_hidden_layers >= 12
    assert config.num_key_value_heads < config.num_attention_heads
    assert config.num_attention_heads % config.num_key_value_heads == 0
    mlp = model.model.layers[0].mlp
    assert {"gate_proj", "up_proj", "down_proj"} <= {n for n, _ in mlp.named_children()}
    assert config.num_hidden_layers == DEEP_CONFIG["num_hidden_layers"]


def test_it_is_a_built_in_on_code_lm_s_data() -> None:
    assert "code-lm-deep" in BUILTINS
    assert any(row["name"] == "code-lm-deep" and row["quality"] == "perplexity" for row in describe_tasks())
    deep, shallow = CodeLMDeepTask(), CodeLMTask()
    assert torch.equal(deep.split("test")[0], shallow.split("test")[0])
    assert deep.fingerprint() != shallow.fingerprint()
    assert deep.fingerprint() != CodeLMDeepTask(seed=1).fingerprint()

