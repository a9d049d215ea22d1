"""What a structured candidate keeps, block by block. Pure Python (no torch), so specs, stores and
summaries can carry it: the engine that scores it, the shrinker that builds the smaller model and the
Hugging Face export all read this one description."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BlockPlan:
    """One decoder block. ``attention``/``mlp`` False: that sublayer is removed (its residual branch adds
    nothing); both False: the block is removed. ``kv_groups``: the kept key/value groups, each with all
    its query heads, in the model's order (None: all); ``channels``: the kept MLP intermediate channels
    (None: all)."""

    attention: bool = True
    mlp: bool = True
    kv_groups: tuple[int, ...] | None = None
    channels: tuple[int, ...] | None = None

    @property
    def removed(self) -> bool:
        return not self.attention and not self.mlp

    def to_dict(self) -> dict[str, Any]:
        return {
            "attention": self.attention,
            "mlp": self.mlp,
            "kv_groups": None if self.kv_groups is None else list(self.kv_groups),
            "channels": None if self.channels is None else list(self.channels),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BlockPlan:
        kv, ch = data.get("kv_groups"), data.get("channels")
        return cls(
            attention=bool(data.get("attention", True)),
            mlp=bool(data.get("mlp", True)),
            kv_groups=None if kv is None else tuple(int(i) for i in kv),
            channels=None if ch is None else tuple(int(i) for i in ch),
        )


@dataclass(frozen=True)
class StructurePlan:
    """Every decoder block's plan, in block order (a removed block stays listed, as removed)."""

    blocks: tuple[BlockPlan, ...]

    @classmethod
    def dense(cls, num_blocks: int) -> StructurePlan:
        return cls(tuple(BlockPlan() for _ in range(num_blocks)))

    def kept_blocks(self) -> list[int]:
        return [i for i, b in enumerate(self.blocks) if not b.removed]

    def to_dict(self) -> dict[str, Any]:
        return {"blocks": [b.to_dict() for b in self.blocks]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StructurePlan:
        return cls(tuple(BlockPlan.from_dict(b) for b in data["blocks"]))
