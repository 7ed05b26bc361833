"""Pictures of the routing metrics (matplotlib, Agg) and a standalone report.html that shows them.

Kept inside the method folder: `report/` can later embed the PNGs (the file names are listed in
`routing_metrics.json["plots"]`) without this module knowing about the run report.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

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

    for layer, mat in metrics.get("jsd", {}).items():
        m = np.asarray(mat)
        fig, ax = plt.subplots(figsize=(1.2 + 0.45 * len(langs), 1.0 + 0.4 * len(langs)))
        im = ax.imshow(m, cmap="GnBu_r", vmin=0)
        ax.set_xticks(range(len(langs)), langs, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(langs)), langs, fontsize=7)
        if len(langs) <= 12:
            for i in range(len(langs)):
                for j in range(len(langs)):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6)
        fig.colorbar(im, ax=ax, shrink=0.8, label=f"JSD (log base {metrics['log_base']})")
        ax.set_title(f"JSD between languages, layer {layer}", fontsize=9)
        files.append(_save(fig, out / f"jsd_layer{layer}.png"))

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

    ov = metrics.get("lexical_overlap")
    if ov is not None:
        last = str(layers[-1])
        jsd_last = metrics["jsd"].get(last)
        if jsd_last is not None:
            o, j = np.asarray(ov), np.asarray(jsd_last)
            iu = np.triu_indices(len(langs), 1)
            fig, ax = plt.subplots(figsize=(5, 4))
            ax.scatter(o[iu], j[iu], s=18)
            if len(langs) <= 10:
                for a_i, b_i in zip(*iu, strict=True):
                    ax.annotate(f"{langs[a_i]}-{langs[b_i]}", (o[a_i, b_i], j[a_i, b_i]), fontsize=6)
            c = metrics["overlap_vs_last_layer_jsd"]
            r = "n/a" if c["pearson_r"] is None else f"{c['pearson_r']:.2f} (p={c['pearson_p']:.2g})"
            ax.set_title(f"Token overlap vs JSD, layer {last}: Pearson r = {r}", fontsize=8)
            ax.set_xlabel("Jaccard overlap of token-id sets")
            ax.set_ylabel("JSD")
            ax.grid(alpha=0.4, ls="--")
            files.append(_save(fig, out / "overlap_vs_jsd.png"))
    return files


def write_report_html(metrics: dict, files: list[str], out_dir: str | Path) -> Path:
    """A self-contained page (PNG links relative to the folder) with the summary numbers and the plots."""
    esc = html.escape
    rows = "".join(
        f"<tr><td>{layer}</td><td>{s:.3f}</td><td>{j:.3f}</td></tr>"
        for layer, s, j in zip(metrics["layers"], metrics["specialisation"], metrics["mean_pairwise_jsd"], strict=True)
    )
    corr = metrics.get("overlap_vs_last_layer_jsd")
    corr_html = f"<p>Overlap vs last-layer JSD: <code>{esc(str(corr))}</code></p>" if corr else ""
    warn = "".join(f"<li>{esc(w)}</li>" for w in metrics.get("warnings", []))
    imgs = "".join(f'<figure><img src="{esc(f)}" alt="{esc(f)}"><figcaption>{esc(f)}</figcaption></figure>'
                   for f in files)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Routing analysis</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}img{{max-width:100%}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px}}</style></head><body>
<h1>Routing analysis</h1>
<p>Languages: {esc(', '.join(metrics['langs']))}; counts: {esc(metrics['kind'])}; log base {esc(str(metrics['log_base']))};
α = {metrics['alpha']:.4g}</p>
{'<ul>' + warn + '</ul>' if warn else ''}
<table><tr><th>layer</th><th>specialisation</th><th>mean pairwise JSD</th></tr>{rows}</table>
{corr_html}
{imgs}
</body></html>
"""
    path = Path(out_dir) / "report.html"
    write_text(path, page)
    return path
