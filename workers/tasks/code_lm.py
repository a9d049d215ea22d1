"""A byte-level causal transformer language model trained on Python standard-library source.

The corpus is a fixed list of pure-Python stdlib files read from the local interpreter, so the task
needs no downloads. Validation and test come from held-out files (not from the training files), so
they measure how well the model generalises to unseen code, which is what pruning must preserve.
"""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from prunehive.workers.tasks.base import Batch, QualityKind, Split, Task

CONTEXT = 128  # tokens per input row; windows hold CONTEXT + 1 bytes (inputs and shifted targets)
TRAIN_STRIDE = 64  # overlapping training windows: more distinct rows for ``Task.train`` to sample
EVAL_WINDOWS = 128  # 128 x 128 = 16,384 scored tokens in the test split
VALIDATION_WINDOWS_PER_FILE = 64  # 4 files x 64 x 128 = 32,768 scored tokens of validation

TRAIN_FILES: tuple[str, ...] = (
    "argparse.py", "ast.py", "dataclasses.py", "enum.py", "functools.py",
    "inspect.py", "pathlib.py", "typing.py", "json/decoder.py", "json/encoder.py",
    "json/__init__.py", "collections/__init__.py", "logging/__init__.py", "abc.py", "contextlib.py",
    "copy.py", "fractions.py", "calendar.py", "string.py", "shlex.py",
    "queue.py", "tempfile.py", "shutil.py", "threading.py", "random.py",
)  # fmt: skip
# Several files, windows spread over each: a search's fitness from one file overfitted that file's style
# (a 2:4 metric search won on validation and lost on test).
VALIDATION_FILES: tuple[str, ...] = ("textwrap.py", "difflib.py", "heapq.py", "configparser.py")
TEST_FILES: tuple[str, ...] = ("gettext.py",)


def read_sources(files: tuple[str, ...]) -> list[bytes]:
    """Raw bytes of stdlib files; fails loudly so a different Python cannot silently change the data."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for name in files:
        path = root / name
        if not path.is_file():
            raise RuntimeError(f"code-lm needs the standard-library file {path}, which does not exist")
        out.append(path.read_bytes())
    return out


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


class Attention(nn.Module):
    """Causal multi-head self-attention with separate q/k/v/o projections, each prunable on its own."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (p(x).view(b, t, self.heads, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    """fc1 -> GELU -> fc2; dropping an fc1 output only drops an fc2 input, never the residual."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block (stable to train without warm-up)."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ByteTransformer(nn.Module):
    """Maps byte ids [B, T] to next-byte logits [B, T, 256]."""

    def __init__(
        self, vocab: int = 256, dim: int = 128, depth: int = 4, heads: int = 4, hidden: int = 512, context: int = 128
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(context, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, hidden) for _ in range(depth))
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        """GPT-2 style small normal init: trains faster than PyTorch's defaults at this size."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1], device=x.device)
        h = self.tok(x) + self.pos(positions)
        for block in self.blocks:
            h = block(h)
        return self.lm_head(self.ln_f(h))


class CodeLMTask(Task):
    """Next-byte prediction on Python source; quality is perplexity on held-out files."""

    name: ClassVar[str] = "code-lm"
    quality: ClassVar[QualityKind] = "perplexity"
    description: ClassVar[str] = "Byte-level 4-block transformer LM on Python stdlib source, scored on held-out files."
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
        return ByteTransformer()

    def fingerprint(self) -> str:
        """Adds the training bytes: another Python version ships other stdlib files, so another model.
        Held-out files are left out: changing how the model is scored must not retrain it."""
        if self._data_digest is None:
            digest = hashlib.sha256()
            for src in read_sources(TRAIN_FILES):
                digest.update(hashlib.sha256(src).digest())
            self._data_digest = digest.hexdigest()
        return hashlib.sha256((super().fingerprint() + self._data_digest).encode()).hexdigest()[:12]

    def prunable_layers(self, model: nn.Module) -> list[str]:
        """The 24 Linear layers inside blocks; embeddings and lm_head stay dense, as in LLM pruning work."""
        return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith("blocks.")]

    def channel_prunable_layers(self, model: nn.Module) -> list[str]:
        """Only MLP fc1: its outputs feed fc2 alone, so removing them leaves the residual stream intact."""
        return [n for n in self.prunable_layers(model) if n.endswith(".mlp.fc1")]
