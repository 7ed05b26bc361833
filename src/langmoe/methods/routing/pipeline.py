"""`langmoe routing` as a library call: collect, compute metrics, draw, write one folder atomically."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from langmoe.io import write_json
from langmoe.methods.routing.analysis import routing_metrics
from langmoe.methods.routing.collect import RoutingCounts, collect_routing
from langmoe.methods.routing.plots import write_plots, write_report_html

__all__ = ["analyse_routing", "write_routing_folder"]


def write_routing_folder(rc: RoutingCounts, out: str | Path, alpha: float | None = None, n_shared: int = 2,
                         base: float | None = None, jsd_layers: list[int] | None = None, plots: bool = True,
                         pairs: Mapping[str, str] | None = None) -> dict:
    """Compute the metrics of `rc` first (bad settings fail before anything is written), then write
    routing_counts.json, routing_metrics.json, the PNGs and report.html into `out` (swapped in atomically);
    with child -> parent `pairs` also selected_experts.json (the official shape)."""
    from langmoe.methods.routing.metrics import DEFAULT_BASE
    from langmoe.models.moe_io import write_folder_atomically

    metrics = routing_metrics(rc, alpha=alpha, n_shared=n_shared, base=base or DEFAULT_BASE, jsd_layers=jsd_layers,
                              pairs=pairs)

    def writer(tmp: Path) -> None:
        rc.save(tmp / "routing_counts.json")
        files = write_plots(metrics, tmp) if plots else []
        metrics["plots"] = files
        write_json(tmp / "routing_metrics.json", metrics)
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
                    pairs: Mapping[str, str] | None = None) -> dict:
    rc = collect_routing(model, tokenizer, corpus, langs, split=split, tokens_per_lang=tokens_per_lang, soft=soft,
                         window=window, batch_size=batch_size, min_tokens=min_tokens)
    return write_routing_folder(rc, out, alpha=alpha, n_shared=n_shared, base=base, jsd_layers=jsd_layers,
                                pairs=pairs)
