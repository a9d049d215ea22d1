"""``task: {hf: DIR, data: ...}`` for a causal language model: any local ``AutoModelForCausalLM``.

The model and its tokenizer load from the directory alone. The data splits are text (see
``text_data``); the ``train`` split is the calibration data, which also feeds recovery fine-tuning.
The prunable layers are the Linear layers inside the decoder blocks (never the embeddings or
``lm_head``), grouped by block. Quality is perplexity.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from prunehive.workers.tasks.base import Batch, QualityKind, Split, Task
from prunehive.workers.tasks.hf_load import block_layers, fresh_model, load_causal_lm, load_tokenizer, mlp_inputs
from prunehive.workers.tasks.spec import HFTaskSpec
from prunehive.workers.tasks.text_data import check_text_split, text_batches
from prunehive.workers.tasks.training import CachedStream

SPLIT_FIELDS: dict[str, str] = {"train": "calibration", "validation": "validation", "test": "test"}


class CausalLMBlocks(Task):
    """What every Hugging Face causal LM task shares, whatever its data: layers, blocks, loading."""

    quality: ClassVar[QualityKind] = "perplexity"
    dtype: str = "float32"

    def directory(self) -> Path:
        raise NotImplementedError

    def load_model(self) -> nn.Module:
        return load_causal_lm(self.directory(), self.dtype)

    def architecture(self) -> nn.Module:
        return fresh_model(self.directory(), "causal-lm")

    def layer_blocks(self, model: nn.Module) -> dict[str, str]:
        """Linear layers inside the decoder blocks, each with its block (``model.layers.3``)."""
        return block_layers(model)

    def prunable_layers(self, model: nn.Module) -> list[str]:
        return list(self.layer_blocks(model))

    def channel_prunable_layers(self, model: nn.Module) -> list[str]:
        """The MLPs' first projections (gate/up, fc1): their outputs feed only the MLP's last projection."""
        return mlp_inputs(self.prunable_layers(model))


class HFCausalLMTask(CausalLMBlocks):
    """A causal LM from a spec's ``task:`` mapping, scored on the mapping's text files."""

    description: ClassVar[str] = "A local Hugging Face causal LM on your text files (perplexity)"
    eval_batch_tokens: int = 4096  # tokens per evaluation batch: bounds the logits' memory
    calibration_batch_tokens: int = 8192  # 8 calibration batches read the default 64k calibration tokens

    def __init__(self, spec: HFTaskSpec, seed: int = 0) -> None:
        super().__init__(seed)
        self.spec = spec
        self.name = spec.label  # type: ignore[misc]  # an instance's own name, for messages and caches
        self.dtype = spec.dtype
        self._tokenizer: Any = None
        self._streams: dict[str, CachedStream] = {}

    def directory(self) -> Path:
        return self.spec.hf

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.spec.hf)
        return self._tokenizer

    def check_inputs(self) -> None:
        """Before a job starts: the tokenizer loads and every split holds at least one window."""
        for field in SPLIT_FIELDS.values():
            check_text_split(getattr(self.spec.data, field), self.tokenizer, self.spec.seq_len, f"task.data.{field}")

    def loader(self, name: Split) -> Iterable[Batch]:
        """The split's windows; capped splits are read once and then served from memory."""
        if name not in self._streams:
            field = SPLIT_FIELDS[name]
            cap = getattr(self.spec.max_tokens, field)
            per_batch = self.calibration_batch_tokens if name == "train" else self.eval_batch_tokens
            rows = max(1, per_batch // self.spec.seq_len)
            path = getattr(self.spec.data, field)

            def source() -> Iterable[Batch]:
                return text_batches(path, self.tokenizer, self.spec.seq_len, cap, rows, f"task.data.{field}")

            self._streams[name] = CachedStream(source, limit=None if cap is not None else 0)
        return self._streams[name]
