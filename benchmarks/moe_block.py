"""MoE block forward+backward time relative to the dense FFN on the same tokens, and against transformers' block.

    python benchmarks/moe_block.py [--tokens 2048 --hidden 256 --inter 1024 --repeats 15 --threads 1]
        [--experts 2 4 8 16] [--out benchmarks/results/moe_block.md]
        [--device cuda --dtype bfloat16 --peak-tflops 989]      # on a GPU (benchmarks/gpu/smoke.sh runs this)

Everything runs in one process. Per repeat, every variant of an expert count is timed once, in an order rotated
each repeat, so machine noise (a shared CPU) hits all variants alike; the table reports medians. Variants:
Gradients are reset to None before every timed step (as a trainer's `zero_grad(set_to_none=True)`), so fused
expert weights do not pay for accumulating into an old full-size gradient. Variants: dense FFN (LlamaMLP), ours learned top-1/top-2 (auto dispatch, and loop / grouped_mm forced), ours label routing
with one label per micro-batch (the DMoE stage-1 case) and with mixed labels, and transformers'
`Qwen3MoeSparseMoeBlock` (norm_topk_prob=True) with its `grouped_mm` and `eager` experts implementations.
Tokens/s and TFLOP/s count the expert matmuls (3 per expert, k experts per token; the dense FFN k=1) and the
router (forward + backward: 6 flops per weight per token); MFU divides TFLOP/s by `--peak-tflops`.
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


def build(D, Fi, E, k, seed=0, device="cpu", dtype=torch.float32):
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
    for m in (dense, *ours.values(), *hf.values()):
        m.to(device=device, dtype=dtype)
    return dense, ours, hf


def timed(fn, x, grad, params):
    for p in params:  # as a trainer with zero_grad(set_to_none=True): no accumulation into old gradients
        p.grad = None
    x = x.detach().requires_grad_(True)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)  # GPU kernels run asynchronously
    sync()
    t0 = time.perf_counter()
    y = fn(x)
    y.backward(grad)
    sync()
    return time.perf_counter() - t0


def flops(variant: str, N: int, D: int, Fi: int, E: int, k: int) -> float:
    """Forward + backward flops of one step: 6 per token per weight used (experts, and the router of MoE)."""
    if variant == "dense":
        return 6.0 * N * 3 * D * Fi
    used = 1 if "labels" in variant else k
    return 6.0 * N * (used * 3 * D * Fi + D * E)


def run(args) -> list[dict]:
    torch.set_num_threads(args.threads)
    D, Fi, N = args.hidden, args.inter, args.tokens
    dev, dt = torch.device(args.device), getattr(torch, args.dtype)
    rows = []
    for top_k in (1, 2):
        for E in args.experts:
            if top_k > E:
                continue
            dense, ours, hf = build(D, Fi, E, top_k, device=dev, dtype=dt)
            x = torch.randn(1, N, D).to(dev, dt)
            grad = torch.randn(1, N, D).to(dev, dt)
            one_label = torch.zeros(1, N, dtype=torch.long, device=dev)
            mixed = torch.randint(0, E, (1, N), generator=torch.Generator().manual_seed(0)).to(dev)

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
                tflops = flops(n, N, D, Fi, E, top_k) / med[n] / 1e12
                rows.append({"top_k": top_k, "E": E, "variant": n, "ms": med[n] * 1e3, "x_dense": med[n] / med["dense"],
                             "min_ms": best[n] * 1e3, "min_x_dense": best[n] / best["dense"],
                             "tokens_per_s": N / med[n], "tflops": tflops,
                             "mfu": tflops / args.peak_tflops if args.peak_tflops else None})
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
        f"Machine: {_machine(args)}, torch {torch.__version__}, {args.threads} thread(s), "
        f"D={args.hidden}, F={args.inter}, {args.tokens} tokens, {args.dtype}, {args.repeats} interleaved repeats: "
        "median and best (min) time, each also as a ratio to the dense FFN's median / best; tokens/s, TFLOP/s and "
        f"MFU (peak {args.peak_tflops or 'n/a'} TFLOP/s) at the median.",
        "",
        "| top-k | E | variant | median ms | x dense (median) | min ms | x dense (min) | tokens/s | TFLOP/s | MFU |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
        lines.append(f"| {r['top_k']} | {r['E']} | {r['variant']} | {r['ms']:.1f} | {r['x_dense']:.2f} | "
                     f"{r['min_ms']:.1f} | {r['min_x_dense']:.2f} | {r['tokens_per_s']:,.0f} | {r['tflops']:.3g} | "
                     f"{mfu} |")
    return "\n".join(lines) + "\n"


def _machine(args) -> str:
    if args.device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(args.device))
    return platform.machine()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--inter", type=int, default=1024)
    p.add_argument("--experts", type=int, nargs="+", default=[2, 4, 8, 16])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the markdown table here (the results file holds notes too)")
    p.add_argument("--dispatch-sweep", action="store_true", help="only time loop vs grouped_mm over token counts")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's peak TFLOP/s at --dtype (for MFU)")
    return p


def main():
    args = parser().parse_args()
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
