"""Figures for a benchmark report. Plain ``Figure`` objects on the Agg canvas, like ``plots``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from prunehive.platform.tracking.plots import new_figure, running_best

_STRATEGY_COLORS = ["tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown"]
_HEURISTIC_COLORS = ["tab:gray", "tab:olive", "tab:cyan", "tab:pink", "black"]
_HEURISTIC_STYLES = ["--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 1))]


def _axes_text(ax: Axes, title: str, xlabel: str, ylabel: str, higher_is_better: bool, log_scale: bool) -> None:
    """Title (saying which way is better), axis labels, and a log y axis where asked."""
    if log_scale:
        ax.set_yscale("log")
    ax.set_title(f"{title} ({'higher' if higher_is_better else 'lower'} is better)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def best_so_far_curve(values: Sequence[float], higher_is_better: bool, length: int) -> list[float]:
    """Best value after each evaluation (NaN until the first success), held flat up to ``length``."""
    best = running_best(values, higher_is_better)
    return best + [best[-1] if best else math.nan] * (length - len(best))


def best_so_far_spread(
    curves: dict[str, list[list[float]]],
    higher_is_better: bool,
    baselines: dict[str, float],
    label: str,
    log_scale: bool = False,
) -> Figure:
    """Per strategy: mean best-so-far over seeds (line) and the min-max over seeds (band); baselines flat."""
    fig = new_figure(8, 4.8)
    ax = fig.add_subplot()
    length = max((len(c) for runs in curves.values() for c in runs), default=0)
    steps = np.arange(1, length + 1)
    for n, (name, runs) in enumerate(curves.items()):
        color = _STRATEGY_COLORS[n % len(_STRATEGY_COLORS)]
        best = np.array([best_so_far_curve(c, higher_is_better, length) for c in runs], dtype=float)
        if not np.isfinite(best).any():
            continue
        with np.errstate(all="ignore"):
            mean = np.nanmean(best, axis=0)
            low, high = np.nanmin(best, axis=0), np.nanmax(best, axis=0)
        ax.fill_between(steps, low, high, color=color, alpha=0.18, linewidth=0, step="post")
        final = f"{mean[-1]:.4g}"
        ax.step(steps, mean, where="post", color=color, linewidth=2, label=f"{name} (mean of {len(runs)}: {final})")
    for n, (name, value) in enumerate(baselines.items()):
        ax.axhline(
            value,
            color=_HEURISTIC_COLORS[n % len(_HEURISTIC_COLORS)],
            linestyle=_HEURISTIC_STYLES[n % len(_HEURISTIC_STYLES)],
            linewidth=1.3,
            label=f"{name} ({value:.4g})",
        )
    _axes_text(ax, f"Best {label} so far; band: min-max over seeds", "evaluations", label, higher_is_better, log_scale)
    if length:
        ax.set_xlim(1, length)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return fig


def quality_vs_sparsity(
    strategies: dict[str, list[tuple[float, float, float]]],
    heuristics: dict[str, list[tuple[float, float]]],
    label: str,
    higher_is_better: bool,
    log_scale: bool = False,
) -> Figure:
    """Test quality against achieved sparsity: strategies as mean with a +-std bar, heuristics as lines."""
    fig = new_figure(8, 4.8)
    ax = fig.add_subplot()
    xs = sorted({x for pts in strategies.values() for x, _, _ in pts} | {x for p in heuristics.values() for x, _ in p})
    span = (xs[-1] - xs[0]) if len(xs) > 1 else 0.1
    count = len(strategies) + len(heuristics)
    for n, (name, pts) in enumerate(heuristics.items()):
        pts = sorted(pts)
        offset = (n - (count - 1) / 2) * span * 0.012  # side by side where the sparsity is shared
        ax.plot(
            [x + offset for x, _ in pts],
            [y for _, y in pts],
            linestyle=_HEURISTIC_STYLES[n % len(_HEURISTIC_STYLES)],
            marker="s",
            color=_HEURISTIC_COLORS[n % len(_HEURISTIC_COLORS)],
            label=f"heuristic: {name}",
        )
    for n, (name, points) in enumerate(strategies.items()):
        pts3 = sorted(points)
        offset = (len(heuristics) + n - (count - 1) / 2) * span * 0.012
        ax.errorbar(
            [x + offset for x, _, _ in pts3],
            [m for _, m, _ in pts3],
            yerr=[s for _, _, s in pts3],
            marker="o",
            capsize=4,
            linewidth=1.8,
            color=_STRATEGY_COLORS[n % len(_STRATEGY_COLORS)],
            label=f"{name} (mean +- std)",
        )
    _axes_text(ax, f"Final test {label} vs sparsity", "target sparsity", f"test {label}", higher_is_better, log_scale)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{x:.0%}" if abs(x * 100 - round(x * 100)) < 1e-6 else f"{x:.1%}" for x in xs])
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return fig


def allocation_heatmap(layer_names: Sequence[str], rows: dict[str, Sequence[float]], title: str) -> Figure:
    """Per-layer sparsity of each run (rows) as a heatmap; values written in the cells when they fit."""
    data = np.array([list(v) for v in rows.values()], dtype=float)
    if data.shape[1] != len(layer_names):
        raise ValueError(f"allocation rows have {data.shape[1]} values for {len(layer_names)} layers")
    width = min(max(6.0, 2.5 + 0.42 * len(layer_names)), 22.0)
    fig = new_figure(width, max(3.0, 1.2 + 0.32 * len(rows)))
    ax = fig.add_subplot()
    image = ax.imshow(data, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(layer_names)))
    ax.set_xticklabels(layer_names, rotation=55, ha="right", rotation_mode="anchor", fontsize="small")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(list(rows), fontsize="small")
    if len(layer_names) <= 12:
        for (i, j), value in np.ndenumerate(data):
            ax.text(
                j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value < 0.6 else "black"
            )
    fig.colorbar(image, ax=ax, label="sparsity (fraction pruned)")
    ax.set_title(title)
    return fig
