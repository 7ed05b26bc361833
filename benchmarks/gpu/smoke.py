"""GPU smoke run: the 362M real-shaped model through the whole DMoE path in bf16 on one GPU, plus the MoE block
benchmark on CUDA, in <= 5 minutes; tokens/s, MFU and peak memory of every step in one results folder.

    bash benchmarks/gpu/smoke.sh OUT                  # one H100/H200 (results in OUT/results.{json,md})
    bash benchmarks/gpu/smoke.sh OUT --cpu-dry-run    # CPU, a tiny shape, ~2 minutes: the logic only (CI)

Steps, each a fresh `python -m langmoe` process (wall and peak resident from the kernel, CUDA max allocated from the
command's own JSON): generate `qwen2-362m` (Qwen2.5-0.5B's body, random weights, bf16, the built-in tokenizer: no
download) -> `upcycle` (5 layers, 4 experts, top-2) -> `deviation` (the probe, bf16 autocast) -> `run` a DMoE
recipe (probe, groups, both stages; bf16 autocast) -> `expand` (LayerMoE, el+hu) -> `eval` of the DMoE model in
bf16 -> `export` to stock Qwen2-MoE in bf16. Then `benchmarks/moe_block.py` on the device (ours vs transformers'
grouped_mm vs eager). MFU = 6 x active parameters x tokens/s / the GPU's peak bf16 dense FLOP/s, with the dense
parameter count everywhere except DMoE stage 2 (top-2 of full-FFN experts in the MoE layers); attention's
sequence-length term is left out, so MFU is slightly understated.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "src"))

# bf16 dense peak TFLOP/s by GPU name (SXM parts; PCIe/NVL variants are lower: pass --peak-tflops).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}


def _load(relpath: str, name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / relpath)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def settings(dry_run: bool) -> dict[str, Any]:
    """Every size of the run; the dry run shrinks it to a CPU (same commands, same code path)."""
    if dry_run:
        return {"shape": "qwen2-tiny", "moe_layers": [0, 3], "langs": ["en", "de", "fr", "es"], "block_len": 32,
                "micro": 2, "probe_steps": 1, "stage_steps": (2, 2), "expand_steps": (1, 1), "max_tokens": 2000,
                "eval_chars": 200, "routing_tokens": 128, "precision": [], "dtype": "float32",
                "moe_block": ["--tokens", "256", "--hidden", "64", "--inter", "128", "--experts", "2", "4",
                              "--repeats", "2"]}
    return {"shape": "qwen2-362m", "moe_layers": [0, 6, 12, 18, 23], "langs": ["en", "de", "fr", "es"],
            "block_len": 512, "micro": 8, "probe_steps": 4, "stage_steps": (20, 60), "expand_steps": (20, 20),
            "max_tokens": 200_000, "eval_chars": 20_000, "routing_tokens": 4096,
            "precision": ["--mixed-precision", "bf16"],
            "dtype": "bfloat16",
            "moe_block": ["--tokens", "16384", "--hidden", "896", "--inter", "4864", "--experts", "4", "8",
                          "--repeats", "10", "--dtype", "bfloat16"]}


def recipe(s: dict[str, Any], base: Path) -> dict[str, Any]:
    """The DMoE recipe: probe, deviation groups, the fixed MoE layers, stage 1 + stage 2 (one schedule)."""
    s1, s2 = s["stage_steps"]
    return {
        "name": "gpu-smoke", "model": str(base), "corpus": "builtin", "languages": s["langs"],
        "data": {"block_len": s["block_len"], "micro_batch_size": s["micro"],
                 "max_train_tokens_per_lang": s["max_tokens"]},
        "budget_steps": s1 + s2, "optim": {"lr": 1e-4, "warmup_ratio": 0.0},
        "eval": {"window": s["block_len"], "stride": s["block_len"] // 2, "max_chars_per_lang": s["eval_chars"],
                 "batch_size": 8, "routing_tokens_per_lang": s["routing_tokens"]},
        "seed": 0, "save_every": s1 + s2,
        "systems": [{"name": "dmoe", "num_groups": 2, "moe_layers": s["moe_layers"], "top_k": 2,
                     "deviation": {"steps": s["probe_steps"], "grad_accum": 1, "stability": False},
                     "stage1": {"steps": s1}, "stage2": {"steps": s2}, "hard_routing_eval": False}],
    }


def commands(s: dict[str, Any], base: Path, work: Path) -> list[tuple[str, list[str], Path | None]]:
    """(name, argv after `langmoe`, the folder whose JSON records throughput and CUDA peak)."""
    b, m, mp = str(s["block_len"]), str(s["micro"]), s["precision"]
    layers = ",".join(map(str, s["moe_layers"]))
    dmoe = work / "run" / "stages" / "dmoe" / "stage2" / "model"
    e1, e2 = s["expand_steps"]
    return [
        ("upcycle", ["upcycle", "--model", str(base), "--layers", layers, "--experts", "4", "--top-k", "2",
                     "--out", str(work / "upcycled")], None),
        ("deviation", ["deviation", "--model", str(base), "--langs", *s["langs"][:3], "--steps",
                       str(s["probe_steps"]), "--micro-batch-size", m, "--grad-accum", "1", "--block-len", b,
                       "--max-tokens", str(s["max_tokens"]), "--no-stability", "--out", str(work / "deviation"),
                       *mp], work / "deviation"),
        ("run (DMoE stages)", ["run", str(work / "recipe.yaml"), "--run-dir", str(work / "run"), "--no-report", *mp],
         work / "run"),
        ("expand", ["expand", "--method", "layermoe", "--model", str(base), "--new", "el,hu", "--old", "en,de",
                    "--stage1-steps", str(e1), "--stage2-steps", str(e2), "--block-len", b, "--micro-batch-size", m,
                    "--max-train-tokens", str(s["max_tokens"]), "--eval-max-chars", str(s["eval_chars"]),
                    "--eval-window", b, "--eval-stride", str(s["block_len"] // 2), "--out", str(work / "expanded"),
                    *mp], work / "expanded"),
        ("eval", ["eval", "--model", str(dmoe), "--langs", *s["langs"], "--max-chars", str(s["eval_chars"]),
                  "--window", b, "--stride", str(s["block_len"] // 2), "--dtype", s["dtype"], "--no-unigram",
                  "--json", str(work / "eval.json")], None),
        ("export", ["export", "--model", str(dmoe), "--dtype", s["dtype"], "--out", str(work / "exported")], None),
    ]


def json_figures(folder: Path | None) -> dict[str, Any]:
    """The CUDA peak a command recorded in its JSON, and the trainer's tokens/s of each trained part: from each
    finished stage of a run folder (`stages/**/stage.json`), else from the command's own JSON files."""
    out: dict[str, Any] = {"cuda_max_allocated_bytes": None, "throughput": {}}
    if folder is None or not folder.is_dir():
        return out
    stages = sorted((folder / "stages").rglob("stage.json")) if (folder / "stages").is_dir() else []
    for f in stages or sorted(folder.glob("*.json")):
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        peak = (data.get("peak_memory") or {}).get("cuda_max_allocated_bytes") if isinstance(data, dict) else None
        if peak is not None:
            out["cuda_max_allocated_bytes"] = max(peak, out["cuda_max_allocated_bytes"] or 0)
        label = str(f.parent.relative_to(folder / "stages")) if stages else f.name
        if stages and isinstance(data, dict):
            data = data.get("result", {})  # the stage's own figures, not the ones it copies from earlier stages
            data = {k: v for k, v in data.items() if k != "stages"} if isinstance(data, dict) else data
        for where, tps in _tokens_per_s(data, label):
            out["throughput"][where] = tps
    if stages:  # the run's own record (summary.json) holds the command's peak
        out["cuda_max_allocated_bytes"] = json_figures_peak(folder / "summary.json")
    return out


def json_figures_peak(path: Path) -> int | None:
    try:
        return (json.loads(path.read_text(encoding="utf-8")).get("peak_memory") or {}).get("cuda_max_allocated_bytes")
    except (OSError, ValueError, AttributeError):
        return None


def _tokens_per_s(data: Any, where: str):
    if isinstance(data, dict):
        for k, v in data.items():
            if k in ("tokens_per_s", "tokens_per_s_this_call") and isinstance(v, int | float) and v > 0:
                yield where, float(v)
            elif isinstance(v, dict | list):
                yield from _tokens_per_s(v, f"{where}:{k}")
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _tokens_per_s(v, f"{where}[{i}]")


def peak_tflops(given: float | None) -> tuple[float | None, str]:
    """The device's bf16 dense peak (given, or looked up by GPU name) and the device's name."""
    import torch

    if not torch.cuda.is_available():
        return given, f"CPU ({platform.machine()})"
    name = torch.cuda.get_device_name(0)
    found = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    return (given or found), name


def active_params(shape: str, moe_layers: list[int], top_k: int) -> dict[str, int]:
    """Dense parameters of the shape, and those one token uses in stage 2 (top-k full-FFN experts per MoE layer)."""
    import torch
    from transformers import Qwen2ForCausalLM

    from langmoe.models.real_shapes import REAL_SHAPES, real_shaped_config

    with torch.device("meta"):
        model = Qwen2ForCausalLM(real_shaped_config(shape, 4096))
    dense = sum(p.numel() for p in model.parameters())
    d, f = REAL_SHAPES[shape]["hidden_size"], REAL_SHAPES[shape]["intermediate_size"]
    return {"dense": dense, "stage2_active": dense + (top_k - 1) * len(moe_layers) * 3 * d * f}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cpu-dry-run", action="store_true", help="a tiny shape on the CPU: the logic only")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the GPU's bf16 dense peak (default: by name)")
    a = ap.parse_args(argv)
    dry = a.cpu_dry_run or os.environ.get("LANGMOE_GPU_TINY") == "1"
    import torch

    if not dry and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU, or pass --cpu-dry-run")
    real_size = _load("benchmarks/real_size.py", "real_size_bench")
    from langmoe.io import write_json, write_text, write_yaml

    s = settings(dry)
    out = Path(a.out)
    work = out / "work"
    (out / "logs").mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    base = work / "base"
    real_size.generate_model(s["shape"], base)  # in a child: this process stays small (see real_size.py)
    write_yaml(work / "recipe.yaml", recipe(s, base))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": str(ROOT / "src")}
    peak, device = peak_tflops(a.peak_tflops)
    params = active_params(s["shape"], s["moe_layers"], 2)
    rows = []
    for name, argv, folder in commands(s, base, work):
        res = real_size.run_one(argv, env, out / "logs" / f"{name.split()[0]}.log")
        res.update(json_figures(folder), name=name, command="langmoe " + " ".join(argv))
        rows.append(res)
        print(f"{name:18s} {res['wall_s']:7.1f} s  {res['peak_rss_bytes'] / 1e9:6.2f} GB resident", flush=True)
    block = _moe_block(s, out, peak)
    result = {"device": device, "dry_run": dry, "peak_tflops": peak, "settings": s, "parameters": params,
              "steps": rows, "moe_block": block, "total_s": round(time.perf_counter() - t_all, 1),
              "torch": torch.__version__}
    write_json(out / "results.json", result)
    write_text(out / "results.md", markdown(result))
    print(markdown(result))
    return 0


def _moe_block(s: dict[str, Any], out: Path, peak: float | None) -> list[dict]:
    import torch

    mb = _load("benchmarks/moe_block.py", "moe_block_bench")
    argv = [*s["moe_block"], "--device", "cuda" if torch.cuda.is_available() else "cpu", "--threads",
            str(torch.get_num_threads())]
    if peak:
        argv += ["--peak-tflops", str(peak)]
    args = mb.parser().parse_args(argv)
    rows = mb.run(args)
    from langmoe.io import write_text

    write_text(out / "moe_block.md", mb.to_markdown(rows, args, "python benchmarks/moe_block.py " + " ".join(argv)))
    return rows


def _mfu(tps: float, n_params: int, peak: float | None) -> str:
    return f"{100 * 6 * n_params * tps / (peak * 1e12):.1f}%" if peak else "n/a"


def markdown(r: dict[str, Any]) -> str:
    gb = lambda b: "n/a" if b is None else f"{b / 1e9:.2f} GB"  # noqa: E731
    p = r["parameters"]
    lines = [f"# GPU smoke: {r['settings']['shape']} on {r['device']}" + (" (CPU dry run)" if r["dry_run"] else ""),
             "", f"Written by `benchmarks/gpu/smoke.sh` in {r['total_s']:.0f} s, torch {r['torch']}; "
             f"{p['dense'] / 1e6:.1f}M dense parameters, {p['stage2_active'] / 1e6:.1f}M active in DMoE stage 2; "
             f"peak {r['peak_tflops'] or 'n/a'} TFLOP/s bf16 for MFU (6 x active parameters x tokens/s).", "",
             "| step | wall | peak resident | CUDA max allocated | tokens/s (trainer, per part) | MFU |",
             "|---|---|---|---|---|---|"]
    for row in r["steps"]:
        tp = row["throughput"]
        tps = "; ".join(f"{k}: {v:,.0f}" for k, v in tp.items()) or "-"
        mfu = "; ".join(_mfu(v, p["stage2_active" if "dmoe/stage2" in k else "dense"], r["peak_tflops"])
                        for k, v in tp.items()) or "-"
        lines.append(f"| {row['name']} | {row['wall_s']:.1f} s | {gb(row['peak_rss_bytes'])} | "
                     f"{gb(row['cuda_max_allocated_bytes'])} | {tps} | {mfu} |")
    lines += ["", "## MoE block (forward + backward)", "", "| top-k | E | variant | median ms | tokens/s | TFLOP/s | MFU |",
              "|---|---|---|---|---|---|---|"]
    for b in r["moe_block"]:
        mfu = "n/a" if b.get("mfu") is None else f"{100 * b['mfu']:.1f}%"
        lines.append(f"| {b['top_k']} | {b['E']} | {b['variant']} | {b['ms']:.2f} | {b['tokens_per_s']:,.0f} | "
                     f"{b['tflops']:.3g} | {mfu} |")
    lines += ["", "<details><summary>commands</summary>", ""]
    lines += [f"- {row['name']}: `{row['command']}`" for row in r["steps"]]
    return "\n".join(lines + ["", "</details>", ""])


if __name__ == "__main__":
    raise SystemExit(main())
