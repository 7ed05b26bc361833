"""MoE block forward+backward time relative to the dense FFN on the same tokens, and against transformers' block.

    python benchmarks/moe_block.py [--tokens 2048 --hidden 256 --inter 1024 --repeats 15 --threads 1]
        [--experts 2 4 8 16] [--out benchmarks/results/moe_block.md]

Everything runs in one process. Per repeat, every variant of an expert count is timed once, in an order rotated
each repeat, so machine noise (a shared CPU) hits all variants alike; the table reports medians. Variants:
Gradients are reset to None before every timed step (as a trainer's `zero_grad(set_to_none=True)`), so fused
expert weights do not pay for accumulating into an old full-size gradient. Variants: dense FFN (LlamaMLP), ours learned top-1/top-2 (auto dispatch, and loop / grouped_mm forced), ours label routing
with one label per micro-batch (the DMoE stage-1 case) and with mixed labels, and transformers'
`Qwen3MoeSparseMoeBlock` (norm_topk_prob=True) with its `grouped_mm` and `eager` experts implementations.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from langmoe.models.moe import build_moe_block  # noqa: E402
from langmoe.models.routing import routing  # noqa: E402


def build(D, Fi, E, k, seed=0):
    import transformers as tf
    from transformers.models.llama.modeling_llama import LlamaMLP
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

    torch.manual_seed(seed)
    dense = LlamaMLP(tf.LlamaConfig(hidden_size=D, intermediate_size=Fi))
    ours = {}
    for dispatch in ("auto", "loop", "grouped"):
        b = build_moe_block(D, Fi, E, k, dispatch=dispatch)
        with torch.no_grad():
            b.experts.gate_up_proj.normal_(0, 0.02)
            b.experts.down_proj.normal_(0, 0.02)
        ours[dispatch] = b
    hf = {}
    for impl in ("grouped_mm", "eager"):
        cfg = tf.Qwen3MoeConfig(hidden_size=D, moe_intermediate_size=Fi, num_experts=E, num_experts_per_tok=k,
                                norm_topk_prob=True)
        cfg._experts_implementation = impl
        blk = Qwen3MoeSparseMoeBlock(cfg)
        with torch.no_grad():
            blk.experts.gate_up_proj.normal_(0, 0.02)
            blk.experts.down_proj.normal_(0, 0.02)
            blk.gate.weight.normal_(0, 0.02)
        hf[impl] = blk
    return dense, ours, hf


def timed(fn, x, grad, params):
    for p in params:  # as a trainer with zero_grad(set_to_none=True): no accumulation into old gradients
        p.grad = None
    x = x.detach().requires_grad_(True)
    t0 = time.perf_counter()
    y = fn(x)
    y.backward(grad)
    return time.perf_counter() - t0


def run(args) -> list[dict]:
    torch.set_num_threads(args.threads)
    D, Fi, N = args.hidden, args.inter, args.tokens
    rows = []
    for top_k in (1, 2):
        for E in args.experts:
            if top_k > E:
                continue
            dense, ours, hf = build(D, Fi, E, top_k)
            x = torch.randn(1, N, D)
            grad = torch.randn(1, N, D)
            one_label = torch.zeros(1, N, dtype=torch.long)
            mixed = torch.randint(0, E, (1, N), generator=torch.Generator().manual_seed(0))

            def lab(block, labels):
                def f(inp):
                    with routing(block, route_labels=labels):
                        return block(inp)

                return f

            variants = {
                "dense": dense,
                "ours learned (auto)": ours["auto"],
                "ours learned (loop)": ours["loop"],
                "ours learned (grouped_mm)": ours["grouped"],
                "hf qwen3_moe (grouped_mm)": hf["grouped_mm"],
                "hf qwen3_moe (eager)": hf["eager"],
            }
            if top_k == 1:
                variants["ours labels, one label"] = lab(ours["auto"], one_label)
                variants["ours labels, mixed"] = lab(ours["auto"], mixed)
            names = list(variants)
            params = [p for m in (dense, *ours.values(), *hf.values()) for p in m.parameters()]
            times = {n: [] for n in names}
            for n in names:  # warm-up
                timed(variants[n], x, grad, params)
            for r in range(args.repeats):
                order = names[r % len(names):] + names[: r % len(names)]
                for n in order:
                    times[n].append(timed(variants[n], x, grad, params))
            med = {n: statistics.median(v) for n, v in times.items()}
            best = {n: min(v) for n, v in times.items()}
            for n in names:
                rows.append({"top_k": top_k, "E": E, "variant": n, "ms": med[n] * 1e3, "x_dense": med[n] / med["dense"],
                             "min_ms": best[n] * 1e3, "min_x_dense": best[n] / best["dense"]})
            print(f"top-{top_k} E={E}: " + ", ".join(
                f"{n} {med[n] / med['dense']:.2f}x (min {best[n] / best['dense']:.2f}x)" for n in names), flush=True)
    return rows


def dispatch_sweep(args) -> str:
    """Loop vs grouped_mm (top-1, learned) over token counts: the data behind `dispatch="auto"`."""
    torch.set_num_threads(args.threads)
    lines = ["| tokens | " + " | ".join(f"E={E}" for E in args.experts) + " |",
             "| ---: | " + " | ".join("---:" for _ in args.experts) + " |"]
    for N in (1024, 2048, 4096, 8192):
        cells = []
        for E in args.experts:
            _, ours, _ = build(args.hidden, args.inter, E, 1)
            x, grad = torch.randn(N, args.hidden), torch.randn(N, args.hidden)
            params = [p for b in ours.values() for p in b.parameters()]
            ts = {"loop": [], "grouped": []}
            for d in ts:
                timed(ours[d], x, grad, params)
            for r in range(args.repeats):
                for d in (("loop", "grouped") if r % 2 else ("grouped", "loop")):
                    ts[d].append(timed(ours[d], x, grad, params))
            cells.append(f"{statistics.median(ts['loop']) / statistics.median(ts['grouped']):.2f}")
            print(f"N={N} E={E}: loop/grouped {cells[-1]}", flush=True)
        lines.append(f"| {N} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_markdown(rows, args, cmd) -> str:
    lines = [
        "# MoE block: forward+backward vs the dense FFN",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
        f"D={args.hidden}, F={args.inter}, {args.tokens} tokens, fp32, {args.repeats} interleaved repeats: median and "
        "best (min) time, each also as a ratio to the dense FFN's median / best.",
        "",
        "| top-k | E | variant | median ms | x dense (median) | min ms | x dense (min) |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['top_k']} | {r['E']} | {r['variant']} | {r['ms']:.1f} | {r['x_dense']:.2f} | "
                     f"{r['min_ms']:.1f} | {r['min_x_dense']:.2f} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--inter", type=int, default=1024)
    p.add_argument("--experts", type=int, nargs="+", default=[2, 4, 8, 16])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the markdown table here (the results file holds notes too)")
    p.add_argument("--dispatch-sweep", action="store_true", help="only time loop vs grouped_mm over token counts")
    args = p.parse_args()
    if args.dispatch_sweep:
        md = dispatch_sweep(args)
    else:
        md = to_markdown(run(args), args, "python " + " ".join(sys.argv))
    if args.out:
        from langmoe.io import write_text

        write_text(args.out, md)
    else:
        print(md)


if __name__ == "__main__":
    main()
