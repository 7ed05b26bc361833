"""Pictures of the routing metrics (matplotlib, Agg) and a standalone report.html that shows them.

Kept inside the method folder: `report/` can later embed the PNGs (the file names are listed in
`routing_metrics.json["plots"]`) without this module knowing about the run report.
"""

from __future__ import annotations

import html
import textwrap
from pathlib import Path

import numpy as np

from langmoe.data.languages import LANGUAGES
from langmoe.io import write_text

__all__ = ["write_plots", "write_report_html"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path.name


def write_plots(metrics: dict, out_dir: str | Path) -> list[str]:
    """Specialisation curve, entropy curves, JSD heatmaps, share heatmaps, overlap-vs-JSD scatter; returns the
    file names."""
    plt = _plt()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layers, langs = metrics["layers"], metrics["langs"]
    files: list[str] = []

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(layers, metrics["specialisation"], marker="o", label="specialisation (IG/H(L))")
    if len(langs) > 1:
        ax.plot(layers, metrics["mean_pairwise_jsd"], marker="s", ls="--", label="mean pairwise JSD")
    ax.set_xlabel("decoder layer (MoE layers)")
    ax.set_xticks(layers)
    ax.set_ylabel("score")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.4, ls="--")
    ax.legend(fontsize=8)
    ax.set_title("Language specialisation per MoE layer")
    files.append(_save(fig, out / "specialisation.png"))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for lang in langs:
        ax.plot(layers, metrics["entropy"][lang], marker=".", lw=1, label=lang)
    ax.plot(layers, metrics["entropy_max"], ls=":", color="k", label="uniform")
    ax.set_xlabel("decoder layer (MoE layers)")
    ax.set_xticks(layers)
    ax.set_ylabel(f"routing entropy (log base {metrics['log_base']})")
    ax.grid(alpha=0.4, ls="--")
    ax.legend(fontsize=6, ncol=max(1, len(langs) // 12), loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("Routing entropy per language")
    files.append(_save(fig, out / "entropy.png"))

    files += _jsd_heatmaps(plt, metrics, out)

    n = len(layers)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    E = max(metrics["num_experts"])
    fig, axes = plt.subplots(rows, cols, figsize=(0.3 * E * cols + 2, 0.35 * len(langs) * rows + 1.2), squeeze=False)
    for k, layer in enumerate(layers):
        ax = axes[k // cols][k % cols]
        a = np.asarray([metrics["shares"][lang][k] for lang in langs])
        ax.imshow(a, cmap="viridis", aspect="auto", vmin=0)
        ax.set_title(f"layer {layer}", fontsize=8)
        ax.set_yticks(range(len(langs)), langs, fontsize=6)
        ax.set_xlabel("expert", fontsize=7)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle("Expert share a_l(e) per language", fontsize=9)
    files.append(_save(fig, out / "expert_shares.png"))

    if metrics.get("lexical_overlap") is not None and str(layers[-1]) in metrics.get("jsd", {}):
        files.append(_overlap_scatter(plt, metrics, out))
    return files


def jsd_colour_max(metrics: dict) -> float:
    """The top of the one colour scale shared by every layer's JSD heatmap."""
    return max((float(np.max(m)) for m in metrics.get("jsd", {}).values()), default=0.0) or 1.0


def _jsd_heatmaps(plt, metrics: dict, out: Path) -> list[str]:
    """One heatmap per chosen layer, all on one colour scale (0 .. the largest JSD of any of them)."""
    langs, files = metrics["langs"], []
    mats = {layer: np.asarray(m) for layer, m in metrics.get("jsd", {}).items()}
    vmax = jsd_colour_max(metrics)
    for layer, m in mats.items():
        fig, ax = plt.subplots(figsize=(1.2 + 0.45 * len(langs), 1.0 + 0.4 * len(langs)))
        im = ax.imshow(m, cmap="GnBu_r", vmin=0, vmax=vmax)
        ax.set_xticks(range(len(langs)), langs, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(langs)), langs, fontsize=7)
        if len(langs) <= 12:
            for i in range(len(langs)):
                for j in range(len(langs)):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6)
        fig.colorbar(im, ax=ax, shrink=0.8, label=f"JSD (log base {metrics['log_base']}; same scale for all layers)")
        ax.set_title(f"JSD between languages, layer {layer}", fontsize=9)
        files.append(_save(fig, out / f"jsd_layer{layer}.png"))
    return files


def pair_type(a: str, b: str) -> str:
    """same genus / same script / other: how two languages are related (for the overlap scatter)."""
    la, lb = LANGUAGES.get(a), LANGUAGES.get(b)
    if la is None or lb is None:
        return "other"
    if la.genus == lb.genus:
        return "same family"
    return "same script" if la.script == lb.script else "other"


def _overlap_scatter(plt, metrics: dict, out: Path) -> str:
    """Lexical overlap vs last-layer JSD per language pair, marked by pair type, with the least-squares line and
    the correlation sentence (Mantel test over languages) as the caption."""
    langs, last = metrics["langs"], str(metrics["layers"][-1])
    o, j = np.asarray(metrics["lexical_overlap"]), np.asarray(metrics["jsd"][last])
    iu = np.triu_indices(len(langs), 1)
    kinds = [pair_type(langs[a], langs[b]) for a, b in zip(*iu, strict=True)]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for kind, marker in (("same family", "o"), ("same script", "^"), ("other", "x")):
        sel = [k == kind for k in kinds]
        if any(sel):
            ax.scatter(o[iu][sel], j[iu][sel], s=20, marker=marker, label=kind)
    if len(kinds) >= 2 and np.ptp(o[iu]) > 0:
        slope, icpt = np.polyfit(o[iu], j[iu], 1)
        xs = np.linspace(o[iu].min(), o[iu].max(), 2)
        ax.plot(xs, slope * xs + icpt, "k--", lw=1, label=f"fit: JSD = {slope:.3f}·overlap + {icpt:.3f}")
    if len(langs) <= 10:
        for a_i, b_i in zip(*iu, strict=True):
            ax.annotate(f"{langs[a_i]}-{langs[b_i]}", (o[a_i, b_i], j[a_i, b_i]), fontsize=6)
    sentence = (metrics.get("overlap_vs_last_layer_jsd") or {}).get("sentence", "")
    ax.set_title("\n".join(textwrap.wrap(sentence, 80)) or f"Token overlap vs JSD, layer {last}", fontsize=7)
    ax.set_xlabel("Jaccard overlap of token-id sets")
    ax.set_ylabel(f"JSD at layer {last}")
    ax.grid(alpha=0.4, ls="--")
    ax.legend(fontsize=7)
    return _save(fig, out / "overlap_vs_jsd.png")


def _table(head: list[str], rows: list[list]) -> str:
    esc = html.escape
    th = "".join(f"<th>{esc(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _fmt_ci(metrics: dict, key: str, j: int) -> str:
    iv = (metrics.get("intervals") or {}).get(key)
    return f" [{iv[j][0]:.3f}, {iv[j][1]:.3f}]" if iv else ""


def _experts_html(metrics: dict) -> str:
    """Specific experts per layer and language (over all routed languages and over the one-per-family pool that
    `adapt` selects from) and the shared experts per layer."""
    langs, parts = metrics["langs"], []
    for key, title in (("specific_experts", "Language-specific experts (all routed languages)"),
                       ("pool_specific_experts", "Language-specific experts over the reference pool "
                                                 f"({', '.join(metrics.get('reference_pool', []))})")):
        spec = metrics.get(key)
        if spec:
            cols = [x for x in langs if any(x in v for v in spec.values())]
            rows = [[layer] + [", ".join(map(str, v.get(x, []))) or "–" for x in cols] for layer, v in spec.items()]
            parts.append(f"<h2>{html.escape(title)}</h2><p>α = {metrics['alpha']:.4g}</p>"
                         + _table(["layer", *cols], rows))
    shared = metrics.get("shared_experts") or {}
    parts.append("<h2>Shared experts (highest mean share)</h2>"
                 + _table(["layer", "experts"], [[k, ", ".join(map(str, v))] for k, v in shared.items()]))
    return "".join(parts)


def write_report_html(metrics: dict, files: list[str], out_dir: str | Path) -> Path:
    """A self-contained page (PNG links relative to the folder) with the summary numbers, the intervals, the
    tokens per language, the specific and shared experts, the correlation sentence and the plots."""
    esc = html.escape
    layers_rows = [[layer, f"{s:.3f}{_fmt_ci(metrics, 'specialisation', j)}",
                    f"{d:.3f}{_fmt_ci(metrics, 'mean_pairwise_jsd', j)}"]
                   for j, (layer, s, d) in enumerate(zip(metrics["layers"], metrics["specialisation"],
                                                         metrics["mean_pairwise_jsd"], strict=True))]
    corr = metrics.get("overlap_vs_last_layer_jsd") or {}
    corr_html = f"<p>{esc(corr['sentence'])}</p>" if corr.get("sentence") else ""
    warn = "".join(f"<li>{esc(w)}</li>" for w in metrics.get("warnings", []))
    tokens = _table(["language", "tokens routed"], [[k, v] for k, v in metrics.get("tokens", {}).items()])
    imgs = "".join(f'<figure><img src="{esc(f)}" alt="{esc(f)}"><figcaption>{esc(f)}</figcaption></figure>'
                   for f in files)
    iv = metrics.get("intervals")
    iv_note = (f"<p>[..]: {int(100 * iv['level'])}% bootstrap intervals over blocks of text ({iv['n_boot']} "
               f"resamples, seed {iv['seed']}).</p>") if iv else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Routing analysis</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}img{{max-width:100%}}
table{{border-collapse:collapse;margin:6px 0}}td,th{{border:1px solid #ccc;padding:2px 8px}}</style></head><body>
<h1>Routing analysis</h1>
<p>Languages: {esc(', '.join(metrics['langs']))}; counts: {esc(metrics['kind'])}; log base {esc(str(metrics['log_base']))};
α = {metrics['alpha']:.4g}</p>
{'<ul>' + warn + '</ul>' if warn else ''}
{_table(["layer", "specialisation", "mean pairwise JSD"], layers_rows)}
{iv_note}
{corr_html}
<h2>Tokens per language</h2>{tokens}
{_experts_html(metrics)}
{imgs}
</body></html>
"""
    path = Path(out_dir) / "report.html"
    write_text(path, page)
    return path
