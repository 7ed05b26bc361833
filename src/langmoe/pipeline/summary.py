"""Summary numbers of a run: per-system means and the one-row-per-system table of `summary.json`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

SUMMARY_NOTE = ("all systems trained for the same number of optimizer steps with the same micro-batch size and "
                "block length: equal token budget")


def mean_metrics(per_lang: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Unweighted means over languages of ppl and bits per byte, plus the geometric-mean ppl."""
    ppl = [float(v["ppl"]) for v in per_lang.values()]
    bpb = [float(v["bits_per_byte"]) for v in per_lang.values()]
    return {"ppl": sum(ppl) / len(ppl), "bits_per_byte": sum(bpb) / len(bpb),
            "geo_ppl": math.exp(sum(math.log(p) for p in ppl) / len(ppl))}


def summary_row(result: Mapping[str, Any]) -> dict[str, Any]:
    """The summary row of one `eval/<system>.json` result."""
    return {"mean_ppl": result["mean"]["ppl"], "mean_bpb": result["mean"]["bits_per_byte"],
            "ppl": {k: v["ppl"] for k, v in result["langs"].items()},
            "bpb": {k: v["bits_per_byte"] for k, v in result["langs"].items()},
            "params_total": result["params"]["total"], "params_active": result["params"]["active"],
            "tokens_seen": result["tokens_seen"]}
