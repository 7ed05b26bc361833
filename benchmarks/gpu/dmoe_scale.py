"""DMoE vs dense CPT on one GPU in ~8 minutes: pretrain a ~35M-parameter Llama on the whole built-in corpus, then
train DMoE and CPT at 1x / 2x / 4x epochs of 9 languages (bf16, large batches) and write one results file.

    bash benchmarks/gpu/dmoe_scale.sh OUT          # the real run (H100/H200)
    LANGMOE_GPU_TINY=1 bash benchmarks/gpu/dmoe_scale.sh OUT    # CPU, seconds: the logic only (CI)

Steps: (1) `langmoe.pretrain.pretrain` with the `gpu35m` preset registered here (8 layers, hidden 512, FFN 1536:
27M non-embedding + 8.4M embedding parameters, 8192-token BPE), all 47 built-in languages; (2) for each epoch
multiplier m the 9-language DMoE recipe with budget = m epochs of the 9 languages' packed training tokens, stage 1
at 10%, one schedule over both stages (`schedule: continuous`); the groups and MoE layers found at 1x are reused at
2x and 4x; (3) `<out>/results.json` + `<out>/results.md`: per multiplier mean ppl of base, DMoE (learned and
hard routing) and CPT, per-language ppl, the DMoE−CPT gap, timings.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

LANGS = ["en", "de", "nl", "fr", "es", "it", "ru", "uk", "pl"]
HERE = Path(__file__).resolve().parent


def _bench():
    spec = importlib.util.spec_from_file_location("dmoe_builtin_bench", HERE.parent / "dmoe_builtin.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def settings(tiny: bool) -> dict[str, Any]:
    """Every size of the run; `tiny` shrinks it to seconds on a CPU (same code path)."""
    if tiny:
        return {"preset": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                           "num_attention_heads": 2, "num_key_value_heads": 2}, "vocab": 512,
                "pretrain_langs": LANGS[:4] + ["sv", "pt"], "langs": LANGS[:4], "groups": 2,
                "tokenizer_chars": 20_000, "pretrain_steps": 3, "pretrain_max_tokens": 3000, "block_len": 32,
                "micro_batch": 4, "max_tokens": 1500, "epochs": [1, 2], "eval_chars": 300, "precision": "no",
                "probe": {"kind": "adamw", "steps": 1, "lr": 3e-4, "grad_accum": 1, "stability": False}, "lr": 1e-3}
    return {"preset": {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8,
                       "num_attention_heads": 8, "num_key_value_heads": 8}, "vocab": 8192,
            "pretrain_langs": None, "langs": LANGS, "groups": 3, "tokenizer_chars": None,
            "pretrain_steps": int(os.environ.get("LANGMOE_GPU_PRETRAIN_STEPS", 1000)), "pretrain_max_tokens": None,
            "block_len": 512, "micro_batch": 64, "max_tokens": None, "epochs": [1, 2, 4], "eval_chars": 20_000,
            "precision": "bf16", "probe": {"kind": "adamw", "steps": 10, "lr": 1e-4, "grad_accum": 2, "stability": True},
            "lr": 5e-4}


def pretrain_base(s: dict[str, Any], out: Path) -> dict[str, Any]:
    from langmoe.eval.perplexity import EvalSettings
    from langmoe.models import presets
    from langmoe.pretrain import OptimSettings, PretrainConfig, build_config, pretrain

    presets.PRESETS.setdefault("gpu35m", s["preset"])  # a benchmark-local preset (not shipped)
    presets.PRESET_VOCAB.setdefault("gpu35m", s["vocab"])
    optim = build_config(OptimSettings, steps=s["pretrain_steps"], lr=2e-3 if s["precision"] == "no" else 1.5e-3,
                         warmup_ratio=0.02, min_lr_ratio=0.1, weight_decay=0.1, grad_clip=1.0,
                         micro_batch_size=s["micro_batch"], grad_accum=1, mixed_precision=s["precision"],
                         save_every=0, log_every=50, tau=0.3, keep_checkpoints=1)
    ev = build_config(EvalSettings, window=s["block_len"], stride=s["block_len"] // 2,
                      max_chars_per_lang=s["eval_chars"])
    cfg = build_config(PretrainConfig, preset="gpu35m", corpus="builtin", langs=s["pretrain_langs"],
                       out=str(out), seed=0, block_len=s["block_len"], max_positions=max(1024, s["block_len"]),
                       vocab_size=s["vocab"], tokenizer_max_chars_per_lang=s["tokenizer_chars"],
                       max_train_tokens_per_lang=s["pretrain_max_tokens"], optim=optim, eval=ev)
    return pretrain(cfg, command="benchmarks/gpu/dmoe_scale.py (pretrain)")


def _eval_on_gpu() -> None:
    """Score on the GPU: the pipeline loads saved stage models on the CPU before evaluating them."""
    import torch

    from langmoe.pipeline.context import RecipeRun

    if not torch.cuda.is_available() or getattr(RecipeRun.evaluate, "_on_gpu", False):
        return
    orig = RecipeRun.evaluate

    def evaluate(self, model, *a, **k):
        model.to("cuda")
        return orig(self, model, *a, **k)

    evaluate._on_gpu = True
    RecipeRun.evaluate = evaluate


def recipe_for(s: dict[str, Any], base: Path, steps_per_epoch: int) -> dict[str, Any]:
    steps = steps_per_epoch
    s1 = max(1, round(0.1 * steps))
    return {
        "name": "gpu-dmoe-scale", "model": str(base), "corpus": "builtin", "languages": s["langs"],
        "data": {"block_len": s["block_len"], "micro_batch_size": s["micro_batch"], "tau": 0.3,
                 "max_train_tokens_per_lang": s["max_tokens"]},
        "budget_steps": steps,
        "optim": {"lr": s["lr"], "warmup_ratio": 0.03, "grad_clip": 1.0, "mixed_precision": s["precision"]},
        "eval": {"window": s["block_len"], "stride": s["block_len"] // 2, "max_chars_per_lang": s["eval_chars"],
                 "batch_size": 16, "routing_tokens_per_lang": 4 * s["block_len"]},
        "threads": 4, "save_every": 0,
        "systems": ["base", {"name": "dmoe", "num_groups": s["groups"], "top_k": 2, "epsilon": 0.6,
                             "schedule": "continuous", "deviation": s["probe"], "stage1": {"steps": s1},
                             "stage2": {"steps": steps - s1}}, "cpt"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--tiny", action="store_true", default=bool(os.environ.get("LANGMOE_GPU_TINY")),
                    help="CPU, seconds: the logic only (also LANGMOE_GPU_TINY=1)")
    args = ap.parse_args(argv)
    import torch

    from langmoe.config import parse_recipe
    from langmoe.data.corpus import open_corpus
    from langmoe.data.packing import pack_corpus
    from langmoe.models.base import load_tokenizer
    from langmoe.pipeline.run import run_recipe

    s = settings(args.tiny)
    out = Path(args.out)
    t0 = time.perf_counter()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"dmoe_scale: {'tiny' if args.tiny else 'full'} run on {device} -> {out}", file=sys.stderr)
    base = out / "base"
    if not (base / "pretrain.json").is_file():
        pretrain_base(s, base)
    pre = json.loads((base / "pretrain.json").read_text())
    t_pre = time.perf_counter() - t0
    _eval_on_gpu()
    tok = load_tokenizer(base)
    blocks = pack_corpus(open_corpus("builtin"), tok, s["langs"], "train", s["block_len"],
                         max_tokens_per_lang=s["max_tokens"], cache_dir=out / "cache")
    steps_per_epoch = max(10, math.ceil(len(blocks) / s["micro_batch"]))
    bench = _bench()
    data = recipe_for(s, base, steps_per_epoch)
    rows: dict[str, Any] = {}
    fixed = None
    for i, m in enumerate(s["epochs"]):
        systems = (["base"] if i == 0 else []) + ["dmoe", "cpt"]
        recipe = parse_recipe(bench.scale_recipe(data, m, systems, fixed))
        run_dir = out / f"epochs{m}"
        t1 = time.perf_counter()
        summary = run_recipe(recipe, run_dir, log=lambda x: print(f"  {x}", file=sys.stderr))
        if fixed is None:
            fixed = {"groups": json.loads((run_dir / "groups.json").read_text())["groups"],
                     "moe_layers": json.loads((run_dir / "layers.json").read_text())["selected"]}
        sysrows = summary["systems"]
        d, c = sysrows["dmoe"]["mean_ppl"], sysrows["cpt"]["mean_ppl"]
        rows[str(m)] = {"tokens": recipe.budget_tokens, "seconds": time.perf_counter() - t1,
                        "dmoe_vs_cpt": d / c - 1, "systems": {k: {"mean_ppl": v["mean_ppl"], "mean_bpb": v["mean_bpb"],
                                                                 "ppl": v["ppl"], "params_total": v["params_total"],
                                                                 "params_active": v["params_active"]}
                                                             for k, v in sysrows.items()}}
        print(f"{m} epochs: DMoE {d:.2f} vs CPT {c:.2f} ({d / c - 1:+.2%})", file=sys.stderr)
    result = {"command": "bash benchmarks/gpu/dmoe_scale.sh " + str(out) + (" (tiny)" if args.tiny else ""),
              "device": device, "tiny": args.tiny, "base": {"parameters": pre["parameters"],
                                                            "pretrain_seconds": t_pre,
                                                            "eval_mean": pre["eval"]["mean"]},
              "languages": s["langs"], "groups": fixed["groups"] if fixed else None,
              "moe_layers": fixed["moe_layers"] if fixed else None, "steps_per_epoch": steps_per_epoch,
              "epochs": rows, "wall_s": time.perf_counter() - t0}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    md = [f"# DMoE vs CPT on {device}: {result['command']}", "",
          f"Base: {pre['parameters'].get('total', pre['parameters'])} parameters, pretrained in {t_pre:.0f} s; groups {result['groups']}, "
          f"MoE layers {result['moe_layers']}; wall {result['wall_s']:.0f} s.", "",
          "| epochs | tokens | base | DMoE | DMoE (hard) | CPT | DMoE vs CPT |", "|---|---|---|---|---|---|---|"]
    base_ppl = rows[str(s["epochs"][0])]["systems"].get("base", {}).get("mean_ppl")
    for m, r in rows.items():
        sy = r["systems"]
        hard = sy.get("dmoe_hard", {}).get("mean_ppl")
        md.append(f"| {m} | {r['tokens']:,} | {base_ppl:.2f} | {sy['dmoe']['mean_ppl']:.2f} | "
                  f"{'-' if hard is None else f'{hard:.2f}'} | {sy['cpt']['mean_ppl']:.2f} | {r['dmoe_vs_cpt']:+.2%} |")
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
