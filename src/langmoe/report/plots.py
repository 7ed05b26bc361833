"""Figures of a DMoE run, as PNG files written atomically.

Each function takes plain data (lists, dicts, matrices; what the JSON results hold) and a destination, and returns
the path. Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through pyplot's global
state, so plotting is safe in libraries, tests and headless machines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from langmoe.errors import LangmoeError
from langmoe.io import write_with
from langmoe.optional import require

DPI = 110


def _figure(w: float, h: float, ncols: int = 1):
    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as PNG atomically (temp file + rename)."""
    path = Path(path)
    write_with(path, lambda p: fig.savefig(p, format="png", dpi=DPI), suffix=".png")
    return path


def plot_deviation(dev_ffn: Mapping[str, Sequence[float]], path: str | Path, epsilon: float | None = None,
                   selected: Sequence[int] | None = None, title: str = "FFN parameter deviation per layer") -> Path:
    """Left: FFN deviation per layer, one line per language (distinct colours, legend) and the mean (± std band).
    Right: the min-max normalised mean with the ε line and the selected (MoE) layers marked. Attention deviation
    is not drawn: on the same axis it squashes the language lines into a thin band (the report tables it)."""
    if not dev_ffn:
        raise LangmoeError("plot_deviation needs at least one language")
    langs = list(dev_ffn)
    dev = np.asarray([dev_ffn[x] for x in langs], dtype=np.float64)
    layers = np.arange(dev.shape[1])
    mean, std = dev.mean(0), dev.std(0)
    fig, (ax, ax2) = _figure(12, 4.4, ncols=2)
    colors = _colors(len(langs))
    for i, (x, row) in enumerate(zip(langs, dev, strict=True)):  # opaque, distinct colours: every line readable
        ax.plot(layers, row, lw=1.5, alpha=0.9, color=colors[i], marker="o", ms=3,
                label=x if len(langs) <= 20 else None)
    ax.plot(layers, mean, color="black", lw=2.6, label="mean (FFN)")
    ax.fill_between(layers, mean - std, mean + std, color="black", alpha=0.08, label="± 1 std")
    ax.set_xlabel("layer")
    ax.set_ylabel("FFN deviation ‖θ_x − θ‖_F")
    ax.set_title(title)
    ax.set_xticks(layers)
    ax.legend(fontsize=7, ncol=1 if len(langs) <= 10 else 2, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              title="language", title_fontsize=8)
    lo, hi = mean.min(), mean.max()
    norm = (mean - lo) / (hi - lo) if hi > lo else np.ones_like(mean)
    sel = set(selected or [])
    ax2.bar(layers, norm, color=["tab:red" if i in sel else "tab:blue" for i in layers])
    if epsilon is not None:
        ax2.axhline(epsilon, color="tab:red", ls="--", lw=1.2, label=f"ε = {epsilon:g}")
        ax2.legend(fontsize=8)
    ax2.set_xticks(layers)
    ax2.set_ylim(0, 1.08)
    ax2.set_xlabel("layer")
    ax2.set_ylabel("normalised mean deviation d̂_l")
    ax2.set_title("MoE layers (red)" if sel else "normalised deviation")
    return save_figure(fig, path)


def _colors(n: int) -> list:
    """n distinct colours (tab10, then tab20)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def order_by_groups(langs: Sequence[str], groups: Sequence[Sequence[str]] | None) -> list[str]:
    """Languages in group order (then any not in a group)."""
    if not groups:
        return list(langs)
    seen = [x for g in groups for x in g if x in langs]
    return seen + [x for x in langs if x not in seen]


def plot_similarity(langs: Sequence[str], similarity, path: str | Path,
                    groups: Sequence[Sequence[str]] | None = None, title: str = "Language similarity (cosine)"
                    ) -> Path:
    """Heatmap of S ordered by group, each group boxed."""
    langs = list(langs)
    s = np.asarray(similarity, dtype=np.float64)
    if s.shape != (len(langs), len(langs)):
        raise LangmoeError(f"similarity is {s.shape}, expected {len(langs)}x{len(langs)}")
    order = order_by_groups(langs, groups)
    idx = [langs.index(x) for x in order]
    m = s[np.ix_(idx, idx)]
    n = len(order)
    size = max(4.0, 0.38 * n + 2)
    fig, ax = _figure(size + 1, size)
    off = m[~np.eye(n, dtype=bool)]
    vmin = float(off.min()) if off.size else 0.0
    vmax = float(off.max()) if off.size else 1.0
    if vmax <= vmin:
        vmax = vmin + 1e-6
    im = ax.imshow(m, cmap="viridis", vmin=vmin, vmax=vmax)
    fig.colorbar(im, ax=ax, shrink=0.8, label="cosine (diagonal = 1, off scale)")
    ax.set_xticks(range(n), order, rotation=90, fontsize=8)
    ax.set_yticks(range(n), order, fontsize=8)
    ax.set_xlabel("language (ordered by group, groups boxed)")
    ax.set_ylabel("language")
    if n <= 12:
        for i in range(n):
            for j in range(n):
                if i != j:
                    light = (m[i, j] - vmin) / (vmax - vmin) > 0.6  # viridis is light at the top
                    cell = f"{m[i, j]:.2f}".replace("-0.00", "0.00")
                    ax.text(j, i, cell, ha="center", va="center", fontsize=7,
                            color="black" if light else "white")
    start = 0
    for g in groups or []:
        k = len([x for x in g if x in langs])
        if k:
            ax.add_patch(Rectangle((start - 0.5, start - 0.5), k, k, fill=False, ec="red", lw=2))
        start += k
    ax.set_title(title)
    return save_figure(fig, path)


def plot_dendrogram(langs: Sequence[str], similarity, path: str | Path,
                    title: str = "Average-linkage dendrogram on D = 1 − S",
                    groups: Sequence[Sequence[str]] | None = None) -> Path:
    """Hierarchical clustering (scipy, average linkage) of the distance D = 1 − S; with `groups`, each leaf label
    is coloured by its group (the run's grouping, to compare with the tree)."""

    hierarchy, distance = require("scipy.cluster.hierarchy"), require("scipy.spatial.distance")
    dendrogram, linkage, squareform = hierarchy.dendrogram, hierarchy.linkage, distance.squareform

    langs = list(langs)
    if len(langs) < 2:
        raise LangmoeError("a dendrogram needs at least 2 languages")
    s = np.asarray(similarity, dtype=np.float64)
    d = 1.0 - (s + s.T) / 2.0
    np.fill_diagonal(d, 0.0)
    d = np.clip(d, 0.0, None)
    z = linkage(squareform(d, checks=False), method="average")
    fig, ax = _figure(max(5.0, 0.35 * len(langs) + 2), 4)
    dendrogram(z, labels=langs, ax=ax, leaf_rotation=90, color_threshold=None)
    # The merge heights often sit in a narrow band (0.89-1.0): scale the axis to them, not to 0..max.
    lo, hi = float(z[:, 2].min()), float(z[:, 2].max())
    span = hi - lo if hi > lo else max(hi, 1e-3) * 0.1
    bottom = max(0.0, lo - 0.35 * span)
    ax.set_ylim(bottom, hi + 0.1 * span)
    ax.set_xlabel("language" + (" (coloured by the run's group)" if groups else ""))
    ax.set_ylabel("distance 1 − cos" + (f" (axis from {bottom:.3g})" if bottom > 0 else ""))
    if groups:
        colors = _colors(len(groups))
        group_of = {x: k for k, g in enumerate(groups) for x in g}
        for label in ax.get_xticklabels():
            if label.get_text() in group_of:
                label.set_color(colors[group_of[label.get_text()]])
    ax.set_title(title)
    return save_figure(fig, path)


def plot_per_language(values: Mapping[str, Mapping[str, float]], path: str | Path, metric: str = "perplexity",
                      log_scale: bool | None = None, title: str | None = None) -> Path:
    """Grouped bars: one group per language, one bar per system (`values[system][lang]`)."""
    systems = list(values)
    if not systems:
        raise LangmoeError("plot_per_language needs at least one system")
    langs: list[str] = []
    for sys_vals in values.values():
        langs += [x for x in sys_vals if x not in langs]
    x = np.arange(len(langs))
    width = 0.8 / len(systems)
    fig, ax = _figure(max(6.0, 0.6 * len(langs) * max(1, len(systems) / 3) + 2), 4)
    for i, name in enumerate(systems):
        ys = [values[name].get(lang, np.nan) for lang in langs]
        ax.bar(x - 0.4 + width * (i + 0.5), ys, width, label=name)
    ax.set_xticks(x, langs)
    ax.set_xlabel("language")
    all_vals = [v for s in values.values() for v in s.values() if v is not None and np.isfinite(v) and v > 0]
    if log_scale is None:
        log_scale = bool(all_vals) and max(all_vals) / min(all_vals) > 20
    if log_scale:
        ax.set_yscale("log")
    ax.set_ylabel(metric + (" (log scale)" if log_scale else ""))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never covers bars
    ax.set_title(title or f"Held-out {metric} per language")
    return save_figure(fig, path)


def plot_perplexity(ppl: Mapping[str, Mapping[str, float]], path: str | Path, title: str | None = None) -> Path:
    """Per-language perplexity of every system (grouped bars)."""
    return plot_per_language(ppl, path, metric="perplexity", title=title)


def plot_routing_accuracy(accuracy: Mapping[str, Mapping[str, float]] | Mapping[str, float], path: str | Path,
                          title: str = "Routing accuracy per MoE layer (top-1 = group expert)") -> Path:
    """Accuracy per MoE layer; `accuracy[layer]` or `accuracy[system][layer]` (one line per system)."""
    if not accuracy:
        raise LangmoeError("plot_routing_accuracy needs at least one layer")
    first = next(iter(accuracy.values()))
    series = accuracy if isinstance(first, Mapping) else {"": accuracy}
    from matplotlib.ticker import PercentFormatter

    layers_all = sorted({int(k) for acc in series.values() for k in acc})
    fig, ax = _figure(6.5, 3.8)
    if len(layers_all) == 1:  # one MoE layer: a bar per system, never a one-point line
        names = list(series)
        vals = [100 * float(next(iter(series[n].values()))) for n in names]
        bars = ax.bar(range(len(names)), vals, color=_colors(len(names)))
        ax.bar_label(bars, labels=[f"{v:.1f}%" for v in vals], fontsize=8)
        ax.set_xticks(range(len(names)), [n or "model" for n in names])
        ax.set_xlabel(f"system (MoE layer {layers_all[0]})")
    else:
        for name, acc in series.items():
            items = sorted((int(k), 100 * float(v)) for k, v in acc.items())
            ax.plot([k for k, _ in items], [v for _, v in items], marker="o", label=name or None)
        ax.set_xticks(layers_all)
        ax.set_xlabel("layer")
        if len(series) > 1 or next(iter(series)):
            ax.legend(fontsize=8)
    ax.set_ylim(0, 105)
    ax.yaxis.set_major_formatter(PercentFormatter(100, decimals=0))
    ax.set_ylabel("routing accuracy")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_routing_heatmap(counts: Mapping[str, Sequence[float]], path: str | Path, title: str = "Routing",
                         expert_labels: Sequence[str] | None = None) -> Path:
    """Languages × experts: each row is a language's share of tokens per expert (rows sum to 1)."""
    langs = list(counts)
    if not langs:
        raise LangmoeError("plot_routing_heatmap needs at least one language")
    m = np.asarray([counts[x] for x in langs], dtype=np.float64)
    m = m / np.clip(m.sum(1, keepdims=True), 1e-12, None)
    n_exp = m.shape[1]
    fig, ax = _figure(max(4.0, 0.5 * n_exp + 2.5), max(3.0, 0.35 * len(langs) + 1.5))
    im = ax.imshow(m, cmap="magma", vmin=0.0, vmax=1.0, aspect="auto")
    fig.colorbar(im, ax=ax, label="share of tokens")
    ax.set_xticks(range(n_exp), list(expert_labels) if expert_labels else [str(i) for i in range(n_exp)],
                  rotation=30 if expert_labels else 0, ha="right" if expert_labels else "center")
    ax.set_yticks(range(len(langs)), langs)
    ax.set_xlabel("expert (its language group)" if expert_labels else "expert")
    ax.set_ylabel("language")
    if len(langs) * n_exp <= 200:
        for i in range(len(langs)):
            for j in range(n_exp):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if m[i, j] > 0.5 else "white")
    ax.set_title(title)
    return save_figure(fig, path)
