"""How weights compete for survival, parsed from a spec's ``granularity``. Pure Python: spec validation
imports this without torch (the masks built from it live in ``workers/masks.py``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

GroupKind = Literal["layer", "row", "nm", "channel", "head", "block", "structured"]
# Units removed whole from a decoder LM and scored by workers/structure (KV groups, blocks, or both with
# MLP channels); ``channel`` keeps its own Torch-Pruning path.
STRUCTURED = ("head", "block", "structured")
_RULES = {
    "channel": "whole output channels, layer-wide",
    "head": "whole KV groups (a key/value head with its query heads)",
    "block": "whole decoder blocks",
    "structured": "KV groups, MLP channels and decoder blocks together",
}


@dataclass(frozen=True)
class Granularity:
    """How weights compete: ``unstructured`` (per layer or per row), ``N:M``, ``channel``, or the decoder
    units ``head``, ``block`` and ``structured``."""

    kind: GroupKind
    n: int = 0
    m: int = 0

    @classmethod
    def parse(cls, text: str, per_row: bool = False) -> Granularity:
        if text == "unstructured":
            return cls("row" if per_row else "layer")
        if text == "channel" or text in STRUCTURED:
            return cls(text)  # type: ignore[arg-type]
        match = re.fullmatch(r"(\d+):(\d+)", text)
        if match and 0 < int(match[1]) < int(match[2]):
            return cls("nm", int(match[1]), int(match[2]))
        raise ValueError(
            f"unknown granularity {text!r}; choose unstructured, channel, head, block, structured "
            "or N:M such as 2:4 or 4:8"
        )

    @property
    def label(self) -> str:
        if self.kind in _RULES:
            return self.kind
        return "unstructured" if self.kind in ("layer", "row") else f"{self.n}:{self.m}"

    @property
    def structured(self) -> bool:
        """Whether decoder units (KV groups, blocks) compete: pruned by workers/structure, not the engine."""
        return self.kind in STRUCTURED

    @property
    def per_row(self) -> bool:
        """Whether weights compete within each output row: ``unstructured`` with ``per_row: true`` only
        (N:M compares within groups of M, ``channel`` whole output channels; neither reads ``per_row``)."""
        return self.kind == "row"

    def rule(self, metric: str = "") -> str:
        """What competes for survival, in words, for summaries and tracking. Wanda's paper compares within
        each output row; prunehive's default (``per_row: false``) compares across the whole layer."""
        if self.kind == "row":
            return "per-row (Wanda paper)" if metric == "wanda" else "per-row"
        if self.kind == "layer":
            return "layer-wide (default; the Wanda paper uses per-row)" if metric == "wanda" else "layer-wide"
        if self.kind == "nm":
            return f"{self.n}:{self.m} groups within each row"
        return _RULES[self.kind]

    @property
    def default_sparsity(self) -> float | None:
        return 1.0 - self.n / self.m if self.kind == "nm" else None

    def supports(self, weight_shape: tuple[int, ...]) -> bool:
        """N:M needs each row to split into whole groups of M."""
        if self.kind != "nm":
            return True
        cols = 1
        for d in weight_shape[1:]:
            cols *= d
        return cols % self.m == 0


def pruning_rule(granularity: str, per_row: bool, metric: str) -> dict[str, bool | str]:
    """The effective ``per_row`` and the comparison ``rule`` that ``prune --json``, run summaries and MLflow
    report, so a reader never has to infer which rule a number was measured with."""
    g = Granularity.parse(granularity, per_row=per_row)
    return {"per_row": g.per_row, "rule": g.rule(metric)}
