"""Apply exported recipes with the real llm-compressor and report what they did to each Linear layer.

Run as a script by ``test_llmcompressor_recipe.py`` in a subprocess whose PYTHONPATH starts with the folder
llm-compressor and its pins were installed into (it needs an older transformers than prunehive), so this file
imports nothing of prunehive and is never imported by the test process.

    python llmcompressor_oneshot.py CASES.json OUT.json

CASES.json is a list of ``{"model": DIR, "recipe": FILE, "text": FILE, "seq_len": N, "samples": N}``. OUT.json
gets, for each case, the library versions, each modifier's class and arguments as llm-compressor parsed them,
the modules each modifier enumerated (in its order, the order its ``sparsity`` list is indexed by) and every
Linear layer's fraction of zero weights after ``oneshot``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def calibration_set(tokenizer: Any, text: Path, seq_len: int, samples: int) -> Any:
    """``samples`` windows of ``seq_len`` tokens of the text file, already tokenized."""
    from datasets import Dataset

    ids = tokenizer(text.read_text())["input_ids"]
    windows = [ids[i : i + seq_len] for i in range(0, len(ids) - seq_len, seq_len)][:samples]
    if len(windows) < samples:
        raise ValueError(f"{text} holds {len(windows)} windows of {seq_len} tokens, not {samples}")
    return Dataset.from_dict({"input_ids": windows, "attention_mask": [[1] * seq_len for _ in windows]})


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    import torch
    from llmcompressor import active_session, oneshot
    from llmcompressor.recipe import Recipe
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parsed = Recipe.create_instance(case["recipe"])  # the pydantic validation the error came from
    model = AutoModelForCausalLM.from_pretrained(case["model"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(case["model"])
    data = calibration_set(tokenizer, Path(case["text"]), case["seq_len"], case["samples"])
    oneshot(
        model=model,
        tokenizer=tokenizer,
        recipe=case["recipe"],
        dataset=data,
        num_calibration_samples=case["samples"],
        max_seq_length=case["seq_len"],
    )
    used = active_session().lifecycle.recipe.modifiers
    return {
        "modifiers": [
            {"type": type(m).__name__, "args": m.model_dump(mode="json", exclude={"index", "group", "start", "end"})}
            for m in parsed.modifiers
        ],
        "enumerated": [list(getattr(m, "_target_layers", {})) for m in used],
        "sparsity": {
            name: float((module.weight == 0).float().mean())
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear)
        },
    }


def main(cases_path: str, out_path: str) -> None:
    import compressed_tensors
    import llmcompressor
    import torch
    import transformers

    torch.manual_seed(0)
    cases = json.loads(Path(cases_path).read_text())
    result = {
        "versions": {
            "llmcompressor": llmcompressor.__version__,
            "compressed_tensors": compressed_tensors.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
        "torch_file": torch.__file__,
        "cases": [run_case(case) for case in cases],
    }
    Path(out_path).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:3])
