"""Tiny Hugging Face models built from configs in temporary directories, with data files beside them.

Real transformers classes, real ``save_pretrained`` directories and tokenizers; only the sizes are
tiny (hidden size 32, two blocks) so that loading, pruning and a small search take seconds.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

WORDS = (
    "the", "a", "model", "prunes", "layer", "weight", "sparse", "dense", "search",
    "block", "token", "data", "test", "value", "of", "to", "and", "is",
)  # fmt: skip


def write_text(path: Path, words: int, seed: int) -> Path:
    """Sentences of a small vocabulary: enough structure for a tokenizer, any length."""
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + "." for _ in range(words // 8)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def text_data(root: Path) -> dict[str, str]:
    """Calibration a directory of two files, validation and test single files."""
    write_text(root / "calibration" / "part1.txt", 1500, 1)
    write_text(root / "calibration" / "part2.txt", 1500, 2)
    return {
        "calibration": str(root / "calibration"),
        "validation": str(write_text(root / "val.txt", 1200, 3)),
        "test": str(write_text(root / "test.txt", 1200, 4)),
    }


def _tokenizer(corpus: Path) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "</s>"], show_progress=False)
    core.train([str(p) for p in sorted(corpus.rglob("*.txt"))], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="</s>")


def causal_lm(root: Path, family: str = "llama") -> tuple[Path, dict[str, str]]:
    """A tiny ``llama`` or ``opt`` causal LM with its tokenizer, and text data files."""
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    data = text_data(root / "data")
    tokenizer = _tokenizer(root / "data")
    torch.manual_seed(0)
    if family == "llama":
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
        )  # fmt: skip
        model: Any = LlamaForCausalLM(config)
    else:
        config = OPTConfig(
            vocab_size=len(tokenizer), hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=64, word_embed_proj_dim=32,
        )  # fmt: skip
        model = OPTForCausalLM(config)
    directory = root / f"tiny-{family}"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory, data


LABELS = ("cat", "dog", "bird")


def image_data(root: Path, per_class: int = 6) -> dict[str, str]:
    """Class folders of small PNGs whose colour depends on the class, for each split."""
    from PIL import Image

    rng = np.random.default_rng(0)
    out = {}
    for split in ("calibration", "validation", "test"):
        for index, label in enumerate(LABELS):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 80, (20, 20, 3), dtype=np.uint8)
                pixels[..., index] += 150
                Image.fromarray(pixels).save(folder / f"{i}.png")
        out[split] = str(root / split)
    return out


def vit_classifier(root: Path, channels: int = 3) -> tuple[Path, dict[str, str]]:
    """A tiny ViT image classifier with the PIL image processor, and image folders (RGB PNGs, which a
    ``channels=1`` model reads as grayscale)."""
    from transformers import ViTConfig, ViTForImageClassification
    from transformers.models.vit import ViTImageProcessorPil

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)}, num_channels=channels,
    )  # fmt: skip
    directory = root / "tiny-vit"
    ViTForImageClassification(config).save_pretrained(directory)
    normalise = {"image_mean": [0.5] * channels, "image_std": [0.5] * channels}
    ViTImageProcessorPil(size={"height": 16, "width": 16}, **normalise).save_pretrained(directory)
    return directory, image_data(root / "images")
