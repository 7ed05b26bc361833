"""Where the expansion gate sends new-language tokens (issue 22's diagnosis): per gate mode, on held-out blocks.

    python benchmarks/expansion_gate_probe.py --model RUN/seed0/moe_lpr --old en,zh,es --new hu,tr,uk
        [--modes prefix sum] [--blocks 48] [--out benchmarks/results/X.md]

Loads an expansion's stage-2 model (a gated one's gates are removed), fits and calibrates the gates in each mode as
`--protect gate` does (intrusion bound 1%, training blocks), then on `--blocks` held-out test blocks per language:
per layer the share of each language's tokens the gate sends to expert 0 alone (class 0), and per block position
(0-7, 8-31, 32-63, 64-127) the share of each language's tokens sent to expert 0 alone in at least one layer.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _script import publish  # noqa: E402

from langmoe.data.corpus import open_corpus  # noqa: E402
from langmoe.data.packing import pack_corpus  # noqa: E402
from langmoe.methods.expansion.protect import gate_classes, protect_with_gate, strip_gates  # noqa: E402
from langmoe.models.base import load_tokenizer  # noqa: E402
from langmoe.models.moe import moe_blocks  # noqa: E402
from langmoe.models.routing import iter_routing  # noqa: E402
from langmoe.pipeline.models import load_moe  # noqa: E402

BUCKETS = ((0, 8), (8, 32), (32, 64), (64, 128))


@torch.no_grad()
def shares(model, test, codes: list[str]) -> dict[str, dict[str, float]]:
    """`{"L<layer>": {lang: class-0 share}, "<lo>-<hi>": {lang: share with class 0 in some layer}}`."""
    count: dict[tuple[str, str], list[int]] = {}

    def add(key, lang, hit, mask):
        c = count.setdefault((key, lang), [0, 0])
        c[0] += int(hit[mask].sum())
        c[1] += int(mask.sum())

    for batch, valid, outs in iter_routing(model, test, 8):
        lang = batch["lang_ids"].reshape(-1)
        pos = torch.arange(batch["input_ids"].shape[1]).repeat(batch["input_ids"].shape[0])
        some = torch.zeros_like(valid)
        for o in outs:
            zero = o.override_logits_of("expansion_gate").argmax(-1) == 0
            some |= zero
            for li in lang.unique().tolist():
                add(f"L{o.layer}", codes[li], zero, valid & (lang == li))
        for li in lang.unique().tolist():
            for lo, hi in BUCKETS:
                add(f"{lo}-{hi - 1}", codes[li], some, valid & (lang == li) & (pos >= lo) & (pos < hi))
    out: dict[str, dict[str, float]] = {}
    for (key, lang), (hit, n) in count.items():
        out.setdefault(key, {})[lang] = hit / n if n else float("nan")
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--old", default="en,zh,es")
    ap.add_argument("--new", default="hu,tr,uk")
    ap.add_argument("--modes", nargs="+", default=["prefix", "sum"], choices=("prefix", "sum", "token"))
    ap.add_argument("--blocks", type=int, default=48, help="held-out blocks per language")
    ap.add_argument("--block-len", type=int, default=128)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    old, new = a.old.split(","), a.new.split(",")
    tok, corpus = load_tokenizer(a.model), open_corpus("builtin")

    def blocks(langs, split="train", max_tokens_per_lang=None):
        return pack_corpus(corpus, tok, langs, split, a.block_len, max_tokens_per_lang=max_tokens_per_lang,
                           progress="off")

    run = types.SimpleNamespace(blocks=blocks, recipe=types.SimpleNamespace(
        data=types.SimpleNamespace(block_len=a.block_len)))
    test = blocks(old + new, "test", a.block_len * a.blocks)
    model = load_moe(a.model)
    strip_gates(model)
    res = {}
    for mode in a.modes:
        protect_with_gate(model, run, gate_classes(old, {}, new, old), old, new,
                          {b.layer_idx: [1] for b in moe_blocks(model)}, 0.01, mode=mode)
        res[mode] = shares(model, test, list(test.index.codes))
        strip_gates(model)
    lines = ["# Where the expansion gate sends held-out tokens", "", "    python benchmarks/expansion_gate_probe.py "
             + " ".join(argv), "", "Share of each language's held-out tokens sent to expert 0 alone: per layer (L*), "
             "and per block position in at least one layer.", ""]
    langs = old + new
    lines += ["| mode | where | " + " | ".join(langs) + " |", "| --- | --- |" + " --- |" * len(langs)]
    for mode, r in res.items():
        for key, v in r.items():
            lines.append(f"| {mode} | {key} | " + " | ".join(f"{v.get(x, float('nan')):.3f}" for x in langs) + " |")
    text = "\n".join(lines) + "\n"
    publish(text, res, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
