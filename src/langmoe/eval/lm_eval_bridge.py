"""Run lm-evaluation-harness on a model loaded the langmoe way (dense, native MoE or exported folder).

Why not `lm_eval --model hf --model_args pretrained=FOLDER`: lm-eval would build the model with a plain
`from_pretrained`, which does not know langmoe's MoE layers. Here the model comes from
`langmoe.models.moe_io.load_model_any` and is handed to lm-eval's `HFLM` as an object, then
`lm_eval.simple_evaluate` runs the tasks (offline: langmoe's own tasks are local JSON files, see
`langmoe.eval.lm_eval_tasks`). lm-eval is an optional extra: `pip install 'langmoe[eval]'`.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from langmoe.errors import LangmoeError
from langmoe.models.moe_io import load_model_any

__all__ = ["import_lm_eval", "langmoe_task_langs", "run_lm_eval", "summarize"]

INSTALL_HINT = "lm-evaluation-harness is not installed: install it with `pip install 'langmoe[eval]'`"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_OWN = re.compile(r"^langmoe_(bpb|cont)(?:_(.+))?$")


def import_lm_eval():
    """(lm_eval, HFLM, TaskManager), or one LangmoeError line saying how to install it."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise LangmoeError(f"{INSTALL_HINT} ({e.name or e})") from None
    return lm_eval, HFLM, TaskManager


def langmoe_task_langs(tasks: list[str]) -> tuple[bool, list[str] | None]:
    """(any langmoe task requested, languages they need; None = all languages, for the group names)."""
    own, langs = False, set()
    for t in tasks:
        m = _OWN.match(t)
        if not m:
            continue
        own = True
        if m.group(2) is None:
            return True, None
        langs.add(m.group(2))
    return own, sorted(langs) if own else []


def _device(device: str | None) -> str:
    """The torch device to run on (default cuda if there is one), refused in one line when torch does not know it."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except RuntimeError:
        raise LangmoeError(f"--device {device!r} is not a torch device: use cpu, cuda, cuda:1, mps ...") from None
    return device


def run_lm_eval(
    model_path: str | Path,
    tasks: list[str],
    include_path: list[str | Path] | None = None,
    limit: int | float | None = None,
    batch_size: int = 1,
    dtype: str | None = None,
    device: str | None = None,
    num_fewshot: int | None = None,
    corpus: str = "builtin",
    langs: list[str] | None = None,
    bootstrap_iters: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate `model_path` on lm-eval `tasks`; returns {"results": {task: {metric: value}}, ...}.

    Task names `langmoe_bpb_<lang>` / `langmoe_cont_<lang>` (and the groups `langmoe_bpb`, `langmoe_cont`) are
    written on the fly from `corpus`'s test split into a temporary folder unless an `include_path` folder already
    holds them (`langmoe lm-eval-tasks`). bootstrap_iters=0 skips lm-eval's bootstrap standard errors (slow).
    """
    if not tasks:
        raise LangmoeError("give at least one task (e.g. --tasks langmoe_bpb_en)")
    dev = _device(device)
    own, need = langmoe_task_langs(tasks)
    if langs and need is not None:  # no group among the tasks: --langs would be ignored without a word
        raise LangmoeError(f"--langs {' '.join(langs)} chooses the languages of the task groups langmoe_bpb / "
                           "langmoe_cont, and --tasks names none: drop --langs, or name tasks like langmoe_bpb_de")
    lm_eval, HFLM, TaskManager = import_lm_eval()  # noqa: N806 - lm-eval's class names

    paths = [Path(p) for p in include_path or []]
    for p in paths:
        if not p.is_dir():
            raise LangmoeError(f"--include-path {p} is not a folder: give the folder holding the task YAML files")
    with ExitStack() as stack:
        if own and not any(any(p.glob(f"{t}.yaml")) for p in paths for t in tasks):
            from langmoe.eval.lm_eval_tasks import write_tasks

            tmp = Path(tempfile.mkdtemp(prefix="langmoe-lm-eval-tasks-"))
            stack.callback(shutil.rmtree, tmp, True)
            write_tasks(tmp, corpus=corpus, langs=need if need is not None else langs)
            paths.append(tmp)
        manager = None
        if paths:  # lm-eval's own ~15k task configs take half a minute to index: skip them when not needed
            manager = TaskManager(include_path=[str(p) for p in paths], include_defaults=False)
            if any(t not in manager.all_tasks for t in tasks):
                manager = None
        if manager is None:
            manager = TaskManager(include_path=[str(p) for p in paths] or None)
        unknown = [t for t in tasks if t not in manager.all_tasks]
        if unknown:
            raise LangmoeError(f"unknown lm-eval task(s) {', '.join(unknown)}: check the names (`lm-eval ls tasks`) "
                               "or give the folder with their YAML files as --include-path")
        model, tokenizer = load_model_any(model_path, dtype=_DTYPES[dtype] if dtype else None)
        if tokenizer is None:
            raise LangmoeError(f"{model_path} has no tokenizer: save one there with tokenizer.save_pretrained")
        model.to(dev).eval()
        lm = HFLM(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=batch_size, device=dev)
        try:
            out = lm_eval.simple_evaluate(
                model=lm, tasks=list(tasks), task_manager=manager, limit=limit, num_fewshot=num_fewshot,
                bootstrap_iters=bootstrap_iters, log_samples=False, random_seed=seed, numpy_random_seed=seed,
                torch_random_seed=seed, fewshot_random_seed=seed,
            )
        except (ConnectionError, OSError) as e:
            raise LangmoeError(f"lm-eval could not load a task's data ({type(e).__name__}: "
                               f"{' '.join(str(e).split())[:200]}): the task needs its dataset locally "
                               "(see docs/lm-eval.md)") from e
    return summarize(out, model_path, tasks, limit)


def summarize(out: dict[str, Any] | None, model_path, tasks: list[str], limit) -> dict[str, Any]:
    """The numbers of lm-eval's result dict as plain floats (metric names without lm-eval's ',none' filter tag)."""
    if not out:
        raise LangmoeError("lm-eval returned no results")
    results: dict[str, dict[str, float]] = {}
    for task, metrics in out.get("results", {}).items():
        row = {}
        for key, value in metrics.items():
            if key in ("alias", "sample_len") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            name, _, filt = key.partition(",")
            if filt not in ("", "none"):
                name = f"{name},{filt}"
            row[name] = float(value) if math.isfinite(float(value)) else None
        results[task] = row
    import lm_eval

    return {
        "model": str(model_path),
        "tasks": list(tasks),
        "limit": limit,
        "results": results,
        "n_samples": {t: v.get("effective", v.get("original")) for t, v in out.get("n-samples", {}).items()},
        "versions": {t: v for t, v in out.get("versions", {}).items()},
        "lm_eval_version": getattr(lm_eval, "__version__", None),
    }
