"""Figures for a job's report. Plain ``Figure`` objects on the Agg canvas: no pyplot, no global state."""

from __future__ import annotations

import math
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_BASELINE_STYLES = ["--", "-.", ":", (0, (5, 1, 1, 1, 1, 1))]
_BASELINE_MARKERS = ["s", "^", "D", "v", "P", "X", "<", ">"]
# Baseline colours avoid blue (evaluations) and red (the search's best).
_BASELINE_COLORS = [
    "tab:green",
    "tab:purple",
    "tab:orange",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
    "tab:gray",
]


def _color(n: int) -> str:
    return _BASELINE_COLORS[n % len(_BASELINE_COLORS)]


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches on its own Agg canvas (every report's plots start here)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def running_best(values: Sequence[float], higher_is_better: bool) -> list[float]:
    """The best finite value after each evaluation (NaN until the first success)."""
    best, current = [], math.nan
    for v in values:
        if math.isfinite(v) and (math.isnan(current) or (v > current if higher_is_better else v < current)):
            current = float(v)
        best.append(current)
    return best


def best_so_far(
    values: Sequence[float],
    higher_is_better: bool,
    baselines: dict[str, float] | None = None,
    label: str = "objective",
    tokens: Sequence[float] | None = None,
) -> Figure:
    """Objective per evaluation (dots), best so far (step line), baselines (horizontal lines).

    Non-finite values (failed evaluations) are left out of both the dots and the best-so-far line.
    ``tokens``: the validation tokens (or samples) spent up to each evaluation, the x axis where given,
    so searches scoring candidates on different amounts of data compare by what they spent.
    """
    if tokens is not None and len(tokens) != len(values):
        raise ValueError(f"{len(tokens)} token counts for {len(values)} evaluations")
    fig = new_figure(8, 4.5)
    ax = fig.add_subplot()
    steps = list(tokens) if tokens is not None else list(range(1, len(values) + 1))
    ok = [(i, float(v)) for i, v in zip(steps, values, strict=True) if math.isfinite(v)]
    if ok:
        ax.scatter([i for i, _ in ok], [v for _, v in ok], s=14, alpha=0.45, color="tab:blue", label="evaluation")
        best = running_best(values, higher_is_better)
        ax.step(steps, best, where="post", color="tab:red", linewidth=2, label=f"best so far ({best[-1]:.4g})")
    else:
        ax.text(0.5, 0.5, "no successful evaluations", ha="center", va="center", transform=ax.transAxes)
    for n, (name, value) in enumerate((baselines or {}).items()):
        ax.axhline(
            value,
            color=_color(n),
            linestyle=_BASELINE_STYLES[n % len(_BASELINE_STYLES)],
            linewidth=1.4,
            label=f"{name} ({value:.4g})",
        )
    direction = "higher" if higher_is_better else "lower"
    ax.set_title(f"{label} per evaluation ({direction} is better)")
    ax.set_xlabel("validation tokens spent (cumulative)" if tokens is not None else "evaluation")
    ax.set_ylabel(label)
    if steps and tokens is None:
        ax.set_xlim(0.5, len(steps) + 0.5)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    return fig


def pareto_front(
    points: Sequence[tuple[float, float]],
    front: Sequence[tuple[float, float]],
    xlabel: str,
    ylabel: str,
    baselines: dict[str, tuple[float, float]] | None = None,
) -> Figure:
    """All evaluated points, the non-dominated front (highlighted and joined) and labelled baselines."""
    fig = new_figure(7, 5.5)
    ax = fig.add_subplot()
    if points:
        xs, ys = zip(*points, strict=True)
        ax.scatter(xs, ys, s=14, alpha=0.35, color="tab:gray", label=f"evaluated ({len(points)})")
    if front:
        fx, fy = zip(*sorted(front), strict=True)
        ax.plot(fx, fy, "-o", color="tab:red", markersize=6, linewidth=1.6, label=f"Pareto front ({len(front)})")
    for n, (name, (x, y)) in enumerate((baselines or {}).items()):
        ax.scatter(
            [x],
            [y],
            s=70,
            marker=_BASELINE_MARKERS[n % len(_BASELINE_MARKERS)],
            color=_color(n),
            edgecolors="black",
            linewidths=0.6,
            zorder=3,
            label=name,
        )
        ax.annotate(name, (x, y), xytext=(7, 6 if n % 2 == 0 else -12), textcoords="offset points", fontsize="small")
    ax.set_title(f"Pareto front: {ylabel} vs {xlabel}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # below the axes: a dense cloud leaves no free corner
        fig.legend(loc="outside lower center", ncols=4, fontsize="small", frameon=False)
    return fig


def layer_sparsity(
    layer_names: Sequence[str],
    best: Sequence[float],
    baselines: dict[str, Sequence[float]] | None = None,
) -> Figure:
    """Grouped bars: sparsity per layer for the best candidate and each baseline allocation."""
    series = {"best": list(best), **{name: list(v) for name, v in (baselines or {}).items()}}
    for name, values in series.items():
        if len(values) != len(layer_names):
            raise ValueError(f"{name!r} has {len(values)} values for {len(layer_names)} layers")
    n_layers, n_series = len(layer_names), len(series)
    fig = new_figure(min(max(8.0, 2.0 + n_layers * (0.25 + 0.1 * n_series)), 20.0), 5.5)
    ax = fig.add_subplot()
    width = 0.84 / n_series
    for k, (name, values) in enumerate(series.items()):
        offsets = [i + (k - (n_series - 1) / 2) * width for i in range(n_layers)]
        mean = sum(values) / n_layers if n_layers else 0.0
        ax.bar(
            offsets,
            values,
            width=width,
            color=_color(k - 1) if k else "tab:red",
            edgecolor="black" if k == 0 else "none",
            linewidth=0.5,
            label=f"{name} (layer mean {mean:.2f})",
        )
    ax.set_xticks(range(n_layers))
    ax.set_xticklabels(layer_names, rotation=55, ha="right", rotation_mode="anchor", fontsize="small")
    ax.set_xlim(-0.6, n_layers - 0.4)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("sparsity (fraction of weights pruned)")
    ax.set_xlabel("layer")
    ax.set_title("Per-layer sparsity: best candidate vs baselines" if baselines else "Per-layer sparsity")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return fig
