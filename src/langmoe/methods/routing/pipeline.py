"""`langmoe routing` as a library call: collect, compute metrics, draw, write one folder atomically."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from langmoe.errors import LangmoeError
from langmoe.io import write_json
from langmoe.methods.routing.analysis import routing_metrics
from langmoe.methods.routing.collect import RoutingCounts, collect_routing
from langmoe.methods.routing.compare import compare_routing, plot_comparison
from langmoe.methods.routing.plots import write_plots, write_report_html

__all__ = ["analyse_routing", "write_routing_folder", "Comparison"]


@dataclass
class Comparison:
    """Another model's routing counts (same languages) to show side by side, and the language to leave out."""

    counts: RoutingCounts
    focus: str | None = None
    names: tuple[str, str] = ("model", "other")


def write_routing_folder(rc: RoutingCounts, out: str | Path, alpha: float | None = None, n_shared: int = 2,
                         base: float | None = None, jsd_layers: list[int] | None = None, plots: bool = True,
                         pairs: Mapping[str, str] | None = None, compare: Comparison | None = None) -> dict:
    """Compute the metrics of `rc` first (bad settings fail before anything is written), then write
    routing_counts.json, routing_metrics.json, the PNGs and report.html into `out` (swapped in atomically);
    with child -> parent `pairs` also selected_experts.json (the official shape); with `compare` (another
    model's counts on the same languages) compare_counts.json, compare.json and compare.png."""
    from langmoe.methods.routing.metrics import DEFAULT_BASE
    from langmoe.models.moe_io import write_folder_atomically

    metrics = routing_metrics(rc, alpha=alpha, n_shared=n_shared, base=base or DEFAULT_BASE, jsd_layers=jsd_layers,
                              pairs=pairs)
    cmp = None
    if compare is not None:
        cmp = compare_routing(rc, compare.counts, compare.focus, base or DEFAULT_BASE, compare.names)
        metrics["compare"] = cmp

    def writer(tmp: Path) -> None:
        rc.save(tmp / "routing_counts.json")
        files = write_plots(metrics, tmp) if plots else []
        metrics["plots"] = files
        write_json(tmp / "routing_metrics.json", metrics)
        if cmp is not None:
            compare.counts.save(tmp / "compare_counts.json")
            write_json(tmp / "compare.json", cmp)
            if plots:
                plot_comparison(cmp, tmp / "compare.png")
        if "selected_experts" in metrics:
            write_json(tmp / "selected_experts.json", metrics["selected_experts"])
        if plots:
            write_report_html(metrics, files, tmp)

    write_folder_atomically(out, writer)
    return metrics


def analyse_routing(model, tokenizer, corpus, langs: Sequence[str], out: str | Path, *, split: str = "test",
                    tokens_per_lang: int = 20_000, soft: bool = False, window: int = 256, batch_size: int = 8,
                    alpha: float | None = None, n_shared: int = 2, base: float | None = None,
                    jsd_layers: list[int] | None = None, min_tokens: int | None = None,
                    pairs: Mapping[str, str] | None = None, compare_model=None, compare_focus: str | None = None,
                    names: tuple[str, str] = ("model", "other")) -> dict:
    """Collect `model`'s routing (and `compare_model`'s on the same text and settings) and write the folder."""
    cmp = None
    if compare_model is not None:
        other = collect_routing(compare_model, tokenizer, corpus, langs, split=split, tokens_per_lang=tokens_per_lang,
                                soft=soft, window=window, batch_size=batch_size, min_tokens=min_tokens)
        cmp = Comparison(other, compare_focus, names)
    rc = collect_routing(model, tokenizer, corpus, langs, split=split, tokens_per_lang=tokens_per_lang, soft=soft,
                         window=window, batch_size=batch_size, min_tokens=min_tokens)
    if cmp is not None and cmp.counts.tokens != rc.tokens:
        raise LangmoeError("the two models routed different numbers of tokens: give them the same tokenizer")
    return write_routing_folder(rc, out, alpha=alpha, n_shared=n_shared, base=base, jsd_layers=jsd_layers,
                                pairs=pairs, compare=cmp)
