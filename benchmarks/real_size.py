"""Wall time and peak resident memory of each langmoe command on a real-shaped model (issue 20's 362M table).

    flock /work/runs/heavy.lock python benchmarks/real_size.py --work /work/runs/size/rs --label after
        [--shape qwen2-362m] [--rows upcycle,eval,...] [--src OTHER/src] [--results benchmarks/results/real_size]

The model is generated on the fly (`langmoe.models.real_shapes`: Qwen2.5-0.5B's body with the built-in 4096-token
vocabulary, random weights, saved in bfloat16) by a separate process. Each command runs alone in a fresh
`python -m langmoe` process, one after the other; its wall time and peak resident set (the kernel's `ru_maxrss` of
that process) are recorded, and bytes per parameter = peak resident / the base model's parameters. This script
imports neither torch nor the model, only `langmoe.io` (stdlib): a child's `ru_maxrss` starts at its parent's
resident size at exec, so the parent must stay small. `--src` runs the commands from another source tree (e.g. `git archive` of an older
commit) so "before" and "after" use the same model and arguments.

The results JSON keeps one entry per `--label` (rerunning some rows under a label replaces just those rows); the
markdown is rewritten from all of them, followed by `<results>.notes.md` (the reading, written by hand) if present.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from langmoe.io import write_json, write_text  # noqa: E402 - stdlib only: this process stays small

# layers of the shapes in langmoe.models.real_shapes (not imported here: see the docstring)
LAYERS = {"qwen2-362m": 24, "qwen2-30m": 18, "qwen2-tiny": 4}


def _layers(n: int) -> str:
    """Five MoE layers spread over the depth (0,6,12,18,23 for 24 layers, as the issue)."""
    return ",".join(str(i) for i in sorted({0, n // 4, n // 2, 3 * n // 4, n - 1}))


# name -> (argv after `langmoe`, the note of the table). {model} {work} {layers} are filled in.
ROWS: dict[str, tuple[list[str], str]] = {
    "upcycle": (["upcycle", "--model", "{model}", "--layers", "{layers}", "--experts", "4", "--top-k", "2",
                 "--out", "{work}/upcycled"], ""),
    "eval": (["eval", "--model", "{model}", "--langs", "en", "de", "--max-chars", "3000"],
             "default dtype"),
    "eval-bf16": (["eval", "--model", "{model}", "--langs", "en", "de", "--max-chars", "3000", "--no-unigram",
                   "--dtype", "bfloat16"], "computed in bf16"),
    "deviation": (["deviation", "--model", "{model}", "--langs", "en", "de", "fr", "--steps", "2",
                   "--micro-batch-size", "2", "--grad-accum", "4", "--block-len", "64", "--no-stability", "--out",
                   "{work}/deviation"], "the default probe; grad-accum 4 (the old default): the issue's tokens"),
    "expand": (["expand", "--method", "layermoe", "--model", "{model}", "--new", "el,hu", "--old", "en,de",
                "--stage1-steps", "2", "--stage2-steps", "2", "--micro-batch-size", "2", "--block-len", "64",
                "--no-eval", "--out", "{work}/expanded"], "2+2 steps, no before/after eval"),
    "train": (["train", "--model", "{model}", "--langs", "en", "de", "--steps", "2", "--batch-size", "2",
               "--block-len", "64", "--save-every", "0", "--out", "{work}/trained"], "2 steps, fp32"),
    "train-bf16-ckpt": (["train", "--model", "{model}", "--langs", "en", "de", "--steps", "2", "--batch-size", "2",
                         "--block-len", "64", "--save-every", "0", "--dtype", "bfloat16",
                         "--gradient-checkpointing", "--out", "{work}/trained-bf16"],
                        "2 steps, bf16 weights, gradient checkpointing"),
    "adapt": (["adapt", "--model", "{work}/upcycled", "--child", "de", "--parent", "en", "--langs", "en", "fr",
               "--mode", "aeft", "--steps", "2", "--batch-size", "2", "--block-len", "64",
               "--tokens-per-lang", "2000", "--eval-chars", "2000", "--out", "{work}/adapted"], "2 steps"),
}
ISSUE_ROWS = ["upcycle", "eval", "deviation", "expand", "train", "adapt"]


def run_one(argv: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Run `python -m langmoe argv` alone; wall seconds and peak resident bytes of that process."""
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.Popen([sys.executable, "-m", "langmoe", *argv], stdout=f, stderr=subprocess.STDOUT,
                                env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        raise SystemExit(f"`langmoe {shlex.join(argv)}` failed (exit {proc.returncode}): {' | '.join(tail)}")
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {"wall_s": round(wall, 1), "peak_rss_bytes": int(usage.ru_maxrss) * scale}


_GENERATE = """
import pathlib, sys, torch, transformers
from langmoe.models.real_shapes import write_real_shaped_model
if not (pathlib.Path(sys.argv[2]) / "config.json").is_file():
    write_real_shaped_model(sys.argv[1], sys.argv[2], dtype=torch.bfloat16)
print(torch.__version__, transformers.__version__)
"""


def generate_model(shape: str, out: Path) -> dict[str, str]:
    """The bf16 folder of `shape` (written by a child process, with this checkout's langmoe); library versions."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", _GENERATE, shape, str(out)], env=env, capture_output=True,
                         text=True, check=True)
    torch_v, tf_v = run.stdout.split()[-2:]
    return {"torch": torch_v, "transformers": tf_v}


def count_parameters(folder: Path) -> int:
    """Parameters stored in a folder's safetensors files (read from their JSON headers)."""
    total = 0
    for f in folder.glob("*.safetensors"):
        with open(f, "rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return total


def measure(shape: str, rows: list[str], work: Path, src: str | None, threads: int) -> dict:
    model = work / f"{shape}-bf16"
    versions = generate_model(shape, model)
    params = count_parameters(model)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "MPLBACKEND": "Agg", "PYTHONPATH": str(Path(src).resolve()) if src else str(ROOT / "src")}
    fill = {"model": str(model), "work": str(work), "layers": _layers(LAYERS[shape])}
    out: dict = {"shape": shape, "parameters": params, "rows": {}, "versions": versions}
    for name in rows:
        argv = [a.format(**fill) for a in ROWS[name][0]]
        argv += ["--threads", str(threads)]
        if "--out" in argv:  # a fresh output folder for every measurement
            shutil.rmtree(argv[argv.index("--out") + 1], ignore_errors=True)
        res = run_one(argv, env, work / f"{name}.log")
        res["bytes_per_param"] = round(res["peak_rss_bytes"] / params, 1)
        reported = _reported_peak(work / f"{name}.log")
        if reported is not None:  # the command's own last line (commands with the precision options)
            res["reported_peak_gb"] = reported
        res["command"] = "langmoe " + shlex.join(a.replace(str(work), "WORK") for a in argv)
        res["note"] = ROWS[name][1]
        out["rows"][name] = res
        print(f"{name:16s} {res['wall_s']:7.1f} s  {res['peak_rss_bytes'] / 1e9:6.2f} GB  "
              f"{res['bytes_per_param']:5.1f} B/param", flush=True)
    return out


def _reported_peak(log: Path) -> float | None:
    for line in reversed(log.read_text(encoding="utf-8", errors="replace").splitlines()):
        if line.startswith("peak memory: ") and "GB resident" in line:
            return float(line.split()[2])
    return None


def markdown(results: dict) -> str:
    """One table per label: "before" first, then "after", then the others in the order they were recorded."""
    lines = ["# Commands on a real-shaped model: wall time and peak resident memory", "",
             "Written by `benchmarks/real_size.py` (see its docstring); model generated on the fly, random weights, "
             "saved in bfloat16, the built-in tokenizer. Peak resident = the kernel's `ru_maxrss` of the command's "
             "process; bytes/param = peak resident / the base model's parameters. One command at a time, "
             "`--threads` as given; the 2-core machine was shared with other jobs, so walls are noisy (memory is "
             "not).", ""]
    order = sorted(results, key=lambda label: {"before": 0, "after": 1}.get(label, 2))
    for label in order:
        entry = results[label]
        env = entry.get("environment", {})
        lines += [f"## {label}", "",
                  f"{entry['shape']} ({entry['parameters'] / 1e6:.0f}M parameters), source {entry.get('source', '?')}, "
                  f"{env.get('threads', '?')} threads, torch {env.get('torch', '?')}, "
                  f"transformers {env.get('transformers', '?')}, {env.get('date', '')}", "",
                  "| command | wall | peak resident | bytes/param | the command's own figure | note |",
                  "|---|---|---|---|---|---|"]
        for name, r in entry["rows"].items():
            own = f"{r['reported_peak_gb']:.2f} GB" if "reported_peak_gb" in r else "-"
            lines.append(f"| `{name}` | {r['wall_s']:.1f} s | {r['peak_rss_bytes'] / 1e9:.2f} GB | "
                         f"{r['bytes_per_param']:.1f} | {own} | {r['note']} |")
        lines += ["", "<details><summary>commands</summary>", ""]
        lines += [f"- `{name}`: `{r['command']}`" for name, r in entry["rows"].items()]
        lines += ["", "</details>", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="qwen2-362m")
    ap.add_argument("--rows", default=",".join(ISSUE_ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    ap.add_argument("--work", default=None, help="scratch folder (the model and the outputs)")
    ap.add_argument("--label", default=None, help="name of this measurement (e.g. before, after)")
    ap.add_argument("--src", default=None, help="run the commands from this source tree instead of ours")
    ap.add_argument("--source-name", default=None, help="what --src is (a commit), written in the table")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "real_size"),
                    help="results path without suffix (.json and .md are written)")
    ap.add_argument("--render", action="store_true", help="only rewrite the markdown from the results JSON (+ notes)")
    a = ap.parse_args(argv)
    res_json, res_md = Path(a.results).with_suffix(".json"), Path(a.results).with_suffix(".md")
    notes = Path(a.results).with_name(Path(a.results).name + ".notes.md")  # the hand-written reading, kept
    if a.render:
        extra = "\n" + notes.read_text(encoding="utf-8") if notes.is_file() else ""
        write_text(res_md, markdown(json.loads(res_json.read_text(encoding="utf-8"))) + extra)
        return 0
    if not a.work or not a.label:
        ap.error("--work and --label are needed to measure")
    rows = [r.strip() for r in a.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}: choose from {', '.join(ROWS)}")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    entry = measure(a.shape, rows, work, a.src, a.threads)
    entry["source"] = a.source_name or (a.src or "this checkout")
    entry["environment"] = {"threads": a.threads, **entry.pop("versions"), "python": platform.python_version(),
                            "date": time.strftime("%Y-%m-%d")}
    results = json.loads(res_json.read_text(encoding="utf-8")) if res_json.is_file() else {}
    if a.label in results and results[a.label].get("shape") == entry["shape"]:  # a subset of rows rerun
        entry["rows"] = {**results[a.label]["rows"], **entry["rows"]}
    results[a.label] = entry
    write_json(res_json, results)
    extra = "\n" + notes.read_text(encoding="utf-8") if notes.is_file() else ""
    write_text(res_md, markdown(results) + extra)
    print(f"wrote {res_json} and {res_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
