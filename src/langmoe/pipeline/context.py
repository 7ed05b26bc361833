"""`RecipeRun`: the state every stage of one run shares (recipe, base model, tokenizer, corpus, packed blocks, the
stage runner), plus the cached training stage and the per-system evaluation that write the run folder.

Methods receive a `RecipeRun` and their validated settings; they never need to know which other methods run.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from langmoe.config import Recipe, parse_recipe
from langmoe.data.corpus import (
    COUNT_LIMIT_BYTES,
    choose_languages,
    corpus_fingerprint,
    corpus_sources,
    open_corpus,
)
from langmoe.data.packing import check_block_len, open_token_store, pack_corpus, train_tokens_needed
from langmoe.diagnostics import eval_warnings
from langmoe.errors import LangmoeError
from langmoe.eval.perplexity import evaluate_languages
from langmoe.io import read_json, write_json, write_yaml
from langmoe.models.base import load_tokenizer, resolve_model_path
from langmoe.models.moe_io import load_model_any
from langmoe.pipeline.runner import StageRunner, atomic_dir
from langmoe.pipeline.summary import mean_metrics
from langmoe.precision import load_dtype
from langmoe.registry import get_provider
from langmoe.train.trainer import find_checkpoints


class RecipeRun:
    """State shared by the stages of one run (base model, tokenizer, corpus, packed blocks)."""

    def __init__(self, recipe: Recipe | Mapping[str, Any], run_dir: str | Path,
                 fail_at: Mapping[str, int] | None = None, log: Callable[[str], None] | None = None):
        self.recipe = parse_recipe(dict(recipe) if isinstance(recipe, Mapping) else recipe)
        self.run_dir = Path(run_dir)
        self.fail_at = dict(fail_at or {})
        self.log = log or (lambda _m: None)
        self.runner = StageRunner(self.run_dir, log=self.log)
        self.summary_extra: dict[str, Any] = {}  # top-level summary.json entries a method adds (e.g. new_language)
        self._announced: set[str] = set()

    def announce(self, key: str, message: str) -> None:
        """Log `message` once per run (the groups and MoE layers, as soon as the analysis has them)."""
        if key not in self._announced:
            self._announced.add(key)
            self.log(message)

    # ---- shared inputs -------------------------------------------------------------------------------------

    def setup(self, extra_languages: list[str] | None = None) -> None:
        """Load tokenizer and corpus, check the recipe fits the model, write config.yaml, fix the input key."""

        r = self.recipe
        torch.set_num_threads(r.threads)
        self.model_path = resolve_model_path(r.model)
        self.tokenizer = load_tokenizer(self.model_path)
        self._check_model_fits()
        self.corpus = open_corpus(r.corpus)
        wanted = list(r.languages) + [x for x in (extra_languages or []) if x not in r.languages]
        choose_languages(self.corpus, wanted, label=f"corpus {r.corpus!r}")
        write_yaml(self.run_dir / "config.yaml", r)
        corpus_sha = corpus_fingerprint(self.corpus, wanted)
        self._write_corpus_sources(wanted, corpus_sha)
        self.input_key = {"model": str(self.model_path), "model_sha": folder_fingerprint(self.model_path),
                          "corpus": r.corpus, "corpus_sha": corpus_sha,
                          "languages": r.languages, "data": r.data.model_dump(), "seed": r.seed}
        # the run's token store: `--token-store` when given, else `tokens/` in the run folder (kept and reused)
        self.store = open_token_store(None, self.tokenizer, cache_dir=self.run_dir)

    def _write_corpus_sources(self, langs: list[str], corpus_sha: str) -> None:
        """`corpus_sources.json`: which source(s) gave each language its documents, and how many characters per
        split. Counting streams folder sources once (those over COUNT_LIMIT_BYTES, or streamed datasets, are not
        counted: their size on disk is recorded), so a rerun on the same corpus keeps the file it wrote."""

        path = self.run_dir / "corpus_sources.json"
        if path.is_file():
            try:
                old = read_json(path)
            except ValueError:  # damaged: written again below
                old = {}
            if old.get("corpus_sha") == corpus_sha and list(old.get("languages", {})) == langs:
                return
        write_json(path, {"corpus": self.recipe.corpus, "corpus_sha": corpus_sha,
                          "languages": corpus_sources(self.corpus, langs, count_limit=COUNT_LIMIT_BYTES)})

    def base(self):
        """A fresh copy of the dense base (each system starts from it), fp32 unless the command's --dtype says."""

        torch.manual_seed(self.recipe.seed)
        model, _ = load_model_any(self.model_path, dtype=load_dtype(torch.float32))  # langmoe's one loader
        model.train()
        return model

    def blocks(self, langs: list[str] | None = None, split: str = "train", max_tokens_per_lang: int | None = 0):
        """Packed blocks of `langs` (default: the recipe's languages) from the run's token store. Tokens per
        language: the recipe's train cap, or the whole budget when that is null (train split), or its
        routing-statistics size (held-out splits), unless `max_tokens_per_lang` is given (None: all)."""
        r = self.recipe
        check_block_len(self._model_config(), r.data.block_len)
        if max_tokens_per_lang == 0:
            max_tokens_per_lang = (train_tokens_needed(r.data.max_train_tokens_per_lang, r.budget_tokens)
                                   if split == "train" else r.eval.routing_tokens_per_lang)
        return pack_corpus(self.corpus, self.tokenizer, langs or r.languages, split, r.data.block_len,
                           max_tokens_per_lang=max_tokens_per_lang, token_store=self.store)

    def provide(self, artifact: str) -> Any:
        """A shared artifact some method registered (e.g. "language_groups"), computed as cached stages."""

        return get_provider(artifact)(self)

    def _check_model_fits(self) -> None:
        """Fail before any work on a recipe the model cannot take (block/window length, tokenizer size)."""
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
                 langs: list[str] | None = None, extra: Mapping[str, Any] | None = None,
                 trained: bool = True) -> dict[str, Any]:
        """Per-language scores of `model`, written to `eval/<system>.json` (`trained=False`: budget 0)."""

        e = self.recipe.eval
        langs = langs or self.recipe.languages
        scores = evaluate_languages(model, self.tokenizer, self.corpus, langs, split=e.split, window=e.window,
                                    stride=e.stride, max_chars_per_lang=e.max_chars_per_lang,
                                    forward_context=forward_context, batch_size=e.batch_size,
                                    per_document=e.per_document,
                                    group_of=dict(group_of) if group_of else None, progress="bar",
                                    token_store=self.store)
        per_lang = {k: v.model_dump() for k, v in scores.items()}
        result = {
            "system": system,
            "langs": per_lang,
            "mean": mean_metrics(per_lang),
            "params": dict(params),
            "tokens_seen": int(tokens_seen),
            "budget_tokens": self.recipe.budget_tokens if trained else 0,
            "eval": e.model_dump(),
            **(dict(extra) if extra else {}),
        }

        result["warnings"] = eval_warnings({"langs": per_lang, "split": e.split})  # also printed by run/demo
        write_json(self.run_dir / "eval" / f"{system}.json", result)
        return result

    # ---- training stages -------------------------------------------------------------------------------------

    def train_stage(self, name: str, config: dict[str, Any], deps: list[str], load: Callable[[], Any],
                    train_fn: Callable[[Any, Path, int | None], Any], save: Callable[[Any, Path], None]
                    ) -> dict[str, Any]:
        """A cached training stage: load the input model, train (resuming from checkpoints), save atomically.

        `fail_at[name]` (tests) makes the stage crash before that step; the rerun resumes from its checkpoints."""

        def fn(d: Path) -> dict[str, Any]:

            model = load()
            ckpts = find_checkpoints(d / "train")
            if ckpts:
                self.log(f"stage {name}: resuming from step {ckpts[-1][0]}")
            res = train_fn(model, d / "train", self.fail_at.get(name))
            start = int(getattr(res, "start_step", 0) or 0)
            if start and (not ckpts or start != ckpts[-1][0]):  # fell back to an older checkpoint
                self.log(f"stage {name}: resumed from step {start}")
            with atomic_dir(d / "model") as tmp:
                save(model, tmp)
            shutil.rmtree(d / "train" / "checkpoints", ignore_errors=True)  # the model is saved; free the disk
            return {"tokens_seen": int(res.tokens_seen), "final_step": int(res.final_step),
                    "resumed_from_step": start,
                    "last_loss": res.losses[-1] if res.losses else None, "elapsed_s": res.elapsed_s,
                    "tokens_per_s": res.tokens_per_s}

        return self.runner.run(name, config, fn, deps=deps)

    def model_dir(self, stage: str) -> Path:
        """The saved model of a finished training stage."""
        return self.runner.stage_dir(stage) / "model"


def folder_fingerprint(path: Path) -> str:
    """Cheap identity of a model folder: names, sizes and mtimes of its files."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(Path(path).rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(path)}|{st.st_size}|{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]
