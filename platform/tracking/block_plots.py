"""Per-layer values of many-block models as a blocks x sublayers heatmap: one bar per layer stops being
readable long before Llama-3-8B's 224 projections, a grid of 32 blocks by 7 projections does not."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from prunehive.platform.tracking.plots import layer_sparsity, new_figure

MANY_BLOCKS = 8  # from this many blocks on, ``layer_figure`` draws the heatmap
_BLOCK = re.compile(r"^(.*?\.\d+)\.(.+)$")  # "model.layers.3" + "self_attn.q_proj"


def split_blocks(layer_names: Sequence[str]) -> tuple[list[str], list[str], dict[str, tuple[int, int]]]:
    """Blocks and sublayer names in order of first appearance, and each layer's (row, column); a name
    without a numbered block is its own block with an empty sublayer."""
    blocks: list[str] = []
    columns: list[str] = []
    cells: dict[str, tuple[int, int]] = {}
    for name in layer_names:
        match = _BLOCK.match(name)
        block, sub = (match.group(1), match.group(2)) if match else (name, "")
        if block not in blocks:
            blocks.append(block)
        if sub not in columns:
            columns.append(sub)
        cells[name] = (blocks.index(block), columns.index(sub))
    return blocks, columns, cells


def block_heatmap(layer_names: Sequence[str], values: Sequence[float], title: str = "Sparsity per layer") -> Figure:
    """Rows are blocks, columns the sublayers inside them (``self_attn.q_proj`` ... ``mlp.down_proj``),
    colour the value in [0, 1]; a cell a block does not have stays blank."""
    if len(values) != len(layer_names):
        raise ValueError(f"{len(values)} values for {len(layer_names)} layers")
    blocks, columns, cells = split_blocks(layer_names)
    grid = np.full((len(blocks), len(columns)), np.nan)
    for name, value in zip(layer_names, values, strict=True):
        grid[cells[name]] = float(value)
    fig = new_figure(min(3.0 + 1.1 * len(columns), 14.0), min(2.0 + 0.28 * len(blocks), 30.0))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([c or "(layer)" for c in columns], rotation=40, ha="right", fontsize="small")
    step = max(1, math.ceil(len(blocks) / 40))
    ax.set_yticks(range(0, len(blocks), step))
    ax.set_yticklabels([blocks[i].rsplit(".", 1)[-1] for i in range(0, len(blocks), step)], fontsize="small")
    ax.set_ylabel("block")
    ax.set_xlabel("sublayer")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="fraction removed")
    return fig


def layer_figure(
    layer_names: Sequence[str], values: Sequence[float], baselines: dict[str, Sequence[float]] | None = None
) -> Figure:
    """The per-layer figure a report shows: bars per layer (with baselines) for few blocks, the blocks x
    sublayers heatmap of ``values`` from ``MANY_BLOCKS`` blocks on."""
    blocks, _, _ = split_blocks(layer_names)
    if len(blocks) >= MANY_BLOCKS:
        return block_heatmap(layer_names, values)
    return layer_sparsity(layer_names, values, baselines)


def write_layer_plot(layers: dict[str, float], path: Path) -> Path:
    """``prunehive prune --plot``: a prune result's per-layer fractions as ``layer_figure`` draws them, as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    layer_figure(list(layers), list(layers.values())).savefig(path, dpi=110)
    return path
