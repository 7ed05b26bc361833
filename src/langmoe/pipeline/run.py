"""`run_recipe`: every system of a recipe, stage by stage, cached and resumable, into one run folder.

Run folder (what `langmoe.report` reads)::

    config.yaml                resolved recipe
    deviation.json groups.json layers.json     DMoE analysis (A-C)
    eval/<system>.json         per-language scores, mean, params, tokens seen ("dmoe_hard": DMoE, hard routing)
    routing.json               learned-routing accuracy per MoE layer and top-1 counts per language
    new_language.json          new-language expansion (G), when the recipe has one
    summary.json               one row per system: mean ppl / bpb, params total/active, tokens seen, budget
    stages/<name>/             work folders (checkpoints, models) and `stage.json` records

Every system trains on the same packed blocks with the same micro-batch size and block length for the same number
of optimizer steps in total (`Recipe.budget_steps`), so the token budgets are equal by construction; the summary
records the tokens each system actually saw.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from langmoe.config import Recipe, parse_recipe
from langmoe.errors import LangmoeError
from langmoe.io import read_json, write_json, write_yaml
from langmoe.pipeline.runner import StageRunner, atomic_dir

SUMMARY_NOTE = ("all systems trained for the same number of optimizer steps with the same micro-batch size and "
                "block length: equal token budget")


class RecipeRun:
    """State shared by the stages of one run (base model, tokenizer, corpus, packed blocks)."""

    def __init__(self, recipe: Recipe | Mapping[str, Any], run_dir: str | Path,
                 fail_at: Mapping[str, int] | None = None, log: Callable[[str], None] | None = None):
        self.recipe = parse_recipe(dict(recipe) if isinstance(recipe, Mapping) else recipe)
        self.run_dir = Path(run_dir)
        self.fail_at = dict(fail_at or {})
        self.log = log or (lambda _m: None)
        self.runner = StageRunner(self.run_dir, log=self.log)
        self._base = None
        self._blocks = None
        self._eval_blocks = None
        self.summary_rows: dict[str, dict[str, Any]] = {}

    # ---- shared inputs -------------------------------------------------------------------------------------

    def setup(self) -> None:
        from langmoe.data.corpus import open_corpus
        from langmoe.models.base import load_tokenizer, resolve_model_path

        r = self.recipe
        torch.set_num_threads(r.threads)
        self.model_path = resolve_model_path(r.model)
        self.tokenizer = load_tokenizer(self.model_path)
        self._check_model_fits()
        self.corpus = open_corpus(r.corpus)
        have = set(self.corpus.languages())
        wanted = list(r.languages) + ([r.new_language.lang] if r.new_language else [])
        missing = [x for x in wanted if x not in have]
        if missing:
            raise LangmoeError(f"languages {', '.join(missing)} are not in corpus {r.corpus!r}: "
                               f"choose from {', '.join(sorted(have))}")
        write_yaml(self.run_dir / "config.yaml", r)
        from langmoe.data.corpus import corpus_fingerprint

        self.input_key = {"model": str(self.model_path), "model_sha": _folder_fingerprint(self.model_path),
                          "corpus": r.corpus, "corpus_sha": corpus_fingerprint(self.corpus, wanted),
                          "languages": r.languages, "data": r.data.model_dump(),
                          "seed": r.seed}

    def base(self):
        """A fresh fp32 copy of the dense base (each system starts from it)."""
        from langmoe.models.moe_io import load_model_any

        torch.manual_seed(self.recipe.seed)
        model, _ = load_model_any(self.model_path, dtype=torch.float32)  # langmoe's one loader
        model.train()
        return model

    def blocks(self, langs: list[str] | None = None, split: str = "train"):
        from langmoe.data.packing import check_block_len, pack_corpus

        r = self.recipe
        langs = langs or r.languages
        cfg = self._model_config()
        check_block_len(cfg, r.data.block_len)
        return pack_corpus(self.corpus, self.tokenizer, langs, split, r.data.block_len,
                           max_tokens_per_lang=(r.data.max_train_tokens_per_lang if split == "train"
                                                else r.eval.routing_tokens_per_lang),
                           cache_dir=self.run_dir / "cache")

    def _check_model_fits(self) -> None:
        """Fail before any work on a recipe the model cannot take (block/window length, tokenizer size)."""
        from langmoe.data.packing import check_block_len

        r, cfg = self.recipe, self._model_config()
        check_block_len(cfg, r.data.block_len)
        max_pos = getattr(cfg, "max_position_embeddings", None)
        if isinstance(max_pos, int) and r.eval.window > max_pos:
            raise LangmoeError(f"recipe: eval.window {r.eval.window} exceeds the model's max positions {max_pos}: "
                               f"set eval.window <= {max_pos}")
        vocab = getattr(cfg, "vocab_size", None)
        if isinstance(vocab, int) and len(self.tokenizer) > vocab:
            raise LangmoeError(f"the tokenizer in {self.model_path} has {len(self.tokenizer)} tokens but the model's "
                               f"vocab_size is {vocab}: use the tokenizer the model was trained with")

    def _model_config(self):
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(str(self.model_path))

    def train_cfg(self, optim, offset: int = 0, steps: int | None = None) -> dict[str, Any]:
        return self.recipe.train_config(optim, seed_offset=offset, steps=steps)

    # ---- evaluation ------------------------------------------------------------------------------------------

    def evaluate(self, model, system: str, params: Mapping[str, int], tokens_seen: int,
                 forward_context=None, group_of: Mapping[str, int] | None = None,
                 langs: list[str] | None = None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Per-language scores of `model`, written to `eval/<system>.json`, and its summary row."""
        from langmoe.eval.perplexity import evaluate_languages

        e = self.recipe.eval
        langs = langs or self.recipe.languages
        scores = evaluate_languages(model, self.tokenizer, self.corpus, langs, split=e.split, window=e.window,
                                    stride=e.stride, max_chars_per_lang=e.max_chars_per_lang,
                                    forward_context=forward_context, batch_size=e.batch_size,
                                    group_of=dict(group_of) if group_of else None)
        per_lang = {k: v.model_dump() for k, v in scores.items()}
        result = {
            "system": system,
            "langs": per_lang,
            "mean": mean_metrics(per_lang),
            "params": dict(params),
            "tokens_seen": int(tokens_seen),
            "budget_tokens": self.recipe.budget_tokens if system != "base" else 0,
            "eval": e.model_dump(),
            **(dict(extra) if extra else {}),
        }
        write_json(self.run_dir / "eval" / f"{system}.json", result)
        return result

    # ---- training stages -------------------------------------------------------------------------------------

    def train_stage(self, name: str, config: dict[str, Any], deps: list[str], load: Callable[[], Any],
                    train_fn: Callable[[Any, Path, int | None], Any], save: Callable[[Any, Path], None]
                    ) -> dict[str, Any]:
        """A cached training stage: load the input model, train (resuming from checkpoints), save atomically."""

        def fn(d: Path) -> dict[str, Any]:
            model = load()
            res = train_fn(model, d / "train", self.fail_at.get(name))
            with atomic_dir(d / "model") as tmp:
                save(model, tmp)
            shutil.rmtree(d / "train" / "checkpoints", ignore_errors=True)  # the model is saved; free the disk
            return {"tokens_seen": int(res.tokens_seen), "final_step": int(res.final_step),
                    "last_loss": res.losses[-1] if res.losses else None, "elapsed_s": res.elapsed_s,
                    "tokens_per_s": res.tokens_per_s}

        return self.runner.run(name, config, fn, deps=deps)


# ---- model folders ---------------------------------------------------------------------------------------------


def save_dense(model, tokenizer) -> Callable[[Any, Path], None]:
    def save(m, dest: Path) -> None:
        m.save_pretrained(str(dest))
        tokenizer.save_pretrained(str(dest))

    del model
    return save


def load_dense(path: Path):
    from langmoe.models.moe_io import load_model_any

    return load_model_any(path, dtype=torch.float32)[0]  # langmoe's one loader


def dense_params(model) -> dict[str, int]:
    n = sum(p.numel() for p in model.parameters())
    return {"total": n, "active": n}


def mean_metrics(per_lang: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Unweighted means over languages of ppl and bits per byte, plus the geometric-mean ppl."""
    ppl = [float(v["ppl"]) for v in per_lang.values()]
    bpb = [float(v["bits_per_byte"]) for v in per_lang.values()]
    return {"ppl": sum(ppl) / len(ppl), "bits_per_byte": sum(bpb) / len(bpb),
            "geo_ppl": math.exp(sum(math.log(p) for p in ppl) / len(ppl))}


def _folder_fingerprint(path: Path) -> str:
    """Cheap identity of a model folder: names, sizes and mtimes of its files."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(Path(path).rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(path)}|{st.st_size}|{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def run_recipe(recipe: Recipe | Mapping[str, Any], run_dir: str | Path, fail_at: Mapping[str, int] | None = None,
               log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every system of `recipe` into `run_dir` and return the summary (also in `summary.json`).

    `fail_at={"<stage name>": k}` raises `InjectedFault` inside that training stage before step k+1 (tests).
    """
    from langmoe.pipeline import systems

    run = RecipeRun(recipe, run_dir, fail_at=fail_at, log=log)
    run.setup()
    r = run.recipe
    rows: dict[str, dict[str, Any]] = {}
    for system in r.systems:
        rows.update(getattr(systems, f"run_{system}")(run))
    summary = {
        "note": SUMMARY_NOTE,
        "budget_steps": r.budget_steps,
        "budget_tokens": r.budget_tokens,
        "languages": r.languages,
        "systems": rows,
    }
    nl = run.run_dir / "new_language.json"
    if nl.is_file():
        summary["new_language"] = read_json(nl)
    write_json(run.run_dir / "summary.json", summary)
    return summary


def summary_row(result: Mapping[str, Any]) -> dict[str, Any]:
    return {"mean_ppl": result["mean"]["ppl"], "mean_bpb": result["mean"]["bits_per_byte"],
            "ppl": {k: v["ppl"] for k, v in result["langs"].items()},
            "bpb": {k: v["bits_per_byte"] for k, v in result["langs"].items()},
            "params_total": result["params"]["total"], "params_active": result["params"]["active"],
            "tokens_seen": result["tokens_seen"]}
