"""Stage-1 training throughput of LayerMoE (per-layer expert counts) against MoE-LPR (uniform) at equal total experts.

    python benchmarks/expansion_speed.py [--model builtin --steps 20 --runs 3 --threads 2]
        [--out benchmarks/results/expansion_speed.md]

Both start from the same dense base, expand every layer (MoE-LPR: `--experts` per layer; LayerMoE: the same number of
new experts in total, allocated by the measured FFN-input similarity of `--new` vs `--old`), and run `--steps`
stage-1 optimizer steps on the same new-language blocks (new experts + routers train, load-balancing loss). Runs
alternate LayerMoE / MoE-LPR so machine noise hits both alike; the ratio of the medians of tokens/s is printed
(target: >= 0.8, i.e. per-layer counts do not fall back to slow paths).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from langmoe.methods.expansion.data import build_data  # noqa: E402
from langmoe.methods.expansion.inputs import read_input  # noqa: E402
from langmoe.methods.expansion.oneshot import one_system_recipe  # noqa: E402
from langmoe.methods.expansion.stages import train_stage1  # noqa: E402
from langmoe.methods.expansion.surgery import expand_model  # noqa: E402
from langmoe.methods.layermoe import LayerMoEConfig, measure_similarity, solve_delta  # noqa: E402
from langmoe.models.folders import resolve_model_path  # noqa: E402
from langmoe.pipeline.context import RecipeRun  # noqa: E402


def one_run(cfg: LayerMoEConfig, new_experts: dict[int, int], run: RecipeRun, data, work: Path) -> float:
    model = run.base()
    expand_model(model, new_experts, cfg.top_k, cfg.seed)
    res = train_stage1(model, cfg, data, work)
    return res.tokens_per_s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--corpus", default="builtin")
    ap.add_argument("--new", default="el,hu,tr")
    ap.add_argument("--old", default="en,zh,es")
    ap.add_argument("--experts", type=int, default=4, help="MoE-LPR experts per layer (incl. the frozen FFN)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--block-len", type=int, default=128)
    ap.add_argument("--micro-batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="markdown file to write the result line to")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = LayerMoEConfig(model=a.model, corpus=a.corpus, new=a.new, old=a.old, block_len=a.block_len,
                         micro_batch_size=a.micro_batch_size, max_train_tokens_per_lang=200_000,
                         stage1={"steps": a.steps, "warmup_ratio": 0.0}, stage2={"steps": 0}, replay_share=0.0,
                         evaluate=False)
    work = Path(tempfile.mkdtemp(prefix="expansion-speed-"))
    langs = list(dict.fromkeys(read_input(resolve_model_path(cfg.model)).known_langs + cfg.old + cfg.new))
    run = RecipeRun(one_system_recipe(cfg, "layermoe", langs), work / "run")
    run.setup()
    base = run.base()
    n_layers = base.config.num_hidden_layers
    data = build_data(run, cfg, cfg.old)
    sim_blocks = run.blocks(cfg.new + cfg.old, "train", max_tokens_per_lang=cfg.similarity_tokens_per_lang)
    S = measure_similarity(base, sim_blocks, cfg, cfg.old)["S"]
    budget = (a.experts - 1) * n_layers
    _, alloc = solve_delta(S, budget)
    plans = {"layermoe": dict(enumerate(alloc)), "moe_lpr": dict.fromkeys(range(n_layers), a.experts - 1)}
    print(f"similarity {[round(s, 4) for s in S]}; new experts per layer: layermoe {alloc}, "
          f"moe_lpr {[a.experts - 1] * n_layers} (total {budget} each)")
    speeds: dict[str, list[float]] = {k: [] for k in plans}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.runs):
            order = list(plans) if r % 2 == 0 else list(reversed(plans))
            for name in order:
                tps = one_run(cfg, plans[name], run, data, Path(tmp) / f"{name}-{r}")
                speeds[name].append(tps)
                print(f"run {r} {name}: {tps:,.0f} tokens/s", flush=True)
    med = {k: statistics.median(v) for k, v in speeds.items()}
    ratio = med["layermoe"] / med["moe_lpr"]
    line = (f"stage-1 tokens/s, median of {a.runs} runs x {a.steps} steps ({a.micro_batch_size}x{a.block_len} tokens "
            f"per step, {a.threads} threads, {platform.machine()}): LayerMoE {med['layermoe']:,.0f} "
            f"(experts per layer {[x + 1 for x in alloc]}) vs MoE-LPR {med['moe_lpr']:,.0f} "
            f"({[a.experts] * n_layers}), equal total; ratio **{ratio:.2f}x** (target >= 0.8x). Per run: "
            f"LayerMoE {[round(x) for x in speeds['layermoe']]}, MoE-LPR {[round(x) for x in speeds['moe_lpr']]}; "
            f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(line)
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        head = ("# Expansion training speed: LayerMoE vs MoE-LPR\n\nReproduce with:\n\n    python "
                f"benchmarks/expansion_speed.py --model {a.model} --steps {a.steps} --runs {a.runs} --threads "
                f"{a.threads} --experts {a.experts} --out {a.out}\n\n")
        note = ("\nOn a shared, loaded CPU the per-run numbers vary by tens of percent; runs alternate between the two "
                "systems so the noise hits both alike. The MoE block picks its dispatch per layer (a layer with more "
                "than 4 experts and small groups uses grouped_mm on CPU), so uneven per-layer counts run the same "
                "code paths as uniform ones.\n")
        out.write_text(head + line + "\n" + note, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
