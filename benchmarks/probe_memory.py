"""The deviation probe's memory on a model of real size, and the light probe's agreement with the exact one.

Part 1 (`--memory`): a 362M-parameter Qwen2-shaped model (hidden 896, 24 layers, GQA 14/2 heads, FFN 4864, tied
embeddings, the shipped base's 4,096-token tokenizer; random weights from seed 0, saved in bfloat16, generated
from a config with transformers, no download) is probed by `langmoe deviation --langs en de fr --steps 2
--micro-batch-size 2 --block-len 64 --no-stability` under `/usr/bin/time -v`, once per probe setting (and once
with the code of `--old-src`, the probe before this change). Peak resident memory is divided by the model's
float32 bytes (4 × parameters).

Part 2 (`--agreement`): on the shipped `builtin` base, nine languages (en de nl fr es it ru uk pl, K = 3), seeds
0..4, each probe kind at its defaults: the exact probe (float32, exact vectors; adamw: the paper's all-parameter
fine-tune) against the light one (FFN only, bf16 autocast, a 65,536-bucket count sketch of the vector). The light
probe agrees with the exact one when it is as close to the exact probe of the same seed as two seeds of the exact
probe are to each other.

    python benchmarks/probe_memory.py --memory --agreement --work /work/runs/probe/mem \
        --old-src /work/main/src --out benchmarks/results/probe_memory.md
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PROBE_ARGS = ["--langs", "en", "de", "fr", "--steps", "2", "--micro-batch-size", "2", "--block-len", "64",
              "--no-stability"]
# key -> (label, extra `langmoe deviation` options); "old" runs the code of --old-src with no extra options
MEMORY_ROWS: dict[str, tuple[str, list[str]]] = {
    "old": ("before: the old probe (--old-src)", ["old"]),
    "default": ("sgd, FFN only, centred (the default)", []),
    "default-bf16": ("the default, bf16 autocast", ["--mixed-precision", "bf16"]),
    "paper": ("paper probe, all parameters (exact vectors)", ["--kind", "adamw", "--params", "all", "--attention",
                                                               "--no-center", "--exact-vectors"]),
    "adamw": ("adamw, FFN only", ["--kind", "adamw"]),
    "adamw-bf16": ("adamw, FFN only, bf16 autocast", ["--kind", "adamw", "--mixed-precision", "bf16"]),
    "adamw-bf16-state": ("adamw, FFN only, bf16 moments", ["--kind", "adamw", "--optimizer-state", "bfloat16"]),
    "gradient": ("gradient (mean gradient at the base, no step)", ["--kind", "gradient"]),
}
EURO = ["en", "de", "nl", "fr", "es", "it", "ru", "uk", "pl"]
SEEDS = [0, 1, 2, 3, 4]
LIGHT = {"params": "measured", "mixed_precision": "bf16", "sketch_dim": 65536, "sketch_method": "count"}
LIGHT_STATE = {"adamw": {"optimizer_state": "bfloat16"}}  # adamw's light probe keeps its moments in bf16 too
EXACT = {"adamw": {"params": "all"}, "sgd": {}, "gradient": {}}


def model_config(tok):
    """The 362M Qwen2 shape of issue 20: hidden 896, 24 layers, GQA 14/2, FFN 4864, tied embeddings."""
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=len(tok), hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                       num_key_value_heads=2, intermediate_size=4864, max_position_embeddings=2048,
                       tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)


def make_model(path: Path) -> int:
    """The model with random weights (seed 0) in bfloat16 and the shipped tokenizer; its parameter count."""
    import torch
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    from langmoe.models.base import resolve_model_path

    tok = AutoTokenizer.from_pretrained(str(resolve_model_path("builtin")))
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(model_config(tok)).to(torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    if not (path / "config.json").is_file():
        model.save_pretrained(str(path))
        tok.save_pretrained(str(path))
    return n


def _time_v(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run `cmd` under /usr/bin/time -v: wall seconds, peak resident bytes, exit code."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log.write_text(p.stdout + p.stderr, encoding="utf-8")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    return {"rc": p.returncode, "wall_s": wall, "peak_bytes": int(m.group(1)) * 1024 if m else None}


def memory(work: Path, old_src: str | None, threads: int, keys: list[str], grad_accum: int | None,
           previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Peak memory of each probe setting in `keys`; rows of `previous` not rerun are kept (same probe args)."""
    model_dir = work / "qwen2-362m-bf16"
    n_params = make_model(model_dir)
    probe_args = [*PROBE_ARGS, *(["--grad-accum", str(grad_accum)] if grad_accum else [])]
    kept = {r["key"]: r for r in (previous or {}).get("rows", []) if r.get("key") and
            (previous or {}).get("probe_args") == probe_args}
    for key in keys:
        label, extra = MEMORY_ROWS[key]
        old = extra == ["old"]
        if old and not old_src:
            continue
        src = old_src if old else str(Path(__file__).resolve().parents[1] / "src")
        env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
               "HF_HUB_OFFLINE": "1"}
        out = work / f"dev-{key}"
        args = [*probe_args, *([] if old else extra)]
        cmd = [sys.executable, "-m", "langmoe", "deviation", "--model", str(model_dir), "--out", str(out),
               "--overwrite", "--threads", str(threads), *args]
        print(f"probe_memory: {label}", file=sys.stderr, flush=True)
        r = _time_v(cmd, env, work / f"dev-{key}.log")
        dev = json.loads((out / "deviation.json").read_text()) if (out / "deviation.json").is_file() else {}
        kept[key] = ({"key": key, "label": label, "args": args, "old": old, **r, "ratio": (r["peak_bytes"] or 0) / (4 * n_params),
                     "base_copy_bytes": dev.get("base_copy_bytes"), "vector_dim": dev.get("vector_dim"),
                      "sketched": dev.get("sketched"), "dev_ffn": dev.get("dev_ffn")})
    rows = [kept[k] for k in MEMORY_ROWS if k in kept]
    return {"params": n_params, "fp32_bytes": 4 * n_params, "threads": threads, "probe_args": probe_args,
            "rows": rows}


def _groups(langs, sim, k=3):
    from langmoe.methods.dmoe.grouping import group_languages

    return group_languages(langs, sim, num_groups=k).groups


def _compare(a: dict, b: dict, langs: list[str]) -> dict[str, float]:
    """Similarity correlation, largest layer-profile difference (relative) and group ARI of two probes."""
    import numpy as np

    from langmoe.methods.dmoe.grouping import agreement

    iu = np.triu_indices(len(langs), 1)
    corr = float(np.corrcoef(np.asarray(a["sim"])[iu], np.asarray(b["sim"])[iu])[0, 1])
    pa, pb = (np.asarray([x["dev_ffn"][y] for y in langs]).mean(axis=0) for x in (a, b))
    layer = float(np.max(np.abs(pa / pa.mean() - pb / pb.mean())))
    ari = agreement(a["groups"], b["groups"], langs).ari
    return {"sim_corr": corr, "layer_diff": layer, "group_ari": ari}


def agreement_part(work: Path, kinds: list[str], seeds: list[int]) -> dict[str, Any]:
    import torch

    from langmoe.data.corpus import open_corpus
    from langmoe.methods.dmoe.deviation import DeviationConfig, measure_deviation_on_corpus
    from langmoe.models.base import load_model_and_tokenizer

    torch.set_num_threads(1)
    model, tok = load_model_and_tokenizer("builtin")
    out: dict[str, Any] = {}
    for kind in kinds:
        runs: dict[str, dict[int, dict]] = {"exact": {}, "light": {}}
        for variant, extra in (("exact", EXACT[kind]), ("light", {**LIGHT, **LIGHT_STATE.get(kind, {})})):
            for seed in seeds:
                cfg = DeviationConfig.parse({"kind": kind, "stability": False, "seed": seed, **extra})
                print(f"probe_memory: {kind} {variant} seed {seed}", file=sys.stderr, flush=True)
                r = measure_deviation_on_corpus(model, tok, open_corpus("builtin"), EURO, cfg,
                                                out_dir=work / "agree" / kind / variant / str(seed),
                                                cache_dir=work / "cache")
                runs[variant][seed] = {"sim": r.similarity, "dev_ffn": r.dev_ffn,
                                       "groups": _groups(EURO, r.similarity), "config": r.config.model_dump()}
        spread = [_compare(runs["exact"][s], runs["exact"][t], EURO) for s, t in itertools.combinations(seeds, 2)]
        light = [_compare(runs["light"][s], runs["exact"][s], EURO) for s in seeds]
        out[kind] = {"seed_pairs": spread, "light_vs_exact": light, "runs": runs}
    return out


def _mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def _memory_md(mem: dict[str, Any], cmd_base: str) -> list[str]:
    gb = 1e9
    lines = [f"Model: {mem['params'] / 1e6:.1f}M parameters, float32 bytes {mem['fp32_bytes'] / gb:.2f} GB "
             f"(loaded in float32 as `langmoe deviation` does). Probe: `{cmd_base}` plus the options of each row; "
             f"{mem['threads']} thread(s).", "",
             "| probe | options | wall s | peak resident GB | × fp32 model | base copy GB | vector |",
             "|---|---|---|---|---|---|---|"]
    for r in mem["rows"]:
        opts = "(old code)" if r["old"] else (" ".join(r["args"][len(mem["probe_args"]):]) or "(defaults)")
        vec = "" if r["vector_dim"] is None else f"{r['vector_dim']:,}" + (" (sketch)" if r["sketched"] else "")
        base = "" if r["base_copy_bytes"] is None else f"{r['base_copy_bytes'] / gb:.2f}"
        peak = "failed" if r["peak_bytes"] is None or r["rc"] else f"{r['peak_bytes'] / gb:.2f}"
        lines.append(f"| {r['label']} | `{opts}` | {r['wall_s']:.0f} | {peak} | {r['ratio']:.2f} | {base} | {vec} |")
    return lines


def _agreement_md(agr: dict[str, Any]) -> list[str]:
    lines = ["| probe | seeds | exact, seed vs seed (all pairs): sim. corr / layer diff / group ARI | light vs exact, "
             "same seed: sim. corr / layer diff / group ARI | within the seed spread |", "|---|---|---|---|---|"]
    for kind, a in agr.items():
        sp, li = a["seed_pairs"], a["light_vs_exact"]
        seeds = ", ".join(str(s) for s in a["runs"]["exact"])
        within = (_mean(li, "sim_corr") >= min(r["sim_corr"] for r in sp)
                  and _mean(li, "layer_diff") <= max(r["layer_diff"] for r in sp)
                  and _mean(li, "group_ari") >= min(r["group_ari"] for r in sp))
        fmt = lambda rows: (f"{_mean(rows, 'sim_corr'):.3f} (min {min(r['sim_corr'] for r in rows):.3f}) / "  # noqa
                            f"{_mean(rows, 'layer_diff'):.4f} (max {max(r['layer_diff'] for r in rows):.4f}) / "
                            f"{_mean(rows, 'group_ari'):.2f} (min {min(r['group_ari'] for r in rows):.2f})")
        lines.append(f"| {kind} | {seeds} | {fmt(sp)} | {fmt(li)} | {'yes' if within else 'no'} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path, help="markdown file (a .json with the records beside it)")
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--agreement", action="store_true")
    ap.add_argument("--old-src", default=None, help="src folder of the code before the change (a 'before' row)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kinds", default="gradient,sgd,adamw", help="--agreement: probe kinds")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="--agreement: seeds (at least 2)")
    ap.add_argument("--rows", default=",".join(MEMORY_ROWS), help=f"--memory rows, of {', '.join(MEMORY_ROWS)}")
    ap.add_argument("--grad-accum", type=int, default=None,
                    help="micro-batches per probe step for every row (peak memory does not depend on it; fewer "
                         "make each run faster)")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    store = args.out.with_suffix(".json")
    data = json.loads(store.read_text()) if store.is_file() else {}
    if args.memory:
        keys = [k.strip() for k in args.rows.split(",") if k.strip()]
        if unknown := [k for k in keys if k not in MEMORY_ROWS]:
            ap.error(f"unknown rows {unknown}: choose from {', '.join(MEMORY_ROWS)}")
        data["memory"] = memory(args.work, args.old_src, args.threads, keys, args.grad_accum, data.get("memory"))
    if args.agreement:
        data["agreement"] = agreement_part(args.work, args.kinds.split(","), [int(x) for x in args.seeds.split(",")])
    store.write_text(json.dumps(data, indent=1), encoding="utf-8")
    cmd = "python benchmarks/probe_memory.py " + " ".join(argv if argv is not None else sys.argv[1:])
    base = "langmoe deviation --model 362M-folder " + " ".join(data.get("memory", {}).get("probe_args", PROBE_ARGS))
    lines = ["# Deviation probe memory", "", f"Command: `{cmd}` (the machine was shared with other jobs: wall "
             "times are indicative; peak memory is not affected).", ""]
    if "memory" in data:
        lines += ["## Peak memory on a 362M-parameter model", "", *_memory_md(data["memory"], base), ""]
    if "agreement" in data:
        lines += ["## The light probe against the exact one (shipped base, 9 languages, K = 3)", "",
                  *_agreement_md(data["agreement"]), ""]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
