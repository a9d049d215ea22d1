"""``llama-25m``: a Llama of realistic shape for the level-database benchmark, built from a config.

8 blocks of hidden size 512 (SwiGLU 1376, 25.6M parameters, fp32), random weights, a byte tokenizer and
short text files, read as a ``task: {hf: DIR, data: ...}`` mapping. A level's size depends on its
sparsity and the dtype, and a candidate's cost on the shapes and the validation tokens, not on what the
weights learned, so nothing is trained. Validation holds 2,048 tokens: fewer than a real evaluation
reads, so the cost of reading a level weighs more here than it would there.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from prunehive.workers.tasks.code_lm import byte_tokenizer
from prunehive.workers.tasks.hf_load import quiet_transformers

LLAMA_25M = "llama-25m"
CONFIG: dict[str, Any] = {
    "vocab_size": 256,
    "hidden_size": 512,
    "intermediate_size": 1376,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "max_position_embeddings": 128,
    "tie_word_embeddings": False,
}
TOKENS = {"calibration": 8192, "validation": 2048, "test": 2048}
WORDS = ("the", "model", "prunes", "a", "sparse", "layer", "of", "weights", "and", "keeps", "its", "quality")


def write_llama_25m(root: Path) -> str:
    """The model directory and text files under ``root``; the task mapping as JSON (what ``load_task`` reads)."""
    return write_llama(root, LLAMA_25M, CONFIG, TOKENS)


def write_llama(
    root: Path, name: str, config: dict[str, Any], tokens: dict[str, int], dtype: str = "float32"
) -> str:
    """A Llama of ``config`` with random weights (seed 0) and a byte tokenizer in ``root / name``, text files
    holding ``tokens`` per split beside it; the task mapping (loaded in ``dtype``) as JSON."""
    quiet_transformers()
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**config)).save_pretrained(root / name)
    byte_tokenizer().save_pretrained(root / name)
    rng = random.Random(0)
    data = {}
    for split, count in tokens.items():
        words = count // 4 + 64  # about 6 bytes a word: comfortably more than the split reads
        text = " ".join(rng.choice(WORDS) for _ in range(words))
        (root / f"{split}.txt").write_text(text + "\n")
        data[split] = str(root / f"{split}.txt")
    mapping = {"hf": str(root / name), "data": data, "seq_len": 128, "max_tokens": tokens, "dtype": dtype}
    return json.dumps(mapping)
