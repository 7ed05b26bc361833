"""The deviation probe's memory on a model of real size, and the light probe's agreement with the exact one.

Part 1 (`--memory`): a 362M-parameter Qwen2-shaped model (hidden 896, 24 layers, GQA 14/2 heads, FFN 4864, tied
embeddings, the shipped base's 4,096-token tokenizer; random weights from seed 0, saved in bfloat16, generated
from a config with transformers, no download) is probed by `langmoe deviation --langs en de fr --steps 2
--micro-batch-size 2 --block-len 64 --no-stability` under `/usr/bin/time -v`, once per probe setting (and once
with the code of `--old-src`, the probe before this change). Peak resident memory is divided by the model's
float32 bytes (4 × parameters).

Part 2 (`--agreement`): on the shipped `builtin` base, nine languages (en de nl fr es it ru uk pl, K = 3), seeds
0, 1, 2 (`--seeds`), each probe kind of `--kinds` (default: sgd, the default probe) at its defaults (65,536 tokens a
language): the exact probe (float32, exact vectors; adamw: the paper's all-parameter fine-tune) against
- `sketch`: the same run's vectors count-sketched to 65,536 numbers (what the default does above 2^24 numbers, so
  on every model of real size; the layer deviations are the exact run's),
- `light`: a run with the FFN only, bf16 autocast and the 65,536-bucket count sketch (adamw: bf16 moments too).
A variant agrees with the exact probe when it is as close to the exact probe of the same seed as two seeds of the
exact probe are to each other (similarity correlation, layer-deviation correlation and difference, group ARI).
The results are written after each kind, so a stopped run keeps the kinds it finished.

    python benchmarks/probe_memory.py --memory --work /work/runs/probe/mem --old-src /work/main/src \
        --out benchmarks/results/probe_memory.md
    python benchmarks/probe_memory.py --agreement --kinds sgd --seeds 0,1,2 --threads 1 \
        --work /work/runs/probe/agree --out benchmarks/results/probe_memory.md

Every part records the command that made it (in the .json and the .md); what follows a `## Reading` heading in
the .md is kept when the file is written again.
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
    "default-no-ckpt": ("the default without activation checkpointing", ["--no-gradient-checkpointing"]),
    "default-bf16": ("the default, bf16 autocast", ["--mixed-precision", "bf16"]),
    "paper": ("paper probe, all parameters (exact vectors)", ["--kind", "adamw", "--params", "all", "--attention",
                                                               "--no-center", "--exact-vectors"]),
    "adamw": ("adamw, FFN only", ["--kind", "adamw"]),
    "adamw-bf16": ("adamw, FFN only, bf16 autocast", ["--kind", "adamw", "--mixed-precision", "bf16"]),
    "adamw-bf16-state": ("adamw, FFN only, bf16 moments", ["--kind", "adamw", "--optimizer-state", "bfloat16"]),
    "gradient": ("gradient (mean gradient at the base, no step)", ["--kind", "gradient"]),
}
EURO = ["en", "de", "nl", "fr", "es", "it", "ru", "uk", "pl"]
SEEDS = [0, 1, 2]
SKETCH_DIM = 65536
LIGHT = {"params": "measured", "mixed_precision": "bf16", "sketch_dim": SKETCH_DIM, "sketch_method": "count"}
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
           previous: dict[str, Any] | None = None, command: str = "") -> dict[str, Any]:
    """Peak memory of each probe setting in `keys`; rows of `previous` not rerun are kept (same probe args)."""
    model_dir = work / "qwen2-362m-bf16"
    n_params = make_model(model_dir)
    probe_args = [*PROBE_ARGS, *(["--grad-accum", str(grad_accum)] if grad_accum else [])]
    kept = {_row_id(r): r for r in (previous or {}).get("rows", []) if r.get("key")
            and r.get("args", [])[:len(PROBE_ARGS)] == PROBE_ARGS}
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
        row = ({"key": key, "label": label, "args": args, "old": old, **r, "ratio": (r["peak_bytes"] or 0) / (4 * n_params),
                     "base_copy_bytes": dev.get("base_copy_bytes"), "vector_dim": dev.get("vector_dim"),
                      "sketched": dev.get("sketched"), "dev_ffn": dev.get("dev_ffn"), "command": command,
                      "date": time.strftime("%Y-%m-%d")})
        kept[_row_id(row)] = row
    order = list(MEMORY_ROWS)
    rows = sorted(kept.values(), key=lambda r: (order.index(r["key"]), _grad_accum(r)))
    return {"params": n_params, "fp32_bytes": 4 * n_params, "threads": threads, "probe_args": PROBE_ARGS,
            "rows": rows}


def _grad_accum(row: dict[str, Any]) -> int:
    """The row's micro-batches a step (`--grad-accum`; 0 when not given: the library default)."""
    args = row.get("args", [])
    return int(args[args.index("--grad-accum") + 1]) if "--grad-accum" in args else 0


def _row_id(row: dict[str, Any]) -> tuple[str, int]:
    """Rows are kept per setting and per `--grad-accum`."""
    return row["key"], _grad_accum(row)


def _groups(langs, sim, k=3):
    from langmoe.methods.dmoe.grouping import group_languages

    return group_languages(langs, sim, num_groups=k).groups


def _compare(a: dict, b: dict, langs: list[str]) -> dict[str, float]:
    """Similarity correlation, layer-deviation correlation (every language's layers), largest layer-profile
    difference (relative) and group ARI of two probes."""
    import numpy as np

    from langmoe.methods.dmoe.grouping import agreement

    iu = np.triu_indices(len(langs), 1)
    corr = float(np.corrcoef(np.asarray(a["sim"])[iu], np.asarray(b["sim"])[iu])[0, 1])
    da, db = (np.asarray([x["dev_ffn"][y] for y in langs]) for x in (a, b))
    layer_corr = float(np.corrcoef(da.reshape(-1), db.reshape(-1))[0, 1])
    pa, pb = da.mean(axis=0), db.mean(axis=0)
    layer = float(np.max(np.abs(pa / pa.mean() - pb / pb.mean())))
    ari = agreement(a["groups"], b["groups"], langs).ari
    return {"sim_corr": corr, "layer_corr": layer_corr, "layer_diff": layer, "group_ari": ari}


def _sketched(r, cfg) -> dict[str, Any]:
    """The `sketch` variant of an exact run: its vectors count-sketched as the probe would (its seed), the
    similarity recomputed; the layer deviations are the run's."""
    from langmoe.methods.dmoe.deviation import similarity_matrix
    from langmoe.methods.dmoe.sketch import sketch_vector

    vecs = [sketch_vector(r.vectors[x], SKETCH_DIM, seed=cfg.seed, method="count") for x in r.langs]
    sim = similarity_matrix(vecs, cfg.center)
    return {"sim": sim.tolist(), "dev_ffn": r.dev_ffn, "groups": _groups(r.langs, sim)}


def _probe_runs(work: Path, kind: str, seeds: list[int], model, tok) -> dict[str, dict[int, dict]]:
    """The exact, sketch and light variants of one kind, every seed."""
    from langmoe.data.corpus import open_corpus
    from langmoe.methods.dmoe.deviation import DeviationConfig, measure_deviation_on_corpus

    runs: dict[str, dict[int, dict]] = {"exact": {}, "sketch": {}, "light": {}}
    for variant, extra in (("exact", {**EXACT[kind], "sketch_above": None}),
                           ("light", {**LIGHT, **LIGHT_STATE.get(kind, {})})):
        for seed in seeds:
            cfg = DeviationConfig.parse({"kind": kind, "stability": False, "seed": seed, "progress": False, **extra})
            print(f"probe_memory: {kind} {variant} seed {seed}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            r = measure_deviation_on_corpus(model, tok, open_corpus("builtin"), EURO, cfg, cache_dir=work / "cache")
            runs[variant][seed] = {"sim": r.similarity, "dev_ffn": r.dev_ffn, "groups": _groups(EURO, r.similarity),
                                   "config": r.config.model_dump(), "vector_dim": r.vector_dim,
                                   "tokens_per_lang": r.probe[EURO[0]].tokens_seen,
                                   "wall_s": time.perf_counter() - t0}
            if variant == "exact":
                runs["sketch"][seed] = {**_sketched(r, cfg), "vector_dim": SKETCH_DIM}
    return runs


def agreement_part(work: Path, kinds: list[str], seeds: list[int], threads: int = 1,
                   save: Any = None) -> dict[str, Any]:
    """Per kind: the exact probe's seed pairs and each variant against the exact probe of the same seed; `save`
    (if given) is called with the results after each kind."""
    import torch

    from langmoe.models.base import load_model_and_tokenizer

    torch.set_num_threads(threads)
    model, tok = load_model_and_tokenizer("builtin")
    out: dict[str, Any] = {}
    for kind in kinds:
        t0, c0 = time.perf_counter(), time.process_time()
        runs = _probe_runs(work, kind, seeds, model, tok)
        spread = [_compare(runs["exact"][s], runs["exact"][t], EURO) for s, t in itertools.combinations(seeds, 2)]
        out[kind] = {"seed_pairs": spread, "runs": runs, "langs": EURO, "num_groups": 3,
                     "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                     **{f"{v}_vs_exact": [_compare(runs[v][s], runs["exact"][s], EURO) for s in seeds]
                        for v in ("sketch", "light")}}
        if save is not None:
            save(out)
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
        extra = " ".join(r["args"][len(PROBE_ARGS):])
        opts = "(old code)" + (f" {extra}" if extra else "") if r["old"] else (extra or "(defaults)")
        vec = "" if r["vector_dim"] is None else f"{r['vector_dim']:,}" + (" (sketch)" if r["sketched"] else "")
        base = "" if r["base_copy_bytes"] is None else f"{r['base_copy_bytes'] / gb:.2f}"
        peak = "failed" if r["peak_bytes"] is None or r["rc"] else f"{r['peak_bytes'] / gb:.2f}"
        lines.append(f"| {r['label']} | `{opts}` | {r['wall_s']:.0f} | {peak} | {r['ratio']:.2f} | {base} | {vec} |")
    return lines


def _fmt(rows: list[dict]) -> str:
    lo = lambda k: min(r[k] for r in rows)  # noqa: E731
    return (f"{_mean(rows, 'sim_corr'):.3f} (min {lo('sim_corr'):.3f}) / {_mean(rows, 'layer_corr'):.4f} "
            f"(min {lo('layer_corr'):.4f}) / {_mean(rows, 'layer_diff'):.4f} "
            f"(max {max(r['layer_diff'] for r in rows):.4f}) / {_mean(rows, 'group_ari'):.2f} "
            f"(min {lo('group_ari'):.2f})")


def within_spread(variant: list[dict], pairs: list[dict]) -> bool:
    """A variant is within the exact probe's seed-to-seed spread when, on average over seeds, it is at least as
    close to the exact probe of its seed as the least close pair of exact seeds is, on every measure."""
    return (_mean(variant, "sim_corr") >= min(r["sim_corr"] for r in pairs)
            and _mean(variant, "layer_corr") >= min(r["layer_corr"] for r in pairs)
            and _mean(variant, "layer_diff") <= max(r["layer_diff"] for r in pairs)
            and _mean(variant, "group_ari") >= min(r["group_ari"] for r in pairs))


def first_group_margin(langs: list[str], sim, size: int = 3) -> float:
    """How far the grouping's first pick is from a tie: the smallest diameter (1 − similarity) of a `size`-subset
    minus the next smallest of a different subset. The first group is the smallest-diameter subset, so a change of
    the similarities by more than about this margin can change it (and with it every later group)."""
    import numpy as np

    d = 1 - np.asarray(sim, dtype=float)
    diam = sorted(max(d[i, j] for i, j in itertools.combinations(g, 2))
                  for g in itertools.combinations(range(len(langs)), size))
    return float(diam[1] - diam[0])


def _margin_lines(agr: dict[str, Any]) -> list[str]:
    import numpy as np

    lines = []
    for kind, a in agr.items():
        seeds = list(a["runs"]["exact"])
        size = -(-len(a["langs"]) // a["num_groups"])
        margins = [first_group_margin(a["langs"], a["runs"]["exact"][s]["sim"], size) for s in seeds]
        diff = {v: [float(np.max(np.abs(np.asarray(a["runs"][v][s]["sim"]) - np.asarray(a["runs"]["exact"][s]["sim"]))))
                    for s in seeds] for v in ("sketch", "light")}
        pairs = [float(np.max(np.abs(np.asarray(a["runs"]["exact"][s]["sim"]) - np.asarray(a["runs"]["exact"][t]["sim"]))))
                 for s, t in itertools.combinations(seeds, 2)]
        f = lambda xs: ", ".join(f"{x:.4f}" for x in xs)  # noqa: E731
        lines.append(f"- {kind}, seeds {', '.join(map(str, seeds))}: the exact probe's first-group margin (next "
                     f"smallest diameter minus the smallest) {f(margins)}; largest similarity change, sketch vs "
                     f"exact {f(diff['sketch'])}, light vs exact {f(diff['light'])}, exact seed vs seed {f(pairs)}.")
    return lines


def _agreement_md(agr: dict[str, Any]) -> list[str]:
    lines = ["Each cell: similarity correlation / layer-deviation correlation / largest layer-profile difference / "
             "group ARI, the mean over the pairs or seeds (the worst in brackets).", "",
             "| probe | seeds | tokens a language | exact, seed vs seed (all pairs) | variant | variant vs exact, "
             "same seed | within the seed spread |", "|---|---|---|---|---|---|---|"]
    for kind, a in agr.items():
        seeds = ", ".join(str(s) for s in a["runs"]["exact"])
        tokens = next(iter(a["runs"]["exact"].values()))["tokens_per_lang"]
        for variant in ("sketch", "light"):
            rows = a[f"{variant}_vs_exact"]
            lines.append(f"| {kind} | {seeds} | {tokens:,} | {_fmt(a['seed_pairs'])} | {VARIANTS[variant]} | "
                         f"{_fmt(rows)} | {'yes' if within_spread(rows, a['seed_pairs']) else 'no'} |")
    cpu = sum(a.get("cpu_s", 0.0) for a in agr.values()) / 60
    lines += ["", f"CPU time of the part: {cpu:.1f} minutes.", "", *_margin_lines(agr)]
    return lines


VARIANTS = {"sketch": "count sketch, 65,536 (the default at real size)",
            "light": "FFN only, bf16 autocast, count sketch 65,536"}


def _render(data: dict[str, Any], reading: str) -> list[str]:
    base = "langmoe deviation --model 362M-folder " + " ".join(PROBE_ARGS)
    lines = ["# Deviation probe memory", "", "The machine (2 cores) was shared with other jobs: wall times are "
             "indicative; peak memory is not affected.", ""]
    if "memory" in data:
        cmds = sorted({r.get("command", "") for r in data["memory"]["rows"]} - {""})
        lines += ["## Peak memory on a 362M-parameter model", "", "Commands (one a row; each keeps the rows of the "
                  "others):", "", *[f"- `{c}`" for c in cmds], "", *_memory_md(data["memory"], base), ""]
    if "agreement" in data:
        lines += ["## The light probe against the exact one (shipped base, 9 languages, K = 3)", "",
                  f"Command: `{data.get('agreement_command', '')}`", "", *_agreement_md(data["agreement"]), ""]
    return lines + ([reading.rstrip("\n"), ""] if reading else [])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path, help="markdown file (a .json with the records beside it)")
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--agreement", action="store_true")
    ap.add_argument("--old-src", default=None, help="src folder of the code before the change (a 'before' row)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kinds", default="sgd", help="--agreement: probe kinds (of gradient, sgd, adamw)")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="--agreement: seeds (at least 2)")
    ap.add_argument("--rows", default=",".join(MEMORY_ROWS), help=f"--memory rows, of {', '.join(MEMORY_ROWS)}")
    ap.add_argument("--grad-accum", type=int, default=None,
                    help="micro-batches per probe step for every row run (default: the library's, 16); rows are "
                         "kept per value")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    store = args.out.with_suffix(".json")
    data = json.loads(store.read_text()) if store.is_file() else {}
    old_md = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
    reading = old_md[old_md.index("## Reading"):] if "## Reading" in old_md else ""
    cmd = "python benchmarks/probe_memory.py " + " ".join(argv if argv is not None else sys.argv[1:])

    def write() -> None:
        store.write_text(json.dumps(data, indent=1), encoding="utf-8")
        args.out.write_text("\n".join(_render(data, reading)), encoding="utf-8")

    if args.memory:
        keys = [k.strip() for k in args.rows.split(",") if k.strip()]
        if unknown := [k for k in keys if k not in MEMORY_ROWS]:
            ap.error(f"unknown rows {unknown}: choose from {', '.join(MEMORY_ROWS)}")
        data["memory"] = memory(args.work, args.old_src, args.threads, keys, args.grad_accum, data.get("memory"),
                                command=cmd)
        write()
    if args.agreement:
        seeds = [int(x) for x in args.seeds.split(",")]
        if len(seeds) < 2:
            ap.error("--agreement needs at least 2 seeds")
        data["agreement_command"] = cmd

        def save(part: dict[str, Any]) -> None:
            data["agreement"] = part
            write()

        agreement_part(args.work, args.kinds.split(","), seeds, args.threads, save)
    write()
    print("\n".join(_render(data, reading)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
