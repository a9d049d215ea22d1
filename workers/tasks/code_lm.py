"""code-lm: a small Hugging Face Llama trained on Python standard-library source, byte by byte.

What is fixed, so that figures reproduce on any machine:
- the data: a fixed list of stdlib files shipped as one archive (``code_corpus``), not read from the
  running interpreter, whose files change between patch releases; the splits are fixed windows of them;
- the tokenizer: bytes are token ids, built by code and saved with the model;
- the seed-0 model: trained once, deterministically, and shipped as a ``save_pretrained`` directory
  under ``weights/code-lm`` (see ``shipped``), so first use trains nothing.
What can differ: the last digits of scores, since CPUs and torch or transformers releases round
differently; and models for other seeds or recipes, which are trained on first use (one thread,
deterministic algorithms: repeatable on one machine, not across CPUs) and cached under PRUNEHIVE_CACHE.
Validation and test come from held-out files (not from the training files), so they measure how well the
model generalises to unseen code, which is what pruning must preserve. The model is loaded exactly as a
user's ``task: {hf: DIR}`` Llama is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from torch import nn

from prunehive.workers.tasks.base import Batch, Split
from prunehive.workers.tasks.code_corpus import TEST_FILES, TRAIN_FILES, VALIDATION_FILES, read_sources
from prunehive.workers.tasks.hf_lm import CausalLMBlocks
from prunehive.workers.tasks.hf_load import quiet_transformers
from prunehive.workers.tasks.shipped import check_shipped, shipped_path, train_fresh
from prunehive.workers.tasks.training import cache_dir, cache_lock

CONTEXT = 128  # tokens per input row; windows hold CONTEXT + 1 bytes (inputs and shifted targets)
TRAIN_STRIDE = 64  # overlapping training windows: more distinct rows for ``Task.train`` to sample
EVAL_WINDOWS = 128  # 128 x 128 = 16,384 scored tokens in the test split
VALIDATION_WINDOWS_PER_FILE = 64  # 4 files x 64 x 128 = 32,768 scored tokens of validation
# A 4-block Llama of about the former byte transformer's size: SwiGLU's three 128x344 matrices hold as
# many weights as two 128x512 ones; 344 splits into groups of 4, so 2:4 pruning applies to every layer.
CONFIG: dict[str, Any] = {
    "vocab_size": 256,
    "hidden_size": 128,
    "intermediate_size": 344,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": CONTEXT,
    "tie_word_embeddings": False,
    "bos_token_id": None,
    "eos_token_id": None,
    "pad_token_id": None,
}

__all__ = ["TEST_FILES", "TRAIN_FILES", "VALIDATION_FILES", "CodeLMTask", "byte_tokenizer", "read_sources"]


def windows(data: bytes, stride: int) -> torch.Tensor:
    """Rows of CONTEXT + 1 consecutive bytes taken every ``stride`` bytes, as int64 token ids."""
    tokens = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.int64)
    if len(tokens) < CONTEXT + 1:
        return tokens.new_empty((0, CONTEXT + 1))
    rows = tokens.unfold(0, CONTEXT + 1, stride)
    return rows.contiguous()


def spread(rows: torch.Tensor, k: int = VALIDATION_WINDOWS_PER_FILE) -> torch.Tensor:
    """``k`` rows evenly spaced over the file, so validation sees all of it and not just its header."""
    if len(rows) <= k:
        return rows
    return rows[torch.linspace(0, len(rows) - 1, k).round().long()].contiguous()


def byte_tokenizer() -> Any:
    """A tokenizer whose token ids are the UTF-8 bytes themselves (id 65 is ``A``), saved with the model
    so that the directory is a complete Hugging Face model any ``AutoTokenizer`` user can run."""
    # local: keeps transformers out of spec checking (preflight builds the task)
    from transformers import PreTrainedTokenizerFast

    alphabet = _byte_alphabet()
    core = Tokenizer(models.BPE(vocab={alphabet[b]: b for b in range(256)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, model_max_length=CONTEXT)


def _byte_alphabet() -> list[str]:
    """GPT-2's printable stand-in character for each byte, as the ByteLevel pre-tokenizer emits them."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


class CodeLMTask(CausalLMBlocks):
    """Next-byte prediction on Python source; quality is perplexity on held-out files."""

    name: ClassVar[str] = "code-lm"
    description: ClassVar[str] = (
        "Byte-level 4-block Hugging Face Llama on Python stdlib source, scored on held-out files."
    )
    # Small batches, many steps: per byte trained, batch 8 beat 16 and 32 (val ppl 5.1 vs 6.4 vs 8.3).
    batch_size: int = 8
    eval_batch_size: int = 32
    calibration_batch_size: int = 32  # 8 batches x 32 windows = 32k tokens of statistics, as Wanda-style methods use
    train_steps: int = 3000
    lr: float = 1e-3

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self._splits: dict[str, Batch] = {}
        self._data_digest: str | None = None

    def _rows(self, name: Split) -> torch.Tensor:
        if name == "train":
            return torch.cat([windows(src, TRAIN_STRIDE) for src in read_sources(TRAIN_FILES)])
        if name == "test":
            rows = torch.cat([windows(src, CONTEXT + 1) for src in read_sources(TEST_FILES)])  # non-overlapping
            return rows[:EVAL_WINDOWS].contiguous()
        return torch.cat([spread(windows(src, CONTEXT + 1)) for src in read_sources(VALIDATION_FILES)])

    def split(self, name: Split) -> Batch:
        """Cached (x, y) with y = x shifted by one byte; built once since searches call this often."""
        if name not in self._splits:
            rows = self._rows(name)
            self._splits[name] = (rows[:, :-1].contiguous(), rows[:, 1:].contiguous())
        return self._splits[name]

    def architecture(self) -> nn.Module:
        # local: keeps transformers out of spec checking (preflight builds the task)
        from transformers import LlamaConfig, LlamaForCausalLM

        return LlamaForCausalLM(LlamaConfig(**CONFIG))

    def fingerprint(self) -> str:
        """The configuration, the recipe and the training bytes: a changed corpus makes another model.
        Held-out files are left out: changing how it is scored must not retrain it."""
        if self._data_digest is None:
            digest = hashlib.sha256()
            for src in read_sources(TRAIN_FILES):
                digest.update(hashlib.sha256(src).digest())
            self._data_digest = digest.hexdigest()
        recipe = f"LlamaForCausalLM|{json.dumps(CONFIG, sort_keys=True)}|{self.train_steps}|{self.lr}|"
        recipe += f"{self.batch_size}|{self.seed}|{self._data_digest}"
        return hashlib.sha256(recipe.encode()).hexdigest()[:12]

    def directory(self) -> Path:
        """The shipped directory when this is the shipped recipe and seed, else the cached one, trained
        and written on first use."""
        shipped = shipped_path(self.name, self.fingerprint())
        if shipped is not None:
            return shipped
        path = cache_dir() / f"{self.name}-{self.fingerprint()}"
        with cache_lock(path):
            if not (path / "config.json").is_file():
                tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                self.save_weights(train_fresh(self), tmp)
                shutil.rmtree(path, ignore_errors=True)
                os.replace(tmp, path)
        return path

    def load_model(self) -> nn.Module:
        model = super().load_model()
        if shipped_path(self.name, self.fingerprint()) is not None:
            check_shipped(self.name, model.state_dict())
        return model

    def save_weights(self, model: nn.Module, path: Path) -> None:
        """A complete Hugging Face directory: the model's ``save_pretrained`` and the byte tokenizer."""
        quiet_transformers()
        model.save_pretrained(path)  # type: ignore[operator]
        byte_tokenizer().save_pretrained(path)
